"""`model.attention`: the masks of training rows and the KV cache under "causal"."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kmlm_jax.config import preset
from kmlm_jax.decoding import kv_cache
from kmlm_jax.models import masks
from kmlm_jax.models.encoder import Encoder


def _row():
  """One packed row: an MLM example (all prefix), a Prix-LM example (3 prefix tokens, 3
  object tokens), padding."""
  segments = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 2, 2, 0]])
  prefix = jnp.asarray([[1, 1, 1, 1, 1, 1, 0, 0, 0, 0]], bool)
  return segments, prefix


def test_training_masks():
  segments, prefix = _row()
  causal = np.asarray(masks.training_mask(segments, prefix, "causal"))[0, 0]
  prefix_causal = np.asarray(masks.training_mask(segments, prefix, "prefix_causal"))[0, 0]
  np.testing.assert_array_equal(prefix_causal, np.asarray(
      masks.prefix_causal_mask(segments, prefix))[0, 0])
  mlm = np.ones((3, 3), bool)
  for mask in (causal, prefix_causal):  # the MLM example stays bidirectional
    np.testing.assert_array_equal(mask[:3, :3], mlm)
    assert not mask[:3, 3:].any() and not mask[3:, :3].any() and not mask[:, 9].any()
  np.testing.assert_array_equal(causal[3:9, 3:9], np.tril(np.ones((6, 6), bool)))
  # prefix-causal: the three prefix tokens see each other, objects see the prefix.
  expected = np.tril(np.ones((6, 6), bool))
  expected[:, :3] = True
  np.testing.assert_array_equal(prefix_causal[3:9, 3:9], expected)
  # Scoring a query without an object yet: fully causal under "causal".
  np.testing.assert_array_equal(np.asarray(masks.decoding_mask(segments, prefix, "causal")),
                                np.asarray(masks.causal_mask(segments)))
  with pytest.raises(ValueError, match="unknown attention"):
    masks.training_mask(segments, prefix, "bidirectional")


_encode = nnx.jit(kv_cache.encode_prefix, static_argnames=("max_decode_len",))
_decode = nnx.jit(kv_cache.decode_step)
_full = nnx.jit(lambda model, ids, segments, mask: model(ids, segment_ids=segments,
                                                         attention=mask).hidden)


@pytest.mark.parametrize("flavour", ["tiny", "tiny-bert"])
def test_kv_cache_equals_full_causal_forward(flavour):
  config = preset(flavour, vocab_size=300, max_position_embeddings=64, initializer_range=0.1,
                  attention="causal")
  model = Encoder(config, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  lengths, m = np.array([7, 4]), 4
  prefix = rng.integers(5, 290, (2, 7)).astype(np.int32)
  prefix[1, 4:] = config.pad_token_id
  objects = rng.integers(5, 290, (2, m)).astype(np.int32)
  cache, h = _encode(model, prefix, lengths, max_decode_len=m)
  hidden = [h]
  for step in range(m):
    cache, h = _decode(model, cache, objects[:, step], jnp.int32(step))
    hidden.append(h)
  hidden = np.stack([np.asarray(h) for h in hidden], 1)  # [B, M + 1, D]
  t = 7 + m
  ids = np.full((2, t), config.pad_token_id, np.int32)
  segments = np.zeros((2, t), np.int32)
  for i, n in enumerate(lengths):
    ids[i, :n], ids[i, n:n + m], segments[i, :n + m] = prefix[i, :n], objects[i], 1
  causal = masks.causal_mask(jnp.asarray(segments))
  full = np.asarray(_full(model, jnp.asarray(ids), jnp.asarray(segments), causal))
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(hidden[i], full[i, n - 1:n + m], atol=1e-5, rtol=0)
  # ... and not the prefix-causal forward (the prefix is no longer bidirectional).
  in_prefix = jnp.asarray(np.arange(t)[None] < lengths[:, None])
  other = np.asarray(_full(model, jnp.asarray(ids), jnp.asarray(segments),
                           masks.prefix_causal_mask(jnp.asarray(segments), in_prefix)))
  assert np.abs(other[0, 6:7 + m] - hidden[0]).max() > 1e-3
