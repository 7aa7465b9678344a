"""One training step (forward + backward) of the Flax encoder vs transformers PyTorch.

Same CPU, same configuration, same weights (converted), same batch: B=8
sequences of T=128 tokens with P=20 predictions each (15% of 128, rounded
up). Dropout is off on both sides so the losses can be compared. PyTorch is
transformers' `XLMRobertaForMaskedLM` as people train it (logits at every
position, labels -100 elsewhere). Flax runs twice: with the masked-position
head (logits only at the P gathered positions) and with the full head.
Then the whole training step with its AdamW update on both sides: the
project's jitted train step (`kmlm_jax.training.train_state`, gathered head,
per-stream loss) against PyTorch forward + backward + `torch.optim.AdamW`.

Last, the Flax gathered-head step with its layers unrolled
(`ModelConfig.scan_layers=False`) against the default `lax.scan`, timed
alternately in the same process.

  python bench/train_step_vs_torch.py [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from kmlm_jax import sharding
from kmlm_jax.config import DEFAULT_RULES, MeshConfig
from kmlm_jax.convert import hf
from kmlm_jax.model_checkpoint import build_model
from kmlm_jax.training.step import sharded_value_and_grad

CONFIGS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, vocab_size=1024),
    "base-2layer": dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                        intermediate_size=3072, vocab_size=250002),
}
B, T, P = 8, 128, 20


def make_batch(vocab: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, vocab, (B, T)).astype(np.int32)
  pos = np.stack([np.sort(rng.choice(np.arange(1, T), P, replace=False)) for _ in range(B)])
  targets = ids[np.arange(B)[:, None], pos].astype(np.int32)
  ids[np.arange(B)[:, None], pos] = vocab - 1  # <mask>
  return dict(input_ids=ids, segment_ids=np.ones((B, T), np.int32),
              mlm_positions=pos.astype(np.int32), mlm_targets=targets,
              mlm_weights=np.ones((B, P), np.float32))


def timed(fn, steps: int) -> tuple[float, object]:
  out = fn()  # compile / warm up
  out = fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), out


def run(name: str, dims: dict, steps: int) -> dict:
  cfg = transformers.XLMRobertaConfig(**dims, max_position_embeddings=T + 2, type_vocab_size=1,
                                      pad_token_id=1, layer_norm_eps=1e-5,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  torch.manual_seed(0)
  torch_model = transformers.XLMRobertaForMaskedLM(cfg).train()
  batch = make_batch(dims["vocab_size"])
  labels = np.full((B, T), -100, np.int64)
  labels[np.arange(B)[:, None], batch["mlm_positions"]] = batch["mlm_targets"]
  t_ids, t_labels = torch.as_tensor(batch["input_ids"], dtype=torch.long), torch.as_tensor(labels)

  def torch_step():
    torch_model.zero_grad(set_to_none=True)
    loss = torch_model(input_ids=t_ids, labels=t_labels).loss
    loss.backward()
    return float(loss.detach())

  torch_s, torch_loss = timed(torch_step, steps)

  with tempfile.TemporaryDirectory() as d:
    torch_model.save_pretrained(d)
    loaded = hf.load_hf_params(d)
  model = build_model(loaded.config.replace(dropout_rate=0.0, attention_dropout_rate=0.0),
                      loaded.params)
  mesh = sharding.make_mesh(MeshConfig(shape=(1, 1, 1)), devices=jax.devices()[:1])
  global_batch = sharding.host_local_to_global(batch, mesh, DEFAULT_RULES)
  result = dict(name=name, torch_s=torch_s)
  for head in ("gathered", "full"):
    step = sharded_value_and_grad(model, mesh, DEFAULT_RULES, batch,
                                  gathered_head=head == "gathered")

    def jax_step():
      (loss, _), grads = step(global_batch)
      jax.block_until_ready(grads)
      return float(loss)

    seconds, loss = timed(jax_step, steps)
    result[f"{head}_s"] = seconds
    result[f"{head}_loss_diff"] = abs(loss - torch_loss)
  result["flax_train_s"] = flax_train_step_seconds(loaded, batch, steps)
  result["unrolled_speedup"] = unrolled_vs_scanned(loaded, batch, mesh, global_batch, steps)
  # Last, because the AdamW steps change the PyTorch weights.
  optimizer = torch.optim.AdamW(torch_model.parameters(), lr=1e-5, weight_decay=0.0)

  def torch_train_step():
    loss = torch_step()
    optimizer.step()
    return loss

  result["torch_train_s"], _ = timed(torch_train_step, steps)
  return result


def unrolled_vs_scanned(loaded, batch, mesh, global_batch, steps: int) -> float:
  """Scanned / unrolled median seconds of the gathered-head fwd+bwd, alternated."""
  runs = {}
  for scan in (True, False):
    config = loaded.config.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                                   scan_layers=scan)
    step = sharded_value_and_grad(build_model(config, loaded.params), mesh, DEFAULT_RULES,
                                  batch, gathered_head=True)
    runs[scan] = (lambda step: lambda: jax.block_until_ready(step(global_batch)))(step)
    runs[scan]()
  times = {True: [], False: []}
  for _ in range(steps):
    for scan, fn in runs.items():
      start = time.perf_counter()
      fn()
      times[scan].append(time.perf_counter() - start)
  return statistics.median(times[True]) / statistics.median(times[False])


def flax_train_step_seconds(loaded, batch, steps: int) -> float:
  from flax import nnx

  from kmlm_jax.config import DataConfig, ExperimentConfig, TrainConfig
  from kmlm_jax.training import train_state as ts
  config = ExperimentConfig(
      "bench", loaded.config.replace(dropout_rate=0.0, attention_dropout_rate=0.0),
      DataConfig(seq_length=T, max_predictions=P, batch_size=B),
      TrainConfig(learning_rate=1e-5, weight_decay=0.0, grad_clip_norm=0.0),
      MeshConfig(shape=(1, 1, 1)))
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  model = build_model(config.model, loaded.params)
  trainer = ts.make_trainer(config, mesh, model)
  state = ts.init_state(trainer, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  full = {**batch, "positions": np.broadcast_to(np.arange(2, T + 2, dtype=np.int32), (B, T)),
          "mlm_streams": np.zeros((B, P), np.int32),
          "prefix_mask": np.ones((B, T), np.int32)}  # MLM rows: every key visible
  global_batch = ts.global_batch(trainer, full)
  holder = {"state": state}

  def step():
    holder["state"], metrics = trainer.step_fn(holder["state"], global_batch)
    return float(metrics["loss"])

  seconds, _ = timed(step, steps)
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  transformers.logging.set_verbosity_error()
  print(f"torch threads={torch.get_num_threads()}, jax devices={jax.devices()}")
  print("| config | PyTorch fwd+bwd | Flax gathered head | Flax full head | "
        "speed-up gathered | speed-up full | loss diff | PyTorch train step (AdamW) | "
        "Flax train step (AdamW) | speed-up train step | unrolled layers vs scan |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  summary = []
  match = True
  for name, dims in CONFIGS.items():
    r = run(name, dims, args.steps)
    diff = max(r["gathered_loss_diff"], r["full_loss_diff"])
    match &= diff < 1e-4
    sg, sf = r["torch_s"] / r["gathered_s"], r["torch_s"] / r["full_s"]
    st = r["torch_train_s"] / r["flax_train_s"]
    print(f"| {name} | {r['torch_s'] * 1e3:.1f} ms | {r['gathered_s'] * 1e3:.1f} ms | "
          f"{r['full_s'] * 1e3:.1f} ms | {sg:.2f}x | {sf:.2f}x | {diff:.1e} | "
          f"{r['torch_train_s'] * 1e3:.1f} ms | {r['flax_train_s'] * 1e3:.1f} ms | {st:.2f}x | "
          f"{r['unrolled_speedup']:.2f}x |",
          flush=True)
    key = name.replace("-", "_")
    summary.append(f"{key}_speedup_gathered={sg:.2f} {key}_speedup_full={sf:.2f} "
                   f"{key}_speedup_train_step={st:.2f} "
                   f"{key}_unrolled_vs_scan={r['unrolled_speedup']:.2f}")
  print(" ".join(summary) + f" loss_match={str(match).lower()}")


if __name__ == "__main__":
  main()
