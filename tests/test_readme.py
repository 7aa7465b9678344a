"""The README's commands work as written.

The "Quick start" block runs line by line, in order, in a fresh directory on one CPU
device (as on a fresh clone), with smaller step counts; every other `kmlm-jax` command
of the README must parse (flags, `--tasks` names, config files that exist).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kmlm_jax.cli import build_parser
from kmlm_jax.evaluation.run import TASKS
from kmlm_jax.experiment import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV_ASSIGNMENT = re.compile(r"^[A-Z_]+=")


def bash_commands(text: str):
  """(env, argv) of every command line of every ```bash block of `text`."""
  for block in re.findall(r"```bash\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      words = shlex.split(line, comments=True)
      env = {}
      while words and ENV_ASSIGNMENT.match(words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
      if words:
        yield env, words


def quick_start() -> list[tuple[dict, list[str]]]:
  section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  return list(bash_commands(section))


def smaller(argv: list[str]) -> list[str]:
  """The same command with fewer steps: train.steps=K -> K // 100 (at least 2), and two
  steps per adapter stage."""
  out = [re.sub(r"^train\.steps=(\d+)$", lambda m: f"train.steps={max(2, int(m[1]) // 100)}",
                a) for a in argv]
  if argv[:2] == ["kmlm-jax", "adapters"] and argv[2] == "train":
    out += ["train.adapter_steps=2", "train.fusion_steps=2"]
  return out


def test_quick_start_lists_every_subcommand():
  used = {argv[1] for _, argv in quick_start() if argv[0] == "kmlm-jax"}
  assert used == set(build_parser()._subparsers._group_actions[0].choices) - {"data"}


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path):
  (tmp_path / "configs").symlink_to(ROOT / "configs")
  base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  for env, argv in quick_start():
    assert argv[0] == "kmlm-jax", argv
    run = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", *smaller(argv)[1:]],
                         cwd=tmp_path, env={**base, **env}, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, (argv, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, (argv, run.stderr[-3000:])


def _other_commands():
  quick = {tuple(argv) for _, argv in quick_start()}
  text = re.sub(r"\[[^\]\n]*\]", "", README)  # optional flags shown as [--flag]
  return [argv for _, argv in bash_commands(text)
          if argv[0] == "kmlm-jax" and tuple(argv) not in quick]


@pytest.mark.parametrize("argv", _other_commands(), ids=lambda a: " ".join(a[1:4]))
def test_other_commands_parse(argv):
  args = build_parser().parse_args(argv[1:])
  if getattr(args, "config", None):
    assert (ROOT / args.config).is_file(), args.config
  if args.command in ("train", "data"):
    load_config(ROOT / args.config, args.overrides)  # every key=value names a real field


def test_task_lists_name_real_tasks():
  lists = re.findall(r"--tasks ([a-z_,]+)", README)
  assert lists and all(set(names.split(",")) <= set(TASKS) for names in lists), lists
