"""A plain PyTorch reference of the adapter and fusion layers, with AdapterHub names.

`TorchAdapterSet(config).state_dict()` has exactly the names of the export
(`{prefix}encoder.layer.{i}.output.adapters.{name}.adapter_down.0.weight`,
`...adapter_up.weight`, `...output.adapter_fusion_layer.{fusion}.query.weight`,
...), so `load_state_dict(strict=True)` checks an export's names and
shapes. `patch_hf_model` inserts the layers into a transformers
`BertModel` / `XLMRobertaModel` at the same place as the Flax encoder
(the feed-forward output, before its residual and LayerNorm), to compare
whole encoders.
"""

from __future__ import annotations

import types

import torch
from torch import nn


class BottleneckAdapter(nn.Module):
  """A(h) = W_up relu(W_down h + b_down) + b_up (no residual): [..., D] -> [..., D]."""

  def __init__(self, hidden: int, bottleneck: int):
    super().__init__()
    self.adapter_down = nn.Sequential(nn.Linear(hidden, bottleneck), nn.ReLU())
    self.adapter_up = nn.Linear(bottleneck, hidden)

  def forward(self, h):
    return self.adapter_up(self.adapter_down(h))


class AdapterFusionLayer(nn.Module):
  """h + sum_a softmax_a(Q(h) . K(A_a)) V(A_a): h [B, T, D], outputs [B, T, A, D]."""

  def __init__(self, hidden: int):
    super().__init__()
    self.query = nn.Linear(hidden, hidden)
    self.key = nn.Linear(hidden, hidden)
    self.value = nn.Linear(hidden, hidden, bias=False)

  def forward(self, h, outputs):
    q = self.query(h)
    k = self.key(outputs)
    v = self.value(outputs)
    probs = torch.softmax(torch.einsum("btd,btad->bta", q, k), dim=-1)
    return h + torch.einsum("bta,btad->btd", probs, v)


class AdapterOutput(nn.Module):
  """One layer's adapters and fusion (named like AdapterHub's `layer.output`)."""

  def __init__(self, hidden: int, bottleneck: int, names, fusion_name: str | None):
    super().__init__()
    self.names = tuple(names)
    self.fusion_name = fusion_name
    self.adapters = nn.ModuleDict({n: BottleneckAdapter(hidden, bottleneck) for n in names})
    self.adapter_fusion_layer = nn.ModuleDict(
        {fusion_name: AdapterFusionLayer(hidden)} if fusion_name else {})

  def forward(self, h, active=None):
    """The rewritten feed-forward output; `active`: None, an adapter name or "fusion"."""
    if active is None:
      return h
    if active == "fusion":
      outputs = torch.stack([self.adapters[n](h) for n in self.names], dim=2)
      return self.adapter_fusion_layer[self.fusion_name](h, outputs)
    return h + self.adapters[active](h)


class TorchAdapterSet(nn.Module):
  """All layers' adapters and fusion under `{prefix}encoder.layer.{i}.output`.

  `config` is the export's `adapters_config.json` content (keys used:
  prefix, num_layers, hidden_size, bottleneck, names, fusion_name).
  """

  def __init__(self, config: dict):
    super().__init__()
    layers = nn.ModuleList(
        nn.ModuleDict({"output": AdapterOutput(config["hidden_size"], config["bottleneck"],
                                               config["names"], config.get("fusion_name"))})
        for _ in range(config["num_layers"]))
    self.prefix = config["prefix"].rstrip(".")
    # ModuleDicts name the state dict's keys like transformers' modules.
    self.add_module(self.prefix, nn.ModuleDict({"encoder": nn.ModuleDict({"layer": layers})}))

  def layer(self, i: int) -> AdapterOutput:
    return self.get_submodule(f"{self.prefix}.encoder.layer.{i}.output")


def patch_hf_model(model: nn.Module, adapters: TorchAdapterSet, active) -> nn.Module:
  """Inserts `adapters` (mode `active`) into each layer of a transformers
  BertModel / XLMRobertaModel (or their MaskedLM): dense -> dropout -> adapter ->
  LayerNorm(h + input). Returns the model."""
  base = getattr(model, adapters.prefix, model)
  for i, layer in enumerate(base.encoder.layer):
    out = layer.output
    adapter = adapters.layer(i)

    def forward(self, hidden_states, input_tensor, _adapter=adapter):
      h = self.dropout(self.dense(hidden_states))
      return self.LayerNorm(_adapter(h, active) + input_tensor)

    out.forward = types.MethodType(forward, out)
  return model
