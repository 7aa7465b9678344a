"""Adapters and fusion -> PyTorch state dicts with AdapterHub names.

Output directory:

  adapters_state_dict.bin   torch.save of every adapter and fusion tensor
  adapters_config.json      what `convert.adapters_torch.TorchAdapterSet` needs,
                            plus AdapterHub-style adapter and fusion configs
  NAME/pytorch_adapter.bin + NAME/adapter_config.json          per adapter
  fusion/pytorch_model_adapter_fusion.bin + adapter_fusion_config.json

(the per-adapter and fusion folders follow AdapterHub's `save_adapter` /
`save_adapter_fusion` layout). Names, for layer i (prefix `roberta.` for
XLM-R, `bert.` for BERT):

  {p}encoder.layer.{i}.output.adapters.{name}.adapter_down.0.{weight,bias}
  {p}encoder.layer.{i}.output.adapters.{name}.adapter_up.{weight,bias}
  {p}encoder.layer.{i}.output.adapter_fusion_layer.{fusion}.{query,key}.{weight,bias}
  {p}encoder.layer.{i}.output.adapter_fusion_layer.{fusion}.value.weight

PyTorch Linear weights are [out, in]: our [in, out] kernels are transposed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kmlm_jax import fileio
from kmlm_jax.config import ModelConfig
from kmlm_jax.convert.name_map import ENCODER_PREFIX
from kmlm_jax.models.adapters import AdapterConfig

# AdapterHub config keys describing this placement: the adapter reads the
# feed-forward output and adds its own residual; the layer's LayerNorm runs
# once, after it (AdapterHub's Pfeiffer config runs it before and after).
ADAPTERHUB_ADAPTER_CONFIG = {
    "mh_adapter": False, "output_adapter": True, "non_linearity": "relu",
    "original_ln_before": False, "original_ln_after": True, "residual_before_ln": True,
    "adapter_residual_before_ln": False, "ln_before": False, "ln_after": False,
    "init_weights": "bert", "is_parallel": False, "scaling": 1.0, "use_gating": False,
    "leave_out": []}
ADAPTERHUB_FUSION_CONFIG = {
    "key": True, "query": True, "value": True, "query_before_ln": False,
    "regularization": True, "residual_before": False, "temperature": False,
    "value_before_softmax": True, "value_initialized": True}
MODEL_CLASS = {"xlmr": ("XLMRobertaModel", "xlm-roberta"), "bert": ("BertModel", "bert")}


def adapter_state_dict(params: dict, model: ModelConfig,
                       adapters: AdapterConfig) -> dict[str, np.ndarray]:
  """{AdapterHub name: fp32 array} of `params` = {"adapters": {...}, "fusion": {...}}."""
  fp32 = lambda group: {k: np.asarray(v, np.float32) for k, v in params[group].items()}
  a, fused = fp32("adapters"), adapters.fusion and "fusion" in params
  f = fp32("fusion") if fused else {}
  out = {}
  for i in range(model.num_layers):
    p = f"{ENCODER_PREFIX[model.flavour]}encoder.layer.{i}.output."
    for j, name in enumerate(adapters.names):
      q = f"{p}adapters.{name}."
      out[q + "adapter_down.0.weight"] = a["down_kernel"][i, j].T
      out[q + "adapter_down.0.bias"] = a["down_bias"][i, j]
      out[q + "adapter_up.weight"] = a["up_kernel"][i, j].T
      out[q + "adapter_up.bias"] = a["up_bias"][i, j]
    if fused:
      q = f"{p}adapter_fusion_layer.{adapters.fusion_name}."
      for part in ("query", "key"):
        out[q + f"{part}.weight"] = f[f"{part}_kernel"][i].T
        out[q + f"{part}.bias"] = f[f"{part}_bias"][i]
      out[q + "value.weight"] = f["value_kernel"][i].T
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def export_config(model: ModelConfig, adapters: AdapterConfig) -> dict:
  model_class, model_type = MODEL_CLASS[model.flavour]
  return {
      "format": "kmlm-jax-adapters-1",
      "prefix": ENCODER_PREFIX[model.flavour], "num_layers": model.num_layers,
      "hidden_size": model.hidden_size, "bottleneck": adapters.bottleneck(model.hidden_size),
      "names": list(adapters.names),
      "fusion_name": adapters.fusion_name if adapters.fusion else None,
      "model_class": model_class, "model_type": model_type,
      "adapter_config": {**ADAPTERHUB_ADAPTER_CONFIG,
                         "reduction_factor": adapters.reduction_factor},
      "fusion_config": ADAPTERHUB_FUSION_CONFIG if adapters.fusion else None,
  }


def export_torch(params: dict, model: ModelConfig, adapters: AdapterConfig, out: Path | str,
                 *, overwrite: bool = False) -> list[str]:
  """Writes the directory described in the module docstring; returns report lines."""
  import torch
  out = Path(out)
  state = adapter_state_dict(params, model, adapters)
  config = export_config(model, adapters)
  tensors = lambda names: {n: torch.from_numpy(state[n].copy()) for n in names}
  hub = {"hidden_size": model.hidden_size, "model_class": config["model_class"],
         "model_name": None, "model_type": config["model_type"], "version": "kmlm-jax"}
  from kmlm_jax.experiment import ConfigError
  with fileio.atomic_directory(out, overwrite=overwrite, error=ConfigError) as tmp:
    torch.save(tensors(state), tmp / "adapters_state_dict.bin")
    (tmp / "adapters_config.json").write_text(json.dumps(config, indent=1))
    for name in adapters.names:
      (tmp / name).mkdir()
      torch.save(tensors([n for n in state if f".adapters.{name}." in n]),
                 tmp / name / "pytorch_adapter.bin")
      (tmp / name / "adapter_config.json").write_text(json.dumps(
          {**hub, "name": name, "config": config["adapter_config"]}, indent=1))
    if config["fusion_config"] is not None:
      (tmp / "fusion").mkdir()
      torch.save(tensors([n for n in state if ".adapter_fusion_layer." in n]),
                 tmp / "fusion" / "pytorch_model_adapter_fusion.bin")
      (tmp / "fusion" / "adapter_fusion_config.json").write_text(json.dumps(
          {**hub, "name": adapters.fusion_name, "adapter_names": list(adapters.names),
           "config": config["fusion_config"]}, indent=1))
  return [f"wrote {out}: {len(state)} tensors "
          f"({sum(v.size for v in state.values()):,} parameters), adapters "
          f"{', '.join(adapters.names)}" + (", fusion" if config["fusion_config"] else "")]


def load_torch_export(out: Path | str):
  """(TorchAdapterSet with the exported weights, strict names, config dict)."""
  import torch

  from kmlm_jax.convert.adapters_torch import TorchAdapterSet
  out = Path(out)
  config = json.loads((out / "adapters_config.json").read_text())
  module = TorchAdapterSet(config)
  module.load_state_dict(torch.load(out / "adapters_state_dict.bin", weights_only=True),
                         strict=True)
  return module.eval(), config


def verify_layers(out: Path | str, params: dict, model: ModelConfig, adapters: AdapterConfig,
                  seed: int = 0) -> float:
  """Max |Flax - PyTorch| of every layer's adapter and fusion outputs on random
  feed-forward outputs h [2, 7, D], over all modes."""
  import jax.numpy as jnp
  import torch

  from kmlm_jax.models import adapters as lib
  module, _ = load_torch_export(out)
  h = np.random.default_rng(seed).standard_normal((2, 7, model.hidden_size)).astype(np.float32)
  hj = jnp.asarray(h)
  modes = list(adapters.names) + (["fusion"] if adapters.fusion and "fusion" in params else [])
  worst = 0.0
  for i in range(model.num_layers):
    layer_params = lambda group: {k: jnp.asarray(v[i]) for k, v in params[group].items()}
    a = layer_params("adapters")
    for mode in modes:
      if mode == "fusion":
        ours = lib.fuse(hj, lib.adapter_outputs(hj, a), layer_params("fusion"))
      else:
        ours = lib.single_adapter(hj, {k: v[adapters.index(mode)] for k, v in a.items()})
      with torch.no_grad():
        theirs = module.layer(i)(torch.from_numpy(h), mode).numpy()
      worst = max(worst, float(np.abs(np.asarray(ours) - theirs).max()))
  return worst


def export_run(workdir: Path | str, out: Path | str, *, overwrite: bool = False
               ) -> tuple[list[str], float]:
  """Exports WORKDIR/adapters and checks the PyTorch layers against ours:
  (report lines, max abs difference)."""
  from kmlm_jax.adapters.train import load_adapters
  params, meta = load_adapters(Path(workdir) / "adapters")
  model = ModelConfig(**meta["model"])
  adapters = AdapterConfig(**{**meta["adapters"], "names": tuple(meta["adapters"]["names"])})
  lines = export_torch(params, model, adapters, out, overwrite=overwrite)
  diff = verify_layers(out, params, model, adapters)
  lines.append(f"verify: adapter and fusion outputs of all {model.num_layers} layers against "
               "the PyTorch reference (kmlm_jax/convert/adapters_torch.py)")
  return lines, diff
