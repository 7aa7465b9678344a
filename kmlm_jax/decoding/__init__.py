"""Prix-LM decoding: KV cache, entity trie, constrained beam search, reference."""
