"""Prix-LM decoding: KV cache, entity trie, constrained beam search, reference.

Modules: `kv_cache` (encode_prefix, decode_step), `trie` (numpy only, no
JAX import), `beam_search` (BeamSearch), `reference` (Algorithm 1).
"""
