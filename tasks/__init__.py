"""seqio Tasks and Mixtures over kmlm-jax's token cache.

`register(data_config)` registers, for the token cache that config reads
(`kmlm_jax.training.data`), one seqio Task per cache source and one seqio
Mixture per mixture of `kmlm_jax.data.mixtures` (same names, same rates;
text languages by `data.language_temperature`):

  cc100_{lang}             text windows (masking rule "text", loss L_MLM)
  kmlm_knowledge_cs        code-switched knowledge sentences (rule "knowledge", L_K)
  kmlm_knowledge_parallel  parallel knowledge sentences (rule "knowledge", L_K)
  kmlm_reasoning           reasoning samples from 3- and 4-cycles (rule "reasoning", L_L)
  prixlm_triples, prixlm_links   Prix-LM sequences (rule "causal")
  mixtures: cc100, kmlm_cs, kmlm_parallel, kmlm_mix, prixlm

A Task's examples are the cache's pre-tokenized examples (`input_ids`,
`roles`, `mentions`, `sentences`, `aux`), for inspection and for seqio-based
tools; training reads the same cache through `kmlm_jax.data.input`, which
masks and packs whole blocks at once. Importing this package registers the
definitions for the default data config and touches no file; a Task reads
its cache only when asked for data (build it with `kmlm-jax data cache`).
"""

from __future__ import annotations

from tasks.kmlm import register

register()
