"""Periodic validation: names, ranking, the per-stream metrics against the training loss,
TensorBoard / summary.json / W&B records, and the knowledge metrics on the sample."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset
from kmlm_jax.errors import InputError
from kmlm_jax.evaluation.report import read_tensorboard
from kmlm_jax.training import loop, validation
from kmlm_jax.training.data import SyntheticBatches
from tests.training.test_loop import _config
from tests.training.test_metrics_writer import offline_wandb, wandb_history  # noqa: F401


def _with_data(config, **data):
  return dataclasses.replace(config, data=dataclasses.replace(config.data, **data))


def test_metric_names_follow_the_mixture():
  names = validation.metric_names(_config(eval_every=2))
  assert names == ["validation/loss", "validation/mlm/loss", "validation/mlm/accuracy",
                   "validation/knowledge/loss", "validation/knowledge/accuracy",
                   "validation/reasoning/loss", "validation/reasoning/accuracy"]
  kmlm = validation.metric_names(_with_data(_config(), mixture="kmlm_mix", rate_reasoning=0.0))
  assert "validation/reasoning/loss" not in kmlm and "validation/knowledge/loss" in kmlm
  assert kmlm[-2:] == ["validation/xlr/accuracy", "validation/probe_rank/accuracy"]
  prix = validation.metric_names(_with_data(_config(), mixture="prixlm"))
  assert prix == ["validation/loss", "validation/causal/loss", "validation/causal/accuracy",
                  "validation/lp/hits@1"]
  none = _with_data(_config(eval_knowledge_examples=0), mixture="cc100")
  assert validation.metric_names(none)[-1] == "validation/mlm/accuracy"


def test_round_robin_takes_languages_in_turn():
  items = [{"lang": l, "i": i} for i, l in enumerate("aaabbc")]
  assert [x["i"] for x in validation.round_robin(items, 5)] == [0, 3, 5, 1, 4]
  assert len(validation.round_robin(items, 100)) == 6


def test_best_tracker_ranks_by_the_metric():
  loss = validation.BestTracker("validation/loss")
  assert [loss.update(s, {"validation/loss": v}) for s, v in
          [(2, 5.0), (4, 3.0), (6, 3.0), (8, math.nan), (10, 2.5)]] == \
      [True, True, False, False, True]  # a tie keeps the first step; NaN is never best
  assert (loss.step, loss.value, loss.since_best) == (10, 2.5, 0)
  acc = validation.BestTracker("validation/xlr/accuracy")
  assert [acc.update(s, {"validation/xlr/accuracy": v}) for s, v in
          [(2, 0.2), (4, 0.1), (6, 0.3)]] == [True, False, True]
  resumed = validation.BestTracker.from_meta("validation/loss", {"best": loss.meta()})
  assert resumed == loss
  assert validation.BestTracker.from_meta("validation/mlm/loss", {"best": loss.meta()}) == \
      validation.BestTracker("validation/mlm/loss")  # another metric starts again
  with pytest.raises(InputError, match="train.keep_best: validation at step 12 produced no"):
    loss.update(12, {"validation/mlm/loss": 1.0})
  assert validation.rank_key("validation/loss", 1.0, 4) > validation.rank_key(
      "validation/loss", 2.0, 2)


def test_stream_metrics_match_the_training_loss():
  """On one batch, validation/loss is the training loss of that batch (trainer.evaluate)."""
  config = _config(alpha=0.7)
  trainer = loop.pretraining_trainer(config)
  params = trainer.init_state().params
  batch = next(SyntheticBatches(config.data, config.model.vocab_size, start=5))
  reference = jax.device_get(trainer.evaluate(params, batch))
  out = validation.stream_metrics(trainer, params, [batch], config.train.alpha)
  np.testing.assert_allclose(out["validation/loss"], float(reference["loss"]), rtol=1e-5)
  for i, name in enumerate(("mlm", "knowledge", "reasoning")):
    np.testing.assert_allclose(out[f"validation/{name}/loss"], reference["term_loss"][i],
                               rtol=1e-6)
  # Two batches: each stream's mean over all of their loss positions.
  other = next(SyntheticBatches(config.data, config.model.vocab_size, start=6))
  second = jax.device_get(trainer.evaluate(params, other))
  both = validation.stream_metrics(trainer, params, [batch, other], config.train.alpha)
  counts = reference["count"] + second["count"]
  mlm = (reference["term_loss"][0] * reference["count"][0]
         + second["term_loss"][0] * second["count"][0]) / counts[0]
  np.testing.assert_allclose(both["validation/mlm/loss"], mlm, rtol=1e-5)


@pytest.mark.slow
def test_validation_metrics_in_tensorboard_summary_and_wandb(tmp_path, offline_wandb):  # noqa
  config = _config(steps=4, eval_every=2, eval_batches=2, checkpoint_every=100,
                   wandb_project="kmlm-test")
  summary = loop.train(config, tmp_path / "run", progress=False)
  records = summary["validation"]
  assert [r["step"] for r in records] == [2, 4]
  names = set(validation.metric_names(config))
  assert all(set(r) == names | {"step"} for r in records)
  tb = read_tensorboard(tmp_path / "run" / "tb")
  for name in names:
    np.testing.assert_allclose([v for _, v in sorted(tb[name])], [r[name] for r in records],
                               rtol=1e-6, err_msg=name)
    assert [s for s, _ in sorted(tb[name])] == [2, 4]
  assert records[1]["validation/loss"] < records[0]["validation/loss"]  # it learns
  rows = [r for r in wandb_history(offline_wandb) if "validation/loss" in r]
  assert [(r["_step"], r["validation/loss"]) for r in rows] == \
      [(r["step"], pytest.approx(r["validation/loss"])) for r in records]
  assert {r["_step"] for r in wandb_history(offline_wandb) if "loss" in r} == {1, 2, 3, 4}


KMLM_MODEL = preset("tiny", vocab_size=250002, hidden_size=32, num_heads=2, intermediate_size=64,
                    max_position_embeddings=130)


@pytest.mark.slow
def test_knowledge_metrics_on_the_sample_equal_the_evaluation_code(tmp_path):
  """A tiny KMLM run validates on the embedded sample's XLR dev items and probes; the
  figures equal `zero_shot` run afresh on the exported (unsharded) parameters."""
  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.evaluation import readers, zero_shot
  from kmlm_jax.kg.corpus_dir import CorpusDir
  from kmlm_jax.text.vocab import default_vocab_path, load_vocab
  n = 12
  config = ExperimentConfig(
      "kmlm", KMLM_MODEL,
      DataConfig(mixture="kmlm_mix", seq_length=128, max_predictions=20, batch_size=8,
                 block_examples=64),
      TrainConfig(steps=2, warmup_steps=1, learning_rate=1e-3, checkpoint_every=100,
                  log_every=1, eval_every=2, eval_batches=1, eval_knowledge_examples=n,
                  async_checkpointing=False),
      MeshConfig(shape=(-1, 1, 1)))
  summary = loop.train(config, tmp_path, progress=False)
  got = summary["validation"][-1]
  assert got["step"] == 2
  for name in ("validation/xlr/accuracy", "validation/probe_rank/accuracy"):
    assert 0.0 <= got[name] <= 1.0, (name, got)

  model_config, params, _ = mc.load_model_checkpoint(tmp_path / "model")
  model = mc.build_model(model_config, params)
  from flax import nnx
  graphdef, state = nnx.split(model, nnx.Param)
  vocab = load_vocab(default_vocab_path())
  corpus = CorpusDir.sample()
  graph = corpus.graph()
  xlr = validation.round_robin(
      [i.to_dict() for i in readers.read_xlr(corpus.eval_path("xlr", "dev.jsonl"),
                                             num_choices=None)], n)
  assert {i["split"] for i in xlr} == {"dev"} and len({i["lang"] for i in xlr}) > 1
  probes = validation.round_robin(
      [q.to_dict() for q in readers.read_probes(corpus.eval_path("probes.jsonl"))], n)
  scorer = zero_shot.Scorer(graphdef, nnx.to_pure_dict(state), vocab, length=128,
                            batch=validation.SCORER_BATCH)
  expected_xlr = zero_shot.xlr_accuracy(scorer, graph, xlr)["avg"]
  ranker = zero_shot.Scorer(graphdef, nnx.to_pure_dict(state), vocab, length=48,
                            batch=validation.SCORER_BATCH)
  expected_probe = zero_shot.probe_accuracy(ranker, graph, probes, max_distractors=10)["avg"]
  assert got["validation/xlr/accuracy"] == pytest.approx(expected_xlr, abs=1e-9)
  assert got["validation/probe_rank/accuracy"] == pytest.approx(expected_probe, abs=1e-9)


@pytest.mark.slow
def test_prixlm_hits_at_1_on_sharded_params_equals_the_beam_search(tmp_path):
  """Prix-LM runs validate link prediction on the first queries of each language; with the
  parameters sharded on the 8-device mesh, Hits@1 equals the beam search on host ones."""
  from flax import nnx

  from kmlm_jax.assets import real_xlmr_tokenizer_json
  from kmlm_jax.evaluation import link_prediction as lp
  from kmlm_jax.evaluation import lp_eval
  from kmlm_jax.kg.corpus_dir import CorpusDir
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json, load_vocab
  from kmlm_jax.training.trainer import to_host
  corpus = CorpusDir.sample()
  tok = tmp_path / "tokenizer.json"
  add_tokens_to_tokenizer_json(real_xlmr_tokenizer_json(), prixlm.added_tokens(corpus.languages),
                               tok)
  vocab = load_vocab(str(tok))
  config = ExperimentConfig(
      "prix", KMLM_MODEL.replace(vocab_size=vocab.vocab_size),
      DataConfig(mixture="prixlm", vocab=str(tok), seq_length=128, max_predictions=20,
                 batch_size=8),
      TrainConfig(steps=1, eval_every=1, eval_knowledge_examples=3), MeshConfig(shape=(-1, 1, 1)))
  assert validation.knowledge_tasks(config) == ("lp",)
  trainer = loop.pretraining_trainer(config)
  params = trainer.init_state().params
  assert len(jax.tree.leaves(params)[0].sharding.device_set) == 8
  knowledge = validation.KnowledgeMetrics.build(config, trainer.task.graphdef)
  assert {l: len(s.queries) for l, s in knowledge.lp_splits.items()} == \
      dict.fromkeys(corpus.languages[:3], 1)
  got = knowledge(params)["validation/lp/hits@1"]
  model = nnx.merge(trainer.task.graphdef, to_host(params))
  expected = np.mean([lp.metrics(lp_eval.prixlm_ranks(
      model, vocab, corpus.path, lang, num_beams=validation.LP_BEAMS, batch_size=1,
      split=split)[0])["hits@1"] for lang, split in knowledge.lp_splits.items()])
  assert got == expected


def test_missing_evaluation_file_fails_before_compiling(tmp_path):
  import shutil

  from kmlm_jax.experiment import ConfigError, preflight
  from kmlm_jax.kg.corpus_dir import CorpusDir
  sample = CorpusDir.sample()
  shutil.copy(sample.path / "manifest.json", tmp_path / "manifest.json")
  config = _with_data(_config(eval_every=2), mixture="kmlm_mix", corpus_dir=str(tmp_path))
  config = dataclasses.replace(config, model=KMLM_MODEL)
  with pytest.raises(ConfigError, match=r"train.eval_knowledge_examples: \S+eval/xlr/dev.jsonl "
                     r"and 2 more files missing"):
    preflight(config)
  preflight(dataclasses.replace(config, train=dataclasses.replace(
      config.train, eval_knowledge_examples=0)))
