"""seqio Tasks and Mixtures of kmlm-jax; importing this package registers them.

Tasks (all with split "train"):
  cc100_{lang}           text lines, BERT masking (stream "mlm")
  kmlm_knowledge_cs        code-switched knowledge sentences (stream "knowledge")
  kmlm_knowledge_parallel  parallel knowledge sentences (stream "knowledge")
  kmlm_reasoning           reasoning samples from 3- and 4-cycles (stream "reasoning")
  prixlm_triples           Prix-LM monolingual triples (stream "causal")
  prixlm_links             Prix-LM cross-lingual links (stream "causal")
(label and alias-replaced variants are both in the knowledge corpora)
Mixtures (KMLM paper's three models; rates from `MixtureRates`):
  cc100                  the text tasks, proportional to their line counts
  kmlm_cs                cc100 + code-switched + reasoning
  kmlm_parallel          cc100 + parallel + reasoning
  kmlm_mix               cc100 + code-switched + parallel + reasoning
  prixlm                 prixlm_triples + prixlm_links (needs a vocabulary with the
                         Prix-LM tokens, `kmlm_jax.text.prixlm`)

Where the data comes from (environment variables read at import, or call
`register(...)` again with explicit values):
  KMLM_CORPUS_DIR   a `kmlm-jax kg build` output directory; default: the
                    embedded sample KG, built on first use into
                    ~/.cache/kmlm_jax/corpora/sample-<version>
  KMLM_TEXT_PATTERN a file pattern with `{lang}`, e.g. /data/cc100/{lang}/*.txt;
                    default: the embedded UDHR text in the sample's languages
  KMLM_VOCAB        tokenizer (tokenizer.json, sentencepiece .model, vocab.txt or
                    HF directory); default: the real XLM-R tokenizer.json
"""

from __future__ import annotations

from tasks.kmlm import MixtureRates, register  # noqa: F401

register()
