"""MIRACLE's code (erp.codecs.miracle): hashing, importance-sampled indices, the section format."""
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import erp
from erp import container
from erp.codecs import miracle as random_code
from erp.errors import ErpError


def test_hashing_is_a_balanced_random_sign_assignment():
  rank, sign = random_code.hashing(3, 'Dense_0/kernel', 1000, 70)
  np.testing.assert_array_equal(np.sort(rank), np.arange(1000))  # A permutation.
  sizes = np.bincount(rank % 70, minlength=70)
  assert sizes.max() - sizes.min() <= 1
  assert set(np.unique(sign)) == {-1.0, 1.0} and abs(sign.mean()) < 0.15
  again, _ = random_code.hashing(3, 'Dense_0/kernel', 1000, 70)
  other, _ = random_code.hashing(3, 'Dense_1/kernel', 1000, 70)
  np.testing.assert_array_equal(rank, again)  # Seed and path fix it,
  assert (rank != other).mean() > 0.9  # and each leaf gets its own.
  with pytest.raises(ErpError, match='num_vars'):
    random_code.hashing(0, 'x', 10, 11)


def test_weights_share_one_magnitude_per_bucket():
  rank, sign = random_code.hashing(0, 'w', 12, 4)
  variables = np.array([1.0, 2.0, 3.0, 4.0, 9.0], np.float32)  # Padding beyond num_vars.
  w = random_code.weights(variables, 4, rank, sign, (3, 4)).ravel()
  np.testing.assert_array_equal(np.abs(w), variables[rank % 4])
  np.testing.assert_array_equal(np.sign(w), sign)


def test_choose_follows_the_posterior():
  """A narrow q centred on one candidate picks it; a q equal to p picks at random."""
  key = random_code.leaf_key(0, 'w')
  bits, block_size, scale = 8, 6, np.float32(0.5)
  blocks = np.arange(16)
  targets = np.arange(16) * 7 % 256
  mu = random_code.block_values(key, blocks, targets, block_size, scale)
  sigma = np.full_like(mu, 1e-3)
  chosen = random_code.choose(key, blocks, mu, sigma, scale, bits, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(chosen, targets)
  wide = random_code.choose(key, np.zeros(4096, np.int32), np.zeros((4096, block_size)),
                            np.full((4096, block_size), scale), scale, bits,
                            jax.random.PRNGKey(2))
  counts = np.bincount(wide, minlength=256)
  assert counts.max() < 45 and (counts > 0).mean() > 0.95  # ~Uniform: mean 16 per index.


def test_section_round_trip_costs_bits_per_block():
  rng = np.random.default_rng(0)
  for bits, num_vars, block_size in ((10, 95, 30), (3, 7, 2), (16, 1, 1)):
    count = random_code.num_blocks(num_vars, block_size)
    indices = rng.integers(0, 2**bits, count)
    payload = random_code.encode_leaf(5, num_vars, block_size, bits, -1.5, indices)
    seed, nv, bs, b, log_scale, back = random_code.read_leaf(payload, 1000)
    assert (seed, nv, bs, b, log_scale) == (5, num_vars, block_size, bits, -1.5)
    np.testing.assert_array_equal(back, indices)
    header = len(payload) - -(-count * bits // 8)
    assert header <= 10  # Four small varints and one float32.


def test_decoding_replays_the_selected_candidates():
  shape, num_vars, block_size, bits = (20, 15), 40, 8, 6
  indices = np.arange(5) * 11
  payload = random_code.encode_leaf(9, num_vars, block_size, bits, np.log(0.2), indices)
  w = random_code.decode_leaf(payload, shape, 'Dense_0/kernel')
  key = random_code.leaf_key(9, 'Dense_0/kernel')
  values = random_code.block_values(key, np.arange(5), indices, block_size,
                                    random_code.scale_of(np.log(0.2)))
  rank, sign = random_code.hashing(9, 'Dense_0/kernel', 300, num_vars)
  np.testing.assert_array_equal(w, random_code.weights(values, num_vars, rank, sign, shape))
  assert w.dtype == np.float32 and len(np.unique(np.abs(w))) == num_vars
  assert 0.1 < w.std() < 0.3  # Candidates are N(0, 0.2^2) samples.


def test_damaged_sections_are_named_errors():
  payload = random_code.encode_leaf(1, 40, 8, 6, 0.0, np.arange(5))
  with pytest.raises(ErpError, match='miracle group w'):
    random_code.decode_leaf(payload[:-1], (40,), 'w')  # Truncated indices.
  with pytest.raises(ErpError, match='trailing'):
    random_code.decode_leaf(payload + b'\0', (40,), 'w')
  with pytest.raises(ErpError, match='exceeds limit'):
    random_code.decode_leaf(payload, (20,), 'w')  # More variables than weights.
  bad_scale = payload[:4] + np.float32(np.inf).tobytes() + payload[8:]
  with pytest.raises(ErpError, match='not finite'):
    random_code.decode_leaf(bad_scale, (40,), 'w')
  with pytest.raises(ValueError, match='indices'):
    random_code.encode_leaf(1, 40, 8, 6, 0.0, np.arange(5) * 20)  # 80 >= 2**6.


def test_kl_of_equal_gaussians_is_zero_and_grows_with_the_gap():
  kl = random_code.kl_nats(jnp.array([0.0, 1.0, 0.0]), jnp.array([1.0, 1.0, 0.5]), 1.0)
  np.testing.assert_allclose(kl, [0.0, 0.5, np.log(2) + 0.125 - 0.5], atol=1e-6)


def test_seed_and_block_size_beyond_the_limits_are_refused_both_ways():
  payload = random_code.encode_leaf(1, 40, 8, 6, 0.0, np.arange(5))
  seed_bytes = len(container.Writer().varint(1).getvalue())
  too_big = container.Writer().varint(1 << 40).getvalue() + payload[seed_bytes:]
  with pytest.raises(erp.ErpError, match='exceeds limit'):
    random_code.decode_leaf(too_big, (40,), 'w')
  with pytest.raises(ValueError, match='seed'):
    random_code.encode_leaf(1 << 32, 40, 8, 6, 0.0, np.arange(5))
  with pytest.raises(ValueError, match='block_size'):
    random_code.encode_leaf(1, 40, 8192, 6, 0.0, np.arange(1))


def test_candidates_are_jax_random_normal_restated():
  """The codec's own Threefry gives jax.random's bits; its normals are within float32
  rounding of jax.random.normal, so files written by erp <= 0.2 keep their weights."""
  path = 'Dense_0/kernel'
  for seed in (0, 3, (1 << 32) - 1):
    jkey = jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(path.encode()) & 0x7FFFFFFF)
    key = random_code.leaf_key(seed, path)
    assert [int(k) for k in key] == [int(k) for k in jax.random.key_data(jkey)]
    blocks, indices = np.array([0, 5, 70000]), np.array([0, 1023, 65535])
    bits = random_code.candidate_bits(key, blocks, indices, 31)
    z = random_code.normals_exact(bits)
    for row, (b, k) in enumerate(zip(blocks, indices)):
      sub = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jkey, 1), int(b)), int(k))
      assert np.array_equal(bits[row], np.asarray(jax.random.bits(sub, (31,), jnp.uint32)))
      np.testing.assert_allclose(z[row], jax.random.normal(sub, (31,)), rtol=1e-5, atol=1e-6)


def test_candidate_normals_are_standard_normal():
  key = random_code.leaf_key(1, 'w')
  z = random_code.normals_exact(random_code.candidate_bits(key, np.arange(2000), 7, 50)).ravel()
  assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
  assert abs(np.mean(z**4) - 3) < 0.1  # Normal kurtosis, not uniform's 1.8.
