"""`kmlm-jax eval`: evaluation runs over one checkpoint and an optional baseline.

A checkpoint is a model checkpoint directory, a training checkpoint
WORKDIR/checkpoints/STEP or a work directory WORKDIR (its newest step); a training
checkpoint's tokenizer is its run's `data.vocab` (`kmlm_jax.training.export`).

Tasks:
  xlr    XLR multiple choice, fine-tuned on English, tested on every language
         (several seeds; mean ± std), from `CORPUS/eval/xlr/*.jsonl`
  probe  X-FACTR-style cloze probing, no fine-tuning, single- and multi-token
         answers (`probing.py`), from `CORPUS/eval/probes.jsonl`
  probe_rank  the same probes as mLAMA-style candidate ranking (gold object
         among 10 objects of the same relation; `zero_shot.py`)
  ner    cross-lingual NER (IOB files the user gives: English train/dev, test per
         language; `classification.py`), entity-level F1
  relx   RELX relation classification (files the user gives), macro F1
  lp     Prix-LM link prediction (needs a Prix-LM checkpoint; `lp_eval.py`)

The originals' released evaluation data replace the corpus files: `lp_splits` (`--lp-splits
DIR`, Prix-LM's `triples.txt`, `entities.txt`, `filtered.txt`, used as given; `lp_langs`
picks languages) and `xlr_release` (`--xlr-release DIR`, KMLM's XLR files in the layout
`kmlm_jax.kg.released` assumes); readers in `kmlm_jax.kg.released`.

Writes OUT/results.json, OUT/results.md (one table per task: languages as
columns, avg_tgt over the non-English languages, delta against the
baseline) and OUT/plots/*.png (per-language bars; training loss per stream
from each checkpoint's TensorBoard logs when its workdir has them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from kmlm_jax.errors import InputError, WriteError
from kmlm_jax.evaluation import progress
from kmlm_jax.evaluation.finetune import FinetuneConfig
from kmlm_jax.evaluation.readers.iob import SCHEMES
from kmlm_jax.evaluation.task_names import FINETUNE_TASKS, TASKS
from kmlm_jax.experiment import ConfigError
from kmlm_jax.kg.corpus_dir import CorpusDir

PROBE_METHODS = ("independent", "confidence")
# Tasks that read the `kmlm-jax kg build` directory `corpus_dir`.
CORPUS_TASKS = ("xlr", "probe", "probe_rank", "lp")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What `kmlm-jax eval` runs; `configs/eval_*.py` return one."""

  corpus_dir: str
  vocab: str | None = None  # default: the checkpoint's tokenizer/tokenizer.json
  tasks: tuple[str, ...] = ("xlr", "probe")
  finetune: FinetuneConfig = FinetuneConfig()
  probe_max_tokens: int = 5
  probe_method: str = "independent"
  max_probes: int | None = None
  lp_beams: int = 50
  # NER / RELX files: English train and dev, and (lang, path) test files.
  ner_train: str | None = None
  ner_dev: str | None = None
  ner_test: tuple[tuple[str, str], ...] = ()
  ner_scheme: str = "iob2"
  relx_train: str | None = None
  relx_dev: str | None = None
  relx_test: tuple[tuple[str, str], ...] = ()
  # The originals' released data instead of corpus_dir's files (`kmlm_jax.kg.released`).
  lp_splits: str | None = None  # Prix-LM's link_prediction folder
  lp_langs: tuple[str, ...] = ()  # its languages to test (empty: every one)
  xlr_release: str | None = None  # KMLM's XLR release (folder or logic.zip)

  def validate(self) -> "EvalConfig":
    """Raises ConfigError naming the field of a value no run can use."""
    if isinstance(self.tasks, str):
      raise ConfigError(f"tasks: expected a tuple of task names, got the string {self.tasks!r}")
    check_tasks(self.tasks)
    if not isinstance(self.finetune, FinetuneConfig):
      raise ConfigError(f"finetune: expected a FinetuneConfig, got {self.finetune!r}")
    self.finetune.validate()
    if self.probe_method not in PROBE_METHODS:
      raise ConfigError(f"probe_method: {self.probe_method!r} is not one of {PROBE_METHODS}")
    if self.ner_scheme not in SCHEMES:
      raise ConfigError(f"ner_scheme: {self.ner_scheme!r} is not one of {SCHEMES}")
    for name in ("probe_max_tokens", "lp_beams", "max_probes"):
      value = getattr(self, name)
      ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
      if not (ok or value is None and name == "max_probes"):
        raise ConfigError(f"{name}: expected an integer of at least 1, got {value!r}")
    for name in ("ner_test", "relx_test"):
      for pair in getattr(self, name):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(x, str) for x in pair)):
          raise ConfigError(f"{name}: expected (lang, path) pairs, got {pair!r}")
    for name in ("lp_splits", "xlr_release"):
      if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
        raise ConfigError(f"{name}: expected a path, got {getattr(self, name)!r}")
    if isinstance(self.lp_langs, str) or not all(isinstance(l, str) for l in self.lp_langs):
      raise ConfigError(f"lp_langs: expected a tuple of language codes, got {self.lp_langs!r}")
    return self


def check_tasks(tasks: Sequence[str], what: str = "tasks") -> tuple[str, ...]:
  unknown = [t for t in tasks if t not in TASKS]
  if unknown:
    raise ConfigError(f"{what}: unknown task(s) {unknown}; known: {', '.join(TASKS)}")
  if not tasks:
    raise ConfigError(f"{what}: no task given; known: {', '.join(TASKS)}")
  return tuple(tasks)


def _vocab_path(config: EvalConfig, ckpt: Path) -> Path:
  if config.vocab:
    if not Path(config.vocab).exists():
      raise ConfigError(f"vocab: {config.vocab}: no such tokenizer file or directory")
    return Path(config.vocab)
  from kmlm_jax import model_checkpoint as mc
  directory = mc.tokenizer_dir_of(ckpt)  # a training checkpoint's: its run's data.vocab
  if directory is None:
    raise ConfigError(f"{ckpt}: no tokenizer in the checkpoint (a model checkpoint's "
                      "tokenizer/, a training checkpoint's WORKDIR/config.json data.vocab); set "
                      "the eval config's vocab")
  # its tokenizer.json, or the folder (transformers reads vocab.txt, sentencepiece files)
  return directory / "tokenizer.json" if (directory / "tokenizer.json").exists() else directory


def _run_of(ckpt: Path | str) -> tuple[str, Path]:
  """(the checkpoint's name in the report, its run's work directory, where tb/ is): a
  model checkpoint WORKDIR/model is named WORKDIR, a training checkpoint WORKDIR@STEP."""
  from kmlm_jax import model_checkpoint as mc
  metadata = mc.read_model_config(ckpt)[1]
  if "training_checkpoint" in metadata:
    workdir = Path(metadata["training_checkpoint"]).parent.parent
    return f"{workdir.name}@{metadata['step']}", workdir
  return Path(ckpt).parent.name or str(ckpt), Path(ckpt).parent


def _read_xlr(config: EvalConfig, corpus: CorpusDir | None) -> list[dict]:
  """Every XLR item as the records `xlr.run` reads (checked per line): the release
  (`xlr_release`) or every split of CORPUS/eval/xlr."""
  from kmlm_jax.evaluation.readers import read_xlr
  if config.xlr_release:
    from kmlm_jax.kg.released import read_xlr_release
    items, where = read_xlr_release(config.xlr_release), f"xlr_release {config.xlr_release}"
    split_where = lambda split: f"{where}: no English (en) {split} items"
  else:
    paths = [corpus.eval_path("xlr", f"{s}.jsonl") for s in ("train", "dev", "test")]
    items = [i.to_dict() for p in paths for i in read_xlr(p, num_choices=None)]
    where = str(corpus.eval_path("xlr"))
    split_where = lambda split: f"{where}/{split}.jsonl: no English (en) items"
  have = {(i["split"], i["lang"]) for i in items}
  for split in ("train", "dev"):
    if (split, "en") not in have:
      raise InputError(f"{split_where(split)}; XLR fine-tunes on English train and dev items")
  counts = {len(i["choices"]) for i in items}
  if len(counts) > 1:
    raise InputError(f"{where}: items have different numbers of choices "
                     f"{sorted(counts)}; XLR needs one")
  return items


def corpus_tasks(config: EvalConfig, tasks: Sequence[str]) -> list[str]:
  """The tasks that read `corpus_dir` (xlr and lp not when their released data is given)."""
  released = {"xlr": config.xlr_release, "lp": config.lp_splits}
  return [t for t in tasks if t in CORPUS_TASKS and not released.get(t)]


def _check_corpus(config: EvalConfig, tasks: Sequence[str]) -> CorpusDir | None:
  if not corpus_tasks(config, tasks):
    return None
  corpus = CorpusDir(config.corpus_dir)
  try:
    corpus.manifest  # noqa: B018  (reads and checks manifest.json)
  except InputError as e:
    raise ConfigError(f"corpus_dir: {e}") from None
  if "probe_rank" in tasks and not corpus.graph_path.is_file():
    raise ConfigError(f"corpus_dir: {corpus.graph_path}: missing (task probe_rank needs the "
                      "knowledge graph)")
  return corpus


def check_inputs(config: EvalConfig, ckpts: Sequence[Path | str],
                 tasks: Sequence[str]) -> None:
  """Checks, before any model is loaded, what a run reads: the tasks, each checkpoint's
  model config and tokenizer, the corpus directory and the NER / RELX files named in the
  config. Raises `InputError` (ConfigError, ConversionError, ReaderError) naming the file."""
  from kmlm_jax import model_checkpoint as mc
  check_tasks(tasks)
  for ckpt in ckpts:
    mc.read_model_config(ckpt)
    _vocab_path(config, Path(ckpt))
  _check_corpus(config, tasks)
  for task in [t for t in ("ner", "relx") if t in tasks]:
    train, dev, test = (getattr(config, f"{task}_{s}") for s in ("train", "dev", "test"))
    if not (train and dev and test):
      raise ConfigError(f"task {task} needs {task}_train, {task}_dev and {task}_test files "
                        "in the eval config")
    for field, path in [(f"{task}_train", train), (f"{task}_dev", dev),
                        *((f"{task}_test[{lang}]", p) for lang, p in test)]:
      if not Path(path).is_file():
        raise ConfigError(f"{field}: {path}: no such file")


def read_task_data(config: EvalConfig, tasks: Sequence[str]) -> dict:
  """The evaluation sets the tasks read, checked record by record (a malformed file raises
  `ReaderError` naming FILE:LINE and the field): "xlr" items, "probes", "ner" / "relx"
  (train, dev, {lang: test}) and "lp" ({lang: `lp_eval.LPSplit`})."""
  from kmlm_jax.evaluation import lp_eval, readers
  corpus = _check_corpus(config, tasks)
  data = {}
  if "xlr" in tasks:
    data["xlr"] = _read_xlr(config, corpus)
  if "probe" in tasks or "probe_rank" in tasks:
    path = corpus.eval_path("probes.jsonl")
    data["probes"] = [q.to_dict() for q in readers.read_probes(path)[:config.max_probes]]
    if not data["probes"]:
      raise InputError(f"{path}: no probes (tasks probe and probe_rank need some)")
  if "ner" in tasks:
    read = lambda p: readers.read_conll(p, scheme=config.ner_scheme, to_iob2=True)
    data["ner"] = (read(config.ner_train), read(config.ner_dev),
                   {lang: read(p).sentences for lang, p in config.ner_test})
  if "relx" in tasks:
    data["relx"] = (readers.read_relx(config.relx_train), readers.read_relx(config.relx_dev),
                    {lang: readers.read_relx(p) for lang, p in config.relx_test})
  if "lp" in tasks and config.lp_splits:
    from kmlm_jax.kg.released import read_prixlm_lp
    data["lp"] = read_prixlm_lp(config.lp_splits, config.lp_langs or None)
  elif "lp" in tasks:
    data["lp"] = {lang: lp_eval.read_split(corpus.path, lang) for lang in corpus.languages}
  return data


def _load_vocab(config: EvalConfig, ckpt: Path):
  from kmlm_jax.text.vocab import load_vocab
  path = _vocab_path(config, ckpt)
  try:
    return path, load_vocab(str(path))
  except InputError as e:
    raise ConfigError(f"{'vocab' if config.vocab else 'checkpoint tokenizer'}: {e}") from None


def check_models(config: EvalConfig, ckpts: Sequence[Path | str], tasks: Sequence[str],
                 data: dict) -> None:
  """Checks each checkpoint's model against its tokenizer and the task data before any
  parameters are loaded (`_check_model`), and that fine-tuning's batch splits over its mesh."""
  for ckpt in ckpts:
    _check_model(config, Path(ckpt), tasks, data)
  if any(t in FINETUNE_TASKS for t in tasks):
    from kmlm_jax.sharding import Partitioner
    try:
      partitioner = Partitioner.from_config(config.finetune.mesh)
    except InputError as e:
      raise ConfigError(f"finetune.mesh: {e}") from None
    partitioner.check_batch(config.finetune.batch_size, "finetune.batch_size")


def _check_model(config: EvalConfig, ckpt: Path, tasks: Sequence[str], data: dict) -> None:
  """The tokenizer's ids fit the model's embeddings; fine-tuning rows, probes and
  link-prediction searches fit its position table. A `ConfigError` names both sides."""
  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.evaluation import lp_eval, probing
  model_config, _ = mc.read_model_config(ckpt)
  model_file = mc.model_config_file(ckpt)
  vocab_path, vocab = _load_vocab(config, ckpt)
  if vocab.vocab_size > model_config.vocab_size:
    raise ConfigError(f"{model_file}: the model has {model_config.vocab_size} token embeddings "
                      f"but the tokenizer {vocab_path} has {vocab.vocab_size} ids; evaluate "
                      "with the tokenizer the model was trained with (the config's vocab)")
  room = model_config.max_length
  if any(t in FINETUNE_TASKS for t in tasks) and config.finetune.max_length > room:
    raise ConfigError(f"finetune.max_length: {config.finetune.max_length} tokens do not fit "
                      f"the {room} positions of {model_file}")
  if "probe" in tasks:
    k = config.probe_max_tokens
    longest = max(probing.row_length(vocab, p, k) for p in data["probes"])
    if longest > min(room, probing.ClozeModel.length):
      raise ConfigError(f"probe_max_tokens: probes with {k} masks need {longest} positions; "
                        f"{model_file} has {room} (at most {probing.ClozeModel.length} are "
                        "used)")
  for split in data.get("lp", {}).values():
    need = lp_eval.encode_split(split, vocab).positions
    if need > room:
      raise ConfigError(f"{split.test_path}: the longest query and entity name need {need} "
                        f"positions; {model_file} has {room}")


def _check_out(out: Path) -> Path:
  """Refuses an --out that is a file or cannot be created, before any model is loaded."""
  if out.exists() and not out.is_dir():
    raise ConfigError(f"--out {out}: exists and is not a directory")
  existing = next(p for p in [out, *out.absolute().parents] if p.exists())
  if not existing.is_dir():
    raise ConfigError(f"--out {out}: {existing} is not a directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise WriteError(f"--out {out}: {existing} is not writable (read-only file system or no "
                     "permission)")
  return out


def evaluate_checkpoint(config: EvalConfig, ckpt: Path, tasks: Sequence[str], data: dict) -> dict:
  """Results of `tasks` on one checkpoint; `data`: `read_task_data`'s, checked by
  `check_models`. Each phase shows a line and, over its loop, a bar on stderr."""
  from flax import nnx

  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.evaluation import classification, probing, xlr
  from kmlm_jax.models.task_heads import TaskModel
  _, vocab = _load_vocab(config, ckpt)  # before the (slower) parameters
  progress.phase(f"loading checkpoint {ckpt}")
  model_config, params, _ = mc.load_model_checkpoint(ckpt)
  corpus = CorpusDir(config.corpus_dir)
  room = model_config.max_length
  # A fresh encoder with a `kind` head for each fine-tuning seed.
  heads = lambda kind, n=1: lambda seed: TaskModel(mc.build_model(model_config, params), kind, n,
                                                   rngs=nnx.Rngs(seed))
  frozen = lambda: mc.build_model(  # no dropout, for the tasks without fine-tuning
      model_config.replace(dropout_rate=0.0, attention_dropout_rate=0.0), params)

  def split_params():
    graphdef, state = nnx.split(frozen(), nnx.Param)
    return graphdef, nnx.to_pure_dict(state)

  out = {}
  if "xlr" in tasks:
    t = time.perf_counter()
    out["xlr"] = xlr.run(heads("multiple_choice"), vocab, data["xlr"], config.finetune)
    out["xlr"]["seconds"] = time.perf_counter() - t
  if "probe" in tasks:
    graphdef, state = split_params()
    t = time.perf_counter()
    out["probe"] = probing.accuracy(probing.ClozeModel(graphdef, state, vocab), data["probes"],
                                    config.probe_max_tokens, config.probe_method)
    out["probe"]["seconds"] = time.perf_counter() - t
  if "probe_rank" in tasks:
    from kmlm_jax.evaluation import zero_shot
    progress.phase(f"probe_rank: {len(data['probes'])} probes among up to 11 candidates")
    scorer = zero_shot.Scorer(*split_params(), vocab, length=min(48, room), batch=128)
    out["probe_rank"] = {"by_language": zero_shot.probe_accuracy(
        scorer, corpus.graph(), data["probes"], max_distractors=10)}
    out["probe_rank"]["by_language"].pop("avg", None)
  if "ner" in tasks:
    train, dev, tests = data["ner"]
    labels = sorted({t for d in [train.sentences, dev.sentences, *tests.values()] for s in d
                     for t in s.tags}, key=lambda t: (t != "O", t))
    out["ner"] = classification.run_ner(heads("token", len(labels)), vocab, train.sentences,
                                        dev.sentences, tests, labels, config.finetune)
  if "relx" in tasks:
    train, dev, tests = data["relx"]
    labels = sorted({x.relation for d in [train, dev, *tests.values()] for x in d})
    out["relx"] = classification.run_relx(heads("sequence", len(labels)), vocab, train, dev,
                                          tests, labels, config.finetune)
  if "lp" in tasks:
    from kmlm_jax.evaluation import link_prediction as lp
    from kmlm_jax.evaluation import lp_eval
    model = frozen()
    queries = sum(len(s.queries) for s in data["lp"].values())
    progress.phase(f"link prediction: {queries} queries in {len(data['lp'])} languages")
    out["lp"] = {"by_language": {
        l: lp.metrics(lp_eval.prixlm_ranks(model, vocab, corpus.path, l, split=split,
                                           num_beams=config.lp_beams)[0])
        for l, split in data["lp"].items()}}
    notes = {l: split.notes for l, split in data["lp"].items() if split.notes}
    if notes:  # the release's repeated entity lines, answers outside the entity list
      out["lp"]["notes"] = notes
  return out


def _scores(result: dict, task: str) -> dict[str, float]:
  if task == "xlr":
    return result["xlr"]["accuracy"]
  if task in ("probe", "probe_rank"):
    return result[task]["by_language"]
  if task in ("ner", "relx"):
    return result[task]["score"]
  return {l: m["mrr"] for l, m in result["lp"]["by_language"].items()}


TITLES = {"xlr": "XLR accuracy (%), fine-tuned on English",
          "probe": "cloze probing accuracy (%), {method} decoding",
          "probe_rank": "cloze probing, acc@1 among 11 candidates (%)",
          "ner": "NER entity F1 (%), fine-tuned on English",
          "relx": "RELX macro F1 (%), fine-tuned on English",
          "lp": "link prediction MRR (%), filtered"}


def run(config: EvalConfig, ckpt: Path | str, out: Path | str, *,
        baseline: Path | str | None = None, tasks: Sequence[str] | None = None) -> dict:
  """Evaluates `ckpt` (and `baseline`), writes the report; returns the results. Every input
  is checked before a model is loaded; nothing is written to `out` before the end."""
  tasks = check_tasks(tuple(tasks or config.tasks), "--tasks" if tasks else "tasks")
  ckpts = [ckpt] + ([baseline] if baseline else [])
  check_inputs(config, ckpts, tasks)
  data = read_task_data(config, tasks)  # a malformed file fails before any model is loaded
  check_models(config, ckpts, tasks, data)
  out = _check_out(Path(out))
  runs = {_run_of(p)[0]: Path(p) for p in ckpts}
  progress.phase(f"evaluating {', '.join(tasks)} on {len(runs)} checkpoint(s)")
  results = {name: evaluate_checkpoint(config, path, tasks, data)
             for name, path in runs.items()}
  progress.phase(f"writing {out}/results.md, results.json and plots/")
  with _report_dir(out) as tmp:
    _write_report(tmp, config, tasks, runs, results, base_name=list(runs)[1] if baseline else None)
  return results


def _write_report(out: Path, config: EvalConfig, tasks, runs: dict, results: dict,
                  base_name: str | None) -> None:
  from kmlm_jax.evaluation import report
  (out / "plots").mkdir()
  tables = []
  for task in tasks:
    title = TITLES[task].format(method=config.probe_method)
    scores = {name: _scores(r, task) for name, r in results.items()}
    langs = sorted({l for s in scores.values() for l in s}, key=lambda l: (l != "en", l))
    spread = ({name: r[task]["std"] for name, r in results.items()}
              if task in FINETUNE_TASKS else None)
    tables.append(f"### {title}\n\n" + report.task_table(task, scores, langs, base_name, spread))
    report.bar_plot(out / "plots" / f"{task}.png", title, scores, langs,
                    chance={"xlr": 1 / 6, "probe_rank": 1 / 11}.get(task))
  tb = {name: _run_of(path)[1] / "tb" for name, path in runs.items()}
  tb = {name: path for name, path in tb.items() if path.exists()}
  drawn = report.curves_plot(out / "plots" / "training_curves.png", tb) if tb else []
  (out / "results.md").write_text("\n".join(tables))
  (out / "results.json").write_text(json.dumps(
      {"checkpoints": {n: str(p) for n, p in runs.items()}, "tasks": list(tasks),
       "results": results, "training_curves": drawn}, indent=1,
      default=lambda value: value.tolist()))  # numpy scalars and arrays


@contextlib.contextmanager
def _report_dir(out: Path):
  """A temporary directory whose files replace those of `out` (results.*, plots/*) when
  the block succeeds; a failure (full disk) leaves `out` as it was and raises `WriteError`."""
  created, tmp, done = not out.exists(), None, False
  try:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".results.tmp-", dir=out))
    yield tmp
    (out / "plots").mkdir(exist_ok=True)
    for path in sorted(tmp.rglob("*")):
      if path.is_file():
        os.replace(path, out / path.relative_to(tmp))
    done = True
  except OSError as e:
    raise WriteError(f"--out {out}: cannot be written ({e.strerror or e})") from None
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
    if created and not done:
      shutil.rmtree(out, ignore_errors=True)
