"""One training step of the Flax encoder vs transformers PyTorch, both with AdamW.

Same CPU, same configuration, same weights (converted), same batch: B=8
sequences of T=128 tokens with P=20 predictions each (15% of 128, rounded
up). Dropout is off on both sides so the losses can be compared. PyTorch is
transformers' `XLMRobertaForMaskedLM` as people train it (logits at every
position, labels -100 elsewhere): forward, backward, `torch.optim.AdamW`.
Flax is the production step (`kmlm_jax.training.trainer.make_trainer` on the
`PretrainingTask`, as `kmlm-jax train` runs it): once with the gathered head
(logits only at the P loss positions) and once with P = T (every position
gathered, i.e. the full head; weights keep the loss on the same 20 tokens).

Last, the production step with its layers unrolled
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

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig
from kmlm_jax.convert import hf
from kmlm_jax.training.loop import pretraining_trainer

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
              mlm_weights=np.ones((B, P), np.float32), mlm_terms=np.zeros((B, P), np.int32),
              prefix_mask=np.ones((B, T), np.int32))  # MLM rows: every key visible


def full_head(batch: dict) -> dict:
  """The same loss with every position gathered (P = T)."""
  positions = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))
  targets, weights = np.zeros((B, T), np.int32), np.zeros((B, T), np.float32)
  rows = np.arange(B)[:, None]
  targets[rows, batch["mlm_positions"]] = batch["mlm_targets"]
  weights[rows, batch["mlm_positions"]] = 1.0
  return {**batch, "mlm_positions": positions, "mlm_targets": targets, "mlm_weights": weights,
          "mlm_terms": np.zeros((B, T), np.int32)}


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

  # The PyTorch train step first: the Flax model starts from the weights it saves.
  optimizer = torch.optim.AdamW(torch_model.parameters(), lr=1e-5, weight_decay=0.0)
  with tempfile.TemporaryDirectory() as d:
    torch_model.save_pretrained(d)
    loaded = hf.load_hf_params(d)

  def torch_train_step():
    loss = torch_step()
    optimizer.step()
    return loss

  result = dict(name=name)
  result["torch_s"], _ = timed(torch_train_step, steps)
  for head, b, p in (("gathered", batch, P), ("full", full_head(batch), T)):
    seconds, loss = flax_train_step(loaded, b, p, steps)
    result[f"{head}_s"] = seconds
    result[f"{head}_loss_diff"] = abs(loss - torch_loss)
  result["unrolled_speedup"] = unrolled_vs_scanned(loaded, batch, steps)
  return result


def production_step(loaded, batch: dict, predictions: int, scan_layers: bool = True):
  """`step() -> loss` of the production trainer on one device, and the first loss."""
  config = ExperimentConfig(
      "bench", loaded.config.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                                     scan_layers=scan_layers),
      DataConfig(seq_length=T, max_predictions=predictions, batch_size=B),
      TrainConfig(learning_rate=1e-5, weight_decay=0.0, grad_clip_norm=0.0),
      MeshConfig(shape=(1, 1, 1)))
  trainer = pretraining_trainer(config, jax.devices()[:1])
  holder = {"state": trainer.init_state(_nest(loaded.params))}
  global_batch = trainer.partitioner.put_batch(batch)

  def step():
    holder["state"], metrics = trainer.step_fn(holder["state"], global_batch)
    return float(metrics["loss"])

  return step


def _nest(flat: dict) -> dict:
  from flax import traverse_util
  return traverse_util.unflatten_dict({tuple(k.split(".")): v for k, v in flat.items()})


def flax_train_step(loaded, batch: dict, predictions: int, steps: int) -> tuple[float, float]:
  """(median seconds, loss of the first step: the converted weights, as PyTorch's)."""
  step = production_step(loaded, batch, predictions)
  first = step()
  seconds, _ = timed(step, steps)
  return seconds, first


def unrolled_vs_scanned(loaded, batch, steps: int) -> float:
  """Scanned / unrolled median seconds of the production step, alternated."""
  runs = {scan: production_step(loaded, batch, P, scan) for scan in (True, False)}
  for fn in runs.values():
    fn()
  times = {True: [], False: []}
  for _ in range(steps):
    for scan, fn in runs.items():
      start = time.perf_counter()
      fn()
      times[scan].append(time.perf_counter() - start)
  return statistics.median(times[True]) / statistics.median(times[False])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  transformers.logging.set_verbosity_error()
  print(f"torch threads={torch.get_num_threads()}, jax devices={jax.devices()}")
  print("| config | PyTorch train step | Flax step, gathered head | Flax step, full head | "
        "speed-up gathered | speed-up full | loss diff | unrolled layers vs scan |")
  print("|---|---|---|---|---|---|---|---|")
  summary = []
  match = True
  for name, dims in CONFIGS.items():
    r = run(name, dims, args.steps)
    diff = max(r["gathered_loss_diff"], r["full_loss_diff"])
    match &= diff < 1e-4
    sg, sf = r["torch_s"] / r["gathered_s"], r["torch_s"] / r["full_s"]
    print(f"| {name} | {r['torch_s'] * 1e3:.1f} ms | {r['gathered_s'] * 1e3:.1f} ms | "
          f"{r['full_s'] * 1e3:.1f} ms | {sg:.2f}x | {sf:.2f}x | {diff:.1e} | "
          f"{r['unrolled_speedup']:.2f}x |", flush=True)
    key = name.replace("-", "_")
    summary.append(f"{key}_speedup_gathered={sg:.2f} {key}_speedup_full={sf:.2f} "
                   f"{key}_unrolled_vs_scan={r['unrolled_speedup']:.2f}")
  print(" ".join(summary) + f" loss_match={str(match).lower()}")


if __name__ == "__main__":
  main()
