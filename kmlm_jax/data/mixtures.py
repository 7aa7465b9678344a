"""Mixtures: which token-cache sources feed a run, and at which rates.

A mixture maps members to rates (relative numbers of examples). The member
`text` stands for every `text.LANG` source, split over languages by
temperature sampling: language l gets a share proportional to n_l ** (1 / t),
n_l its number of examples, t = `data.language_temperature` (1: in
proportion to size; XLM-R's alpha = 0.3 is t = 1 / 0.3 = 3.33; a large t
approaches uniform). The seqio registrations in `tasks/` mirror this table.
"""

from __future__ import annotations

import dataclasses

from kmlm_jax.text.errors import CorpusError


@dataclasses.dataclass(frozen=True)
class MixtureRates:
  """Relative rates of the three KMLM losses' data (`data.rate_*`).

  The paper feeds the same number of sequences of each stream per update;
  equal rates approximate that in one mixed batch. kmlm_mix splits the
  knowledge rate evenly between code-switched and parallel sentences.
  """

  mlm: float = 1.0
  knowledge: float = 1.0
  reasoning: float = 1.0


def members(mixture: str, rates: MixtureRates = MixtureRates()) -> dict[str, float]:
  """Member -> rate of a named mixture or single task."""
  table = {
      "cc100": {"text": 1.0},
      "kmlm_cs": {"text": rates.mlm, "code_switched": rates.knowledge,
                  "reasoning": rates.reasoning},
      "kmlm_parallel": {"text": rates.mlm, "parallel": rates.knowledge,
                        "reasoning": rates.reasoning},
      "kmlm_mix": {"text": rates.mlm, "code_switched": rates.knowledge / 2,
                   "parallel": rates.knowledge / 2, "reasoning": rates.reasoning},
      "prixlm": {"triple": 1.0, "link": 1.0},
      "kmlm_knowledge_cs": {"code_switched": 1.0},
      "kmlm_knowledge_parallel": {"parallel": 1.0},
      "kmlm_reasoning": {"reasoning": 1.0},
      "prixlm_triples": {"triple": 1.0},
      "prixlm_links": {"link": 1.0},
  }
  if mixture.startswith("cc100_"):
    return {f"text.{mixture[6:]}": 1.0}
  if mixture not in table:
    raise CorpusError(f"unknown mixture {mixture!r}; known: {', '.join(table)}, cc100_LANG, "
                      "synthetic")
  return {k: v for k, v in table[mixture].items() if v > 0}


def sources_needed(mixture: str, languages) -> list[str]:
  """The cache sources a mixture reads."""
  out = []
  for member in members(mixture):
    out += [f"text.{l}" for l in languages] if member == "text" else [member]
  return out


def source_weights(mixture: str, rates: MixtureRates, counts: dict[str, int],
                   languages, temperature: float = 1.0) -> dict[str, float]:
  """Source -> probability (summing to 1) of a mixture, given the sources' example counts."""
  if temperature <= 0:
    raise CorpusError(f"data.language_temperature must be > 0, got {temperature}")
  weights = {}
  for member, rate in members(mixture, rates).items():
    if member != "text":
      weights[member] = rate
      continue
    sizes = {f"text.{l}": counts.get(f"text.{l}", 0) for l in languages}
    shares = {s: n ** (1.0 / temperature) for s, n in sizes.items() if n > 0}
    total = sum(shares.values())
    if not total:
      raise CorpusError(f"mixture {mixture!r}: no text examples in any of {list(sizes)}")
    weights.update({s: rate * v / total for s, v in shares.items()})
  empty = [s for s in weights if counts.get(s, 0) == 0]
  if empty:
    raise CorpusError(f"mixture {mixture!r}: source(s) {empty} have no examples")
  total = sum(weights.values())
  return {s: w / total for s, w in sorted(weights.items())}
