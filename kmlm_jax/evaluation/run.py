"""`kmlm-jax eval`: evaluation runs over one checkpoint and an optional baseline.

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

Writes OUT/results.json, OUT/results.md (one table per task: languages as
columns, avg_tgt over the non-English languages, delta against the
baseline) and OUT/plots/*.png (per-language bars; training loss per stream
from each checkpoint's TensorBoard logs when its workdir has them).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from kmlm_jax.evaluation.finetune import FinetuneConfig
from kmlm_jax.kg.corpus_dir import CorpusDir

TASKS = ("xlr", "probe", "probe_rank", "ner", "relx", "lp")


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


def _read_jsonl(path: Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def _vocab_for(config: EvalConfig, ckpt: Path):
  from kmlm_jax.text.vocab import load_vocab
  path = config.vocab or str(Path(ckpt) / "tokenizer" / "tokenizer.json")
  if not Path(path).exists():
    raise ValueError(f"{ckpt}: no tokenizer/tokenizer.json; set the eval config's vocab")
  return load_vocab(path)


def evaluate_checkpoint(config: EvalConfig, ckpt: Path, tasks: Sequence[str],
                        devices=None) -> dict:
  from flax import nnx

  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.evaluation import probing, xlr
  from kmlm_jax.models.task_heads import TaskModel
  model_config, flat, _ = mc.load_model_checkpoint(ckpt)
  vocab = _vocab_for(config, ckpt)
  corpus = CorpusDir(config.corpus_dir)
  out = {}
  if "xlr" in tasks:
    items = [i for s in ("train", "dev", "test")
             for i in _read_jsonl(corpus.eval_path("xlr", f"{s}.jsonl"))]

    def model_fn(seed):
      encoder = mc.build_model(model_config, flat)
      return TaskModel(encoder, "multiple_choice", rngs=nnx.Rngs(seed))

    t = time.perf_counter()
    out["xlr"] = xlr.run(model_fn, vocab, items, config.finetune, devices)
    out["xlr"]["seconds"] = time.perf_counter() - t
  if "probe" in tasks:
    model = mc.build_model(model_config.replace(dropout_rate=0.0, attention_dropout_rate=0.0),
                           flat)
    graphdef, state = nnx.split(model, nnx.Param)
    probes = _read_jsonl(corpus.eval_path("probes.jsonl"))[:config.max_probes]
    t = time.perf_counter()
    cloze = probing.ClozeModel(graphdef, nnx.to_pure_dict(state), vocab)
    out["probe"] = probing.accuracy(cloze, probes, config.probe_max_tokens, config.probe_method)
    out["probe"]["seconds"] = time.perf_counter() - t
  if "probe_rank" in tasks:
    from kmlm_jax.evaluation import zero_shot
    model = mc.build_model(model_config.replace(dropout_rate=0.0, attention_dropout_rate=0.0),
                           flat)
    graphdef, state = nnx.split(model, nnx.Param)
    scorer = zero_shot.Scorer(graphdef, nnx.to_pure_dict(state), vocab, length=48, batch=128)
    probes = _read_jsonl(corpus.eval_path("probes.jsonl"))[:config.max_probes]
    out["probe_rank"] = {"by_language": zero_shot.probe_accuracy(
        scorer, corpus.graph(), probes, max_distractors=10)}
    out["probe_rank"]["by_language"].pop("avg", None)
  if "ner" in tasks or "relx" in tasks:
    out.update(_classification(config, tasks, model_config, flat, vocab, devices))
  if "lp" in tasks:
    from kmlm_jax.evaluation import link_prediction as lp
    from kmlm_jax.evaluation import lp_eval
    model = mc.build_model(model_config.replace(dropout_rate=0.0, attention_dropout_rate=0.0),
                           flat)
    ranks = {l: lp_eval.prixlm_ranks(model, vocab, corpus.path, l,
                                     num_beams=config.lp_beams)[0]
             for l in corpus.languages}
    out["lp"] = {"by_language": {l: lp.metrics(r) for l, r in ranks.items()}}
  return out


def _classification(config: EvalConfig, tasks, model_config, flat, vocab, devices) -> dict:
  from flax import nnx

  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.evaluation import classification, readers
  from kmlm_jax.models.task_heads import TaskModel
  out = {}
  if "ner" in tasks:
    if not (config.ner_train and config.ner_dev and config.ner_test):
      raise ValueError("task ner needs ner_train, ner_dev and ner_test files in the eval config")
    read = lambda p: readers.read_conll(p, scheme=config.ner_scheme, to_iob2=True)
    train, dev = read(config.ner_train), read(config.ner_dev)
    tests = {lang: read(p).sentences for lang, p in config.ner_test}
    labels = sorted({t for d in [train, dev] for s in d.sentences for t in s.tags} |
                    {t for s in tests.values() for x in s for t in x.tags},
                    key=lambda t: (t != "O", t))
    model_fn = lambda seed: TaskModel(mc.build_model(model_config, flat), "token", len(labels),
                                      rngs=nnx.Rngs(seed))
    out["ner"] = classification.run_ner(model_fn, vocab, train.sentences, dev.sentences, tests,
                                        labels, config.finetune, devices)
  if "relx" in tasks:
    if not (config.relx_train and config.relx_dev and config.relx_test):
      raise ValueError("task relx needs relx_train, relx_dev and relx_test files in the eval config")
    train, dev = readers.read_relx(config.relx_train), readers.read_relx(config.relx_dev)
    tests = {lang: readers.read_relx(p) for lang, p in config.relx_test}
    labels = sorted({x.relation for d in [train, dev, *tests.values()] for x in d})
    model_fn = lambda seed: TaskModel(mc.build_model(model_config, flat), "sequence", len(labels),
                                      rngs=nnx.Rngs(seed))
    out["relx"] = classification.run_relx(model_fn, vocab, train, dev, tests, labels,
                                          config.finetune, devices)
  return out


def _scores(result: dict, task: str) -> dict[str, float]:
  if task == "xlr":
    return result["xlr"]["accuracy"]
  if task in ("probe", "probe_rank"):
    return result[task]["by_language"]
  if task in ("ner", "relx"):
    return result[task]["score"]
  return {l: m["mrr"] for l, m in result["lp"]["by_language"].items()}


def run(config: EvalConfig, ckpt: Path | str, out: Path | str, *, baseline: Path | str | None = None,
        tasks: Sequence[str] | None = None, names: tuple[str, str] | None = None) -> dict:
  """Evaluates `ckpt` (and `baseline`), writes the report; returns the results."""
  from kmlm_jax.evaluation import report
  tasks = tuple(tasks or config.tasks)
  unknown = [t for t in tasks if t not in TASKS]
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
  out = Path(out)
  (out / "plots").mkdir(parents=True, exist_ok=True)
  runs = {(names or (Path(ckpt).parent.name, ""))[0] or str(ckpt): Path(ckpt)}
  if baseline:
    runs[(names or ("", Path(baseline).parent.name))[1] or str(baseline)] = Path(baseline)
  results = {name: evaluate_checkpoint(config, path, tasks) for name, path in runs.items()}
  base_name = list(runs)[1] if baseline else None
  tables = []
  titles = {"xlr": "XLR accuracy (%), fine-tuned on English",
            "probe": f"cloze probing accuracy (%), {config.probe_method} decoding",
            "probe_rank": "cloze probing, acc@1 among 11 candidates (%)",
            "ner": "NER entity F1 (%), fine-tuned on English",
            "relx": "RELX macro F1 (%), fine-tuned on English",
            "lp": "link prediction MRR (%), filtered"}
  for task in tasks:
    scores = {name: _scores(r, task) for name, r in results.items()}
    langs = sorted({l for s in scores.values() for l in s}, key=lambda l: (l != "en", l))
    spread = ({name: r[task]["std"] for name, r in results.items()}
              if task in ("xlr", "ner", "relx") else None)
    tables.append(f"### {titles[task]}\n\n" + report.task_table(task, scores, langs, base_name,
                                                                spread))
    report.bar_plot(out / "plots" / f"{task}.png", titles[task], scores, langs,
                    chance={"xlr": 1 / 6, "probe_rank": 1 / 11}.get(task))
  tb = {name: path.parent / "tb" for name, path in runs.items() if (path.parent / "tb").exists()}
  drawn = report.curves_plot(out / "plots" / "training_curves.png", tb) if tb else []
  (out / "results.md").write_text("\n".join(tables))
  (out / "results.json").write_text(json.dumps(
      {"checkpoints": {n: str(p) for n, p in runs.items()}, "tasks": list(tasks),
       "results": results, "training_curves": drawn}, indent=1, default=_jsonable))
  return results


def _jsonable(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(type(value))
