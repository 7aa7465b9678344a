"""Task heads and fine-tuning: chance on uninformative input, learning, 8 devices = 1."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from kmlm_jax.config import MeshConfig, preset
from kmlm_jax.evaluation import finetune, probing, report, xlr
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.models.task_heads import TaskModel

CONFIG = preset("tiny", vocab_size=200, max_position_embeddings=40, num_layers=1)
FT = finetune.FinetuneConfig(steps=60, batch_size=32, learning_rate=3e-3, warmup_steps=5,
                             eval_every=20, seeds=(0,), max_length=16,
                             mesh=MeshConfig(shape=(1, 1, 1)))


class Vocab:
  bos_id, pad_id, eos_id, mask_id = 0, 1, 2, 199

  def encode(self, text):
    return [5 + (sum(map(ord, w)) % 190) for w in text.split()]


def _items(n, informative, seed):
  """XLR-shaped items: 6 choices; informative items mark the answer with the word 'yes'."""
  rng = np.random.default_rng(seed)
  words = [f"w{i}" for i in range(40)]
  items = []
  for i in range(n):
    label = int(rng.integers(6))
    choices = [" ".join(rng.choice(words, 2)) for _ in range(6)]
    if informative:
      choices[label] = "yes " + choices[label]
    items.append({"split": "train", "lang": "en", "context": [" ".join(rng.choice(words, 3))],
                  "question": "which?", "choices": choices, "label": label})
  return items


def _model_fn(seed):
  return TaskModel(Encoder(CONFIG, rngs=nnx.Rngs(seed)), "multiple_choice", rngs=nnx.Rngs(seed))


def _split(items, split):
  return [dict(i, split=split) for i in items]


@pytest.mark.slow
def test_uninformative_input_scores_chance():
  """Random labels the input says nothing about: a leak of the label into the
  input (e.g. the answer always first) would beat 1/6 here."""
  train = _split(_items(200, False, 0), "train")
  dev = _split(_items(100, False, 1), "dev")
  test = [dict(i, lang=l) for l in ("en", "xx") for i in _split(_items(1200, False, 2), "test")]
  out = xlr.run(_model_fn, Vocab(), train + dev + test, FT, jax.devices()[:1])
  acc = np.mean(list(out["accuracy"].values()))
  assert abs(acc - 1 / 6) < 0.03, out["accuracy"]


@pytest.mark.slow
def test_informative_input_is_learned():
  """The answer carries a marker word: a head that misaligns labels and choices cannot learn it."""
  train = _split(_items(300, True, 0), "train")
  dev = _split(_items(60, True, 1), "dev")
  test = _split(_items(120, True, 2), "test")
  config = dataclasses.replace(FT, steps=120)
  out = xlr.run(_model_fn, Vocab(), train + dev + test, config, jax.devices()[:1])
  assert out["accuracy"]["en"] > 0.8, out


@pytest.mark.slow
def test_finetune_on_8_devices_equals_one():
  items = [xlr.encode_item(Vocab(), i, 16) for i in _items(64, True, 3)]
  results = []
  for devices, shape in ((jax.devices()[:1], (1, 1, 1)), (jax.devices(), (8, 1, 1)),
                         (jax.devices(), (2, 2, 2))):
    config = dataclasses.replace(FT, mesh=MeshConfig(shape=shape))
    tuner = finetune.make_finetuner(_model_fn(0), config, devices)
    losses = [float(tuner.step(b)["loss"])
              for b in finetune.batches(items, 32, 0, tuple(items[0]))]
    scores = tuner.predict(next(finetune.batches(items, 32, None, tuple(items[0]))))
    results.append((np.array(losses), scores))
  # Choice scores are compared up to a shift per item: the softmax over choices
  # ignores it, so the output bias has no true gradient and Adam turns its float
  # noise into updates that differ between meshes.
  centred = lambda s: s - s.mean(-1, keepdims=True)
  for losses, scores in results[1:]:
    np.testing.assert_allclose(losses, results[0][0], rtol=1e-5)
    np.testing.assert_allclose(centred(scores), centred(results[0][1]), atol=1e-5)


@pytest.mark.slow
def test_token_and_sequence_heads_shapes():
  ids = np.ones((3, 10), np.int32)
  mask = np.ones((3, 10), np.int32)
  token = TaskModel(Encoder(CONFIG, rngs=nnx.Rngs(0)), "token", 9, rngs=nnx.Rngs(0))
  seq = TaskModel(Encoder(CONFIG, rngs=nnx.Rngs(0)), "sequence", 4, rngs=nnx.Rngs(0))
  assert token(ids, mask).shape == (3, 10, 9) and seq(ids, mask).shape == (3, 4)
  loss, acc = finetune.loss_and_accuracy(np.zeros((2, 3, 5)), np.array([[1, -100, 2],
                                                                          [-100, -100, 0]]))
  assert np.isclose(float(loss), np.log(5)) and float(acc) == pytest.approx(1 / 3)


def test_probe_decoding_recovers_a_memorised_answer():
  """A model whose MLM head always predicts token 7 answers every one-token object 7."""
  model = Encoder(CONFIG.replace(dropout_rate=0.0), rngs=nnx.Rngs(0))
  model.mlm_head.bias.value = model.mlm_head.bias.value.at[7].set(100.0)
  graphdef, state = nnx.split(model, nnx.Param)

  class V(Vocab):
    def encode(self, text):
      return [7] if text == "seven" else super().encode(text)

  cloze = probing.ClozeModel(graphdef, nnx.to_pure_dict(state), V(), length=16, batch=4)
  probes = [{"lang": "en", "relation": "P1", "template": "[X] is [Y] .", "subject": "a b",
             "object": "seven"}, {"lang": "fr", "relation": "P1", "template": "[X] est [Y] .",
                                  "subject": "c", "object": "w1 w2"}]
  for method in ("independent", "confidence"):
    out = probing.accuracy(cloze, probes, max_tokens=3, method=method)
    assert out["by_language"] == {"en": 1.0, "fr": 0.0}


def test_report_table_and_plots(tmp_path):
  scores = {"KMLM": {"en": 0.5, "fr": 0.3, "de": 0.5}, "base": {"en": 0.5, "fr": 0.2, "de": 0.2}}
  table = report.task_table("xlr", scores, ["en", "fr", "de"], baseline="base")
  assert "| KMLM | 50.0 | 30.0 | 50.0 | 40.0 | +20.0 |" in table
  assert "| base | 50.0 | 20.0 | 20.0 | 20.0 | 0 |" in table
  report.bar_plot(tmp_path / "x.png", "t", scores, ["en", "fr", "de"], chance=1 / 6)
  assert (tmp_path / "x.png").stat().st_size > 1000


FIXTURES = __import__("pathlib").Path(__file__).parents[1] / "fixtures" / "eval_datasets"


def test_span_f1_and_macro_f1_by_hand():
  from kmlm_jax.evaluation import classification as cl
  assert cl.spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == {("PER", 0, 2), ("LOC", 3, 4),
                                                                  ("ORG", 4, 5)}
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
  pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # PER span cut short: wrong
  # tp = 2 (LOC, ORG), fp = 1 (PER 0-1), fn = 1 (PER 0-2): F1 = 4 / 6.
  assert cl.span_f1(gold, pred) == pytest.approx(2 / 3)
  assert cl.macro_f1(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3) == \
      pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))


@pytest.mark.slow
def test_ner_and_relx_runs_on_reader_fixtures():
  from kmlm_jax.evaluation import classification as cl
  from kmlm_jax.evaluation import readers
  en = readers.read_conll(FIXTURES / "ner" / "panx_en.tsv")
  fr = readers.read_conll(FIXTURES / "ner" / "wikiann_fr.txt")
  labels = sorted({t for d in (en, fr) for s in d.sentences for t in s.tags},
                  key=lambda t: (t != "O", t))
  config = dataclasses.replace(FT, steps=4, eval_every=2, batch_size=4, seeds=(0, 1))
  model_fn = lambda seed: TaskModel(Encoder(CONFIG, rngs=nnx.Rngs(seed)), "token", len(labels),
                                    rngs=nnx.Rngs(seed))
  out = cl.run_ner(model_fn, Vocab(), en.sentences, en.sentences, {"fr": fr.sentences}, labels,
                   config, jax.devices()[:1])
  assert set(out["score"]) == {"fr"} and 0 <= out["score"]["fr"] <= 1
  assert len(out["per_seed"]["fr"]) == 2
  de = readers.read_relx(FIXTURES / "relx" / "relx_de.tsv")
  en_relx = readers.read_relx(FIXTURES / "relx" / "RELX_en.txt")
  relations = sorted({x.relation for x in de + en_relx})
  encoded = cl.encode_relx(Vocab(), de[0], {r: i for i, r in enumerate(relations)}, 32)
  assert encoded["labels"] == relations.index(de[0].relation)
  model_fn = lambda seed: TaskModel(Encoder(CONFIG, rngs=nnx.Rngs(seed)), "sequence",
                                    len(relations), rngs=nnx.Rngs(seed))
  out = cl.run_relx(model_fn, Vocab(), en_relx, en_relx, {"de": de}, relations, config,
                    jax.devices()[:1])
  assert 0 <= out["score"]["de"] <= 1


def test_eval_help_lists_the_real_tasks(capsys):
  from kmlm_jax.cli import main
  from kmlm_jax.evaluation.run import TASKS
  with pytest.raises(SystemExit):
    main(["eval", "--help"])
  help_text = " ".join(capsys.readouterr().out.split())
  assert f"comma-separated subset of {','.join(TASKS)}" in help_text
