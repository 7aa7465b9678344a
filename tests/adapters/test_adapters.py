"""Knowledge adapters and AdapterFusion: layers, data, frozen training, retrieval eval, export."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from kmlm_jax.adapters import data as data_lib
from kmlm_jax.adapters import evaluate as eval_lib
from kmlm_jax.adapters import export as export_lib
from kmlm_jax.adapters import train as train_lib
from kmlm_jax.adapters.config import (AdapterDataConfig, AdapterEvalConfig,
                                      AdapterExperimentConfig, AdapterTrainConfig)
from kmlm_jax.adapters.losses import info_nce, mean_pool
from kmlm_jax.adapters.trex import read_trex
from kmlm_jax.cli import main as cli_main
from kmlm_jax.config import MeshConfig, preset
from kmlm_jax.evaluation import metrics
from kmlm_jax.kg.errors import KGInputError
from kmlm_jax.models import adapters as lib
from kmlm_jax.models.encoder import Encoder

FIXTURE = __import__("pathlib").Path(__file__).parents[1] / "fixtures" / "trex" / "re-nlg_sample.json"
TINY = preset("tiny", vocab_size=1000, hidden_size=64, num_heads=4, intermediate_size=128)


def _ids(batch=3, length=12, vocab=1000, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, vocab, (batch, length)).astype(np.int32)
  ids[1, 7:] = 1  # padding
  return jnp.asarray(ids), jnp.asarray((ids != 1).astype(np.int32))


def _model(seed=0, config=TINY):
  """An AdaptedEncoder whose adapters are far from zero (kernels with std 0.3, biases 0.1)."""
  model = lib.AdaptedEncoder(config, lib.AdapterConfig(), rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed)
  for name in ("down_kernel", "down_bias", "up_kernel", "up_bias"):
    var = getattr(model.adapters, name)
    std = 0.3 if "kernel" in name else 0.1
    var[...] = jnp.asarray(rng.standard_normal(var.shape) * std, jnp.float32)
  return model


# ---------------------------------------------------------------- layers


@pytest.mark.slow
def test_zero_up_projection_leaves_the_encoder_unchanged():
  model = _model()
  ids, mask = _ids()
  base = model(ids, attention_mask=mask).hidden
  # The base path is the plain encoder's, bit for bit.
  plain = Encoder(model.model_config, rngs=nnx.Rngs(0))
  nnx.update(plain, nnx.state(model.encoder))
  np.testing.assert_array_equal(plain(ids, attention_mask=mask).hidden, base)
  assert not np.allclose(model(ids, attention_mask=mask, active="ep").hidden, base, atol=1e-3)
  model.adapters.up_kernel[...] = jnp.zeros_like(model.adapters.up_kernel[...])
  model.adapters.up_bias[...] = jnp.zeros_like(model.adapters.up_bias[...])
  for active in ("ts", "fusion"):
    np.testing.assert_array_equal(model(ids, attention_mask=mask, active=active).hidden, base,
                                  err_msg=str(active))


def test_fusion_with_identity_value_and_equal_scores_is_mean_plus_residual():
  rng = np.random.default_rng(1)
  d, a = 16, 4
  h = jnp.asarray(rng.standard_normal((2, 5, d)), jnp.float32)
  outputs = jnp.asarray(rng.standard_normal((2, 5, a, d)), jnp.float32)
  fusion = lib.AdapterFusion(TINY.replace(hidden_size=d, num_heads=1), lib.AdapterConfig(),
                             rngs=nnx.Rngs(0)).params()
  p = {k: v[0] for k, v in fusion.items()}
  np.testing.assert_array_equal(p["value_kernel"], np.eye(d))  # initialised to identity
  p["query_kernel"] = jnp.zeros_like(p["query_kernel"])  # q = 0: every score is 0
  np.testing.assert_allclose(lib.fuse(h, outputs, p), h + outputs.mean(axis=2), atol=1e-6)
  # With a query, the weights differ but still sum to one: a convex mix of the outputs.
  p2 = {k: v[0] for k, v in fusion.items()}
  mixed = np.asarray(lib.fuse(h, outputs, p2) - h)
  lo, hi = np.asarray(outputs).min(axis=2), np.asarray(outputs).max(axis=2)
  assert np.all(mixed >= lo - 1e-5) and np.all(mixed <= hi + 1e-5)


@pytest.mark.slow
def test_stacked_einsum_equals_each_adapter_alone():
  model = _model()
  params = model.adapters.params()
  h = jnp.asarray(np.random.default_rng(2).standard_normal((2, 5, 64)), jnp.float32)
  stacked = lib.adapter_outputs(h, {k: v[1] for k, v in params.items()})  # layer 1
  for a in range(4):
    one = lib.single_adapter(h, {k: v[1, a] for k, v in params.items()})
    np.testing.assert_allclose(stacked[:, :, a], one - h, atol=1e-5)


def test_info_nce_and_pooling_against_numpy():
  rng = np.random.default_rng(3)
  left, right = rng.standard_normal((2, 6, 8)).astype(np.float32)
  keys = np.array([0, 1, 2, 3, 1, 5], np.int32)  # pairs 1 and 4 share their right entity
  loss, acc = info_nce(jnp.asarray(left), jnp.asarray(right), jnp.asarray(keys), 0.1)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  logits = unit(left) @ unit(right).T / 0.1
  want = []
  for i in range(6):
    keep = [j for j in range(6) if j == i or keys[j] != keys[i]]
    row = logits[i, keep]
    want.append(np.log(np.exp(row - row.max()).sum()) + row.max() - logits[i, i])
  np.testing.assert_allclose(float(loss), np.mean(want), rtol=1e-5)
  assert 0.0 <= float(acc) <= 1.0
  hidden = rng.standard_normal((2, 4, 3)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
  np.testing.assert_allclose(mean_pool(hidden, mask)[0], hidden[0, :2].mean(0), rtol=1e-6)
  np.testing.assert_allclose(mean_pool(hidden, np.ones_like(mask))[0], hidden[0].mean(0),
                             rtol=1e-6)  # the original's mean, padding included


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("kg") / "sample"
  train_lib.build_sample_corpus(out, streams=False)
  return out


def test_trex_reader_on_the_release_format(tmp_path):
  found = read_trex(FIXTURE)
  assert found.stats.records_read == found.stats.records_kept == 2
  assert found.skipped_triples == {"triple_without_boundaries": 1}
  a = found.alignments
  assert [(x.subject, x.predicate_id, x.object) for x in a] == [
      ("Angola", "P30", "Africa"), ("Its", "P36", "Luanda"), ("Angola", "P37", "Portuguese"),
      ("Luanda", "P1376", "Angola"), ("It", "P206", "Atlantic")]
  assert a[1].sentence == "Its capital and largest city is Luanda."
  assert (a[0].subject_id, a[0].object_id) == ("Q916", "Q15")
  # The same documents as JSON lines read the same.
  docs = json.loads(FIXTURE.read_text())
  lines = tmp_path / "trex.jsonl"
  lines.write_text("".join(json.dumps(d) + "\n" for d in docs))
  assert read_trex(lines).alignments == a
  # Bad input names the place, or is counted with skip_bad.
  docs[1]["triples"][0]["object"]["boundaries"] = [0, 999]
  lines.write_text("".join(json.dumps(d) + "\n" for d in docs))
  with pytest.raises(KGInputError, match=r"trex.jsonl:2: field 'triples\[0\].object.boundaries'"):
    read_trex(lines)
  skipped = read_trex(lines, skip_bad=True)
  assert skipped.stats.skipped == {"bad_document": 1} and len(skipped.alignments) == 3
  lines.write_text('{"text": "x"}\n')
  with pytest.raises(KGInputError, match="field 'triples'"):
    read_trex(lines)


def test_training_pairs_respect_the_splits(corpus_dir):
  from kmlm_jax.text.vocab import default_vocab_path, load_vocab
  corpus = data_lib.AdapterCorpus.load(corpus_dir)
  g = corpus.graph
  sources = data_lib.build_sources(corpus, data_lib.SOURCES, trex=[str(FIXTURE)])
  # EP: an entity's l' label is used only when (entity, l') is not a dev/test pair.
  ep = sources["ep"]
  for i in range(0, ep.size, 7):
    p = ep.make(i, np.random.default_rng(i))
    for side in (p.left.text, p.right.text):
      assert any(g.entity_label(p.key, l) == side and not corpus.held[l][p.key]
                 for l in g.languages), (p, side)
  # TP only reads triples pretraining may see; TS masks the object; ES pools the mention.
  assert sources["tp"].size <= len(corpus.train_rows)
  assert not set(corpus.test_rows) & set(corpus.train_rows)
  vocab = load_vocab(default_vocab_path())
  enc = data_lib.TextEncoder(vocab, 24)
  ts = [sources["ts"].make(i, np.random.default_rng(i)) for i in (0, sources["ts"].size - 1)]
  assert ts[-1].right.text == "Atlantic"  # the T-REx sentences come last
  ids, mask, pool = enc.encode(ts[0].left)
  assert (ids == vocab.mask_id).sum() == 1 and pool.sum() == mask.sum()
  es = sources["es"].make(3, np.random.default_rng(3))
  ids, mask, pool = enc.encode(es.left)
  mention = es.left.text[es.left.span[0]:es.left.span[1]]
  assert 0 < pool.sum() < mask.sum() - 2
  assert mention in vocab.decode(ids[pool > 0])
  # Batches are a function of (seed, source, step) only.
  a = data_lib.PairBatches(ep, 0, 8, 0, enc)
  b = data_lib.PairBatches(ep, 0, 8, 0, data_lib.TextEncoder(vocab, 24))
  for k, v in a.batch(5).items():
    np.testing.assert_array_equal(v, b.batch(5)[k])
  unmasked = data_lib.TextEncoder(vocab, 24, "unmasked").encode(data_lib.Side("Angola"))
  assert unmasked[2].sum() == 24


# ---------------------------------------------------------------- training


def _config(corpus_dir, **train):
  return AdapterExperimentConfig(
      name="adapters-test",
      model=preset("tiny", vocab_size=250002, hidden_size=32, num_heads=2, intermediate_size=64,
                   max_position_embeddings=40, use_mlm_head=False),
      data=AdapterDataConfig(corpus_dir=str(corpus_dir), seq_length=24),
      train=AdapterTrainConfig(**{"adapter_steps": 2, "fusion_steps": 2, "batch_size": 8,
                                  "learning_rate": 1e-2, "warmup_steps": 1, "log_every": 1,
                                  **train}),
      eval=AdapterEvalConfig(modes=("base", "fusion"), batch_size=64),
      mesh=MeshConfig(shape=(2, 2, 2))).validate()


@pytest.mark.slow
def test_each_stage_moves_only_its_own_parameters_on_a_mesh(corpus_dir):
  config = _config(corpus_dir)
  setup = train_lib.resolve(config, corpus_dir.parent)
  trainer = train_lib.adapter_trainer(setup)
  assert dict(trainer.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  batches = train_lib.make_sources(setup)
  start = train_lib.init_params(setup.model_config, config.adapters, 0)
  host = jax.tree.map(np.asarray, start)
  params = trainer.place(start)
  spec = params["encoder"]["embeddings"]["word"].sharding.spec
  assert spec == jax.sharding.PartitionSpec("tensor", "fsdp")  # sharded like the encoder
  for kind, index in (("adapter", 1), ("fusion", 0)):
    stage = trainer.trainer("adapters" if kind == "adapter" else "fusion")
    state = stage.init_state(params)
    for s in range(2):
      source = "tp" if kind == "adapter" else config.adapters.names[s]
      state, metrics = stage.step(state, train_lib.stage_batch(batches[source].batch(s), index))
      assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    params = state.params
    after = jax.tree.map(np.asarray, params)
    assert train_lib.fingerprint(after["encoder"]) == train_lib.fingerprint(host["encoder"])
    for name, value in after["adapters"].items():
      for a in range(4):
        same = np.array_equal(value[:, a], host["adapters"][name][:, a])
        assert same == (kind == "fusion" or a != 1), (kind, name, a)
    fusion_same = all(np.array_equal(after["fusion"][k], host["fusion"][k]) for k in host["fusion"])
    assert fusion_same == (kind == "adapter")
    host = after


@pytest.mark.slow
def test_cli_train_eval_export(corpus_dir, tmp_path, capsys):
  config_file = tmp_path / "adapters_test.py"
  config_file.write_text(
      "from tests.adapters.test_adapters import _config\n"
      f"def get_config():\n  return _config({str(corpus_dir)!r})\n")
  workdir = tmp_path / "wd"
  common = ["--config", str(config_file), "--workdir", str(workdir)]
  assert cli_main(["adapters", "train", *common]) == 0
  out = capsys.readouterr().out
  assert "base parameters unchanged: True" in out
  assert "stage=fusion steps=2" in out
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["stages"] == ["ep", "tp", "es", "ts", "fusion"]

  assert cli_main(["adapters", "eval", *common, "eval.tasks=alignment"]) == 0
  out = capsys.readouterr().out
  assert "| hits@1 | base |" in out and "| hits@1 | fusion |" in out
  results = json.loads((workdir / "eval" / "results.json").read_text())
  de = results["scores"]["alignment"]["fusion"]["de"]
  assert de["count"] > 0 and 0 <= de["hits@1"] <= de["hits@10"] <= 1

  export = tmp_path / "export"
  assert cli_main(["adapters", "export", *common, "--to", str(export)]) == 0
  out = capsys.readouterr().out
  assert float(out.strip().splitlines()[-1].split("=")[1]) < 1e-5
  state = torch.load(export / "adapters_state_dict.bin", weights_only=True)
  assert "roberta.encoder.layer.1.output.adapters.ts.adapter_down.0.weight" in state
  assert "roberta.encoder.layer.0.output.adapter_fusion_layer.ep,tp,es,ts.value.weight" in state
  assert state["roberta.encoder.layer.0.output.adapters.ep.adapter_up.weight"].shape == (32, 2)
  hub = json.loads((export / "ep" / "adapter_config.json").read_text())
  assert hub["config"]["reduction_factor"] == 16 and hub["config"]["non_linearity"] == "relu"


# ---------------------------------------------------------------- eval and export


def test_ranks_are_one_based_and_filtered():
  s = eval_lib.RetrievalSet(["q1", "q2"], ["a", "b", "c", "d"], np.array([0, 1]), [[], []])
  scores = np.array([[0.9, 0.5, 0.95, 0.1], [0.2, 0.8, 0.3, 0.1]])
  assert eval_lib.score(scores, s)["hits@1"] == 0.5  # ranks [2, 1]
  s.exclude = [[2], []]
  assert eval_lib.score(scores, s)["hits@1"] == 1.0  # ranks [1, 1]
  m = metrics.summarize(np.array([1, 2, 20]), ks=(1, 10))
  assert m["hits@1"] == pytest.approx(1 / 3) and m["hits@10"] == pytest.approx(2 / 3)
  assert m["mrr"] == pytest.approx((1 + 0.5 + 0.05) / 3)


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["xlmr", "bert"])
def test_pytorch_export_reproduces_the_flax_layers_and_encoder(flavour, hf_dirs, tmp_path):
  from kmlm_jax.convert import adapters_torch, hf
  from tests import hf_models
  loaded = hf.load_hf_params(hf_dirs(flavour, "tiny"))
  config = loaded.config.replace(use_mlm_head=False, dropout_rate=0.0,
                                 attention_dropout_rate=0.0)
  adapter_config = lib.AdapterConfig()
  model = _model(1, config)
  encoder = {k: v for k, v in loaded.params.items() if k != "mlm_head"}
  nnx.update(model.encoder, jax.tree.map(np.asarray, encoder))
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  # A trained-looking fusion: random query/key, value away from the identity.
  rng = np.random.default_rng(0)
  for name, value in pure["fusion"].items():
    pure["fusion"][name] = value + 0.05 * rng.standard_normal(value.shape).astype(np.float32)
  nnx.update(model, pure)
  params = {g: {k: np.asarray(v) for k, v in pure[g].items()} for g in ("adapters", "fusion")}
  export_lib.export_torch(params, config, adapter_config, tmp_path / "export")
  assert export_lib.verify_layers(tmp_path / "export", params, config, adapter_config) < 1e-5

  module, _ = export_lib.load_torch_export(tmp_path / "export")
  ids, mask = hf_models.padded_batch(1000, config.pad_token_id, lengths=(12, 7), length=12)
  base = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).hidden
  for active in ("es", "fusion"):
    ours = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                            active=active).hidden)
    assert np.abs(ours - np.asarray(base)).max() > 1e-2  # the adapters matter
    hf_model = hf_models.random_masked_lm(flavour, "tiny")  # the same weights as hf_dirs
    adapters_torch.patch_hf_model(hf_model, module, active)
    theirs, _ = hf_models.torch_forward(hf_model, ids, mask)
    diff = np.abs(ours - theirs)[mask.astype(bool)].max()
    assert diff < 1e-5, (active, diff)
