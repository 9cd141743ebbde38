"""Minimal random coding of Gaussian weight blocks (MIRACLE's code), replayed by the loader.

Havasi, Peharz, Hernandez-Lobato, "Minimal Random Code Learning: Getting Bits
Back from Compressed Model Parameters" (ICLR 2019, arXiv 1810.00440).

A leaf of n weights is held as num_vars = ceil(n / hash_group) variables, the
hashing trick (Chen et al. 2015): weight j = sign_j * v[bucket_j], the buckets
(as equal as possible) and signs drawn from the file's seed. The variables are
padded to num_blocks * block_size and cut into consecutive blocks; since the
buckets are random, a block holds weights from all over the leaf.

Block b is sent as one index k < 2**bits. Candidate k is sigma_p * z, with
z ~ N(0, I[block_size]) drawn from the key (seed, leaf path, b, k) (see
candidate_bits and normals_exact) and sigma_p the leaf's encoding scale: the
candidates are samples of the encoding distribution p = N(0, sigma_p^2). The
encoder draws k with probability proportional to q(w_k) / p(w_k), an
importance sample of the variational posterior q, so each block costs
exactly `bits` bits (about KL(q||p) when the training budget holds) and the
decoder needs only (seed, sigma_p, indices).

Section layout: seed, num_vars, block_size, bits (varints), log sigma_p
(float32), then the indices as num_blocks * bits bits, most significant first,
zero-padded to a byte.
"""
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from erp import coding
from erp import container
from erp import exact
from erp.errors import ErpError

NAME = 'miracle'
SECTION = container.GROUP
MAX_BITS = 24  # 2**24 candidates per block is already far beyond what encoding can afford.
MAX_SEED = (1 << 32) - 1  # The key (0, seed) holds 32 bits.
MAX_BLOCK_SIZE = 4096  # The paper's blocks hold ~30 variables.


def num_blocks(num_vars, block_size):
  return -(-num_vars // block_size)


def _threefry2x32(k0, k1, x0, x1):
  """Threefry-2x32, 20 rounds (Salmon et al. 2011), on uint32 NumPy or JAX arrays.

  The counter-based generator of jax.random, restated here so that a file's
  candidates are fixed by this code and not by the installed JAX.
  """
  with np.errstate(over='ignore'):  # uint32 arithmetic wraps, as Threefry intends.
    ks = [k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA)]
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
      for r in ((13, 15, 26, 6), (17, 29, 16, 24))[i % 2]:
        x0 = x0 + x1
        x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
      x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _fold_in(key, data):
  """jax.random.fold_in's key derivation: the key's hash of the counter (0, data)."""
  return _threefry2x32(key[0], key[1], data * np.uint32(0), data)


def leaf_key(seed, path):
  """The key (k0, k1) of one leaf: the file's seed folded with a checksum of the leaf's path.

  Equal to jax.random.fold_in(jax.random.PRNGKey(seed), crc32(path) & 0x7FFFFFFF).
  """
  key = (np.uint32(0), np.uint32(seed))
  return tuple(np.uint32(v) for v in _fold_in(
      key, np.array(zlib.crc32(path.encode()) & 0x7FFFFFFF, np.uint32)))


def candidate_bits(key, blocks, indices, block_size, xp=np):
  """uint32 [..., block_size] random bits of candidates `indices` of `blocks` (broadcast).

  The bits of jax.random.normal(fold_in(fold_in(fold_in(key, 1), block), index),
  (block_size,)) with JAX's partitionable Threefry (jax >= 0.5 default).
  """
  blocks, indices = xp.asarray(blocks, xp.uint32), xp.asarray(indices, xp.uint32)
  k = _fold_in(key, xp.ones_like(blocks))
  k = _fold_in(k, blocks)
  k = _fold_in((k[0] + indices * np.uint32(0), k[1] + indices * np.uint32(0)), indices)
  counter = xp.arange(block_size, dtype=xp.uint32)
  b0, b1 = _threefry2x32(k[0][..., None], k[1][..., None], counter * np.uint32(0), counter)
  return b0 ^ b1


def _open_interval(bits, xp):
  """float32 u in (-1, 1) from 23 random bits, as jax.random.uniform(lo=-1+2**-24, hi=1)."""
  unit = xp.asarray((bits >> np.uint32(9)) | np.uint32(0x3F800000)).view(xp.float32) - 1
  lo = np.nextafter(np.float32(-1), np.float32(0))
  return xp.maximum(lo, unit * np.float32(2) + lo)  # 2 = hi - lo in float32; exact product.


def _erfinv_poly(x, w, xp):
  """Giles' single-precision erfinv (Giles 2010, "Approximating the erfinv function").

  w = -ln(1 - x^2); the same polynomial in NumPy float64 or JAX float32 (xp).
  """
  central = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
             -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
  tail = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
          -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]
  small = w < 5
  t = xp.where(small, w - 2.5, xp.sqrt(xp.maximum(w, 5)) - 3)
  p = xp.where(small, central[0], tail[0]) + 0 * t  # Broadcast to t's shape.
  for c, d in zip(central[1:], tail[1:]):
    p = xp.where(small, c, d) + p * t
  return p * x


def normals_exact(bits):
  """float32 N(0, 1) samples of uint32 bits: the decoder's, the same on every machine.

  sqrt(2) erfinv(u) in float64 (erp.exact's log; sqrt is correctly rounded), rounded
  to float32 once. Within a few float32 ulps of jax.random.normal on the same bits.
  """
  u = _open_interval(np.asarray(bits, np.uint32), np).astype(np.float64)
  w = -exact.log((1 - u) * (1 + u))
  return (np.float64(np.float32(np.sqrt(2))) * _erfinv_poly(u, w, np)).astype(np.float32)


def _normals_f32(bits):
  """normals_exact in float32 JAX arithmetic, for the encoder's search over candidates."""
  u = _open_interval(bits, jnp)
  w = -jnp.log((1 - u) * (1 + u))
  return np.float32(np.sqrt(2)) * _erfinv_poly(u, w, jnp)


def _splitmix64(x):
  """SplitMix64's output function on uint64 arrays: integer-exact on every platform."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def hashing(seed, path, n, num_vars):
  """(rank int32 [n], sign float32 [n]): weight j = sign[j] * variable[rank[j] % num_vars].

  rank is a random permutation (buckets differ in size by at most one), drawn
  with integer hashing of (seed, path, j) so it is the same on every machine.
  """
  if not 1 <= num_vars <= n:
    raise ErpError(f'need 1 <= num_vars <= n; got {num_vars} variables for {n} weights')
  with np.errstate(over='ignore'):  # uint64 arithmetic wraps, as SplitMix64 intends.
    base = _splitmix64(np.uint64(seed) ^ (np.uint64(zlib.crc32(path.encode())) << np.uint64(32)))
    h = _splitmix64(base + np.arange(n, dtype=np.uint64))
    rank = np.argsort(h, kind='stable').astype(np.int32)
    sign = np.where(_splitmix64(h) >> np.uint64(63), np.float32(1), np.float32(-1))
  return rank, sign


def _block_logits(key, block, mu, sigma, scale, bits):
  """log q(w_k) - log p(w_k) + const for every candidate k of one block."""
  z = _normals_f32(candidate_bits(key, block, jnp.arange(2**bits), mu.shape[0], jnp))
  w = scale * z
  return -jnp.sum(jnp.square((w - mu) / sigma), -1) / 2 + jnp.sum(jnp.square(z), -1) / 2


def _cyclic_index(g, minimum=1):
  """Indices [size] that repeat 0..g-1 up to a power of two >= minimum (g >= 1).

  Batches padded this way reuse a few compiled shapes; the repeats are dropped.
  """
  return np.arange(max(minimum, 1 << (g - 1).bit_length())) % g


def choose(key, blocks, mu, sigma, scale, bits, rng):
  """Indices int32 [g] of g >= 1 blocks: k ~ q(w_k)/p(w_k) over the 2**bits candidates.

  blocks int32 [g], mu and sigma [g, block_size], scale = sigma_p (scalar).
  """
  pad = _cyclic_index(len(blocks))
  logits = _batched_logits(key, np.asarray(blocks)[pad], mu[pad], sigma[pad], scale, bits)
  return np.asarray(jax.random.categorical(rng, logits, axis=-1), np.int32)[:len(blocks)]


_batched_logits = jax.jit(jax.vmap(_block_logits, in_axes=(None, 0, 0, 0, None, None)),
                          static_argnums=5)


def block_values(key, blocks, indices, block_size, scale):
  """float32 [g, block_size]: the variables that indices [g] select in blocks [g].

  NumPy (normals_exact), in chunks of about 2**20 values: the decoded weights
  are bit-identical on every machine, without compiling anything.
  """
  blocks, indices = np.asarray(blocks), np.asarray(indices)
  out = np.empty((len(blocks), block_size), np.float32)
  size = max((1 << 20) // block_size, 1)
  for start in range(0, len(blocks), size):
    part = slice(start, start + size)
    out[part] = np.float32(scale) * normals_exact(
        candidate_bits(key, blocks[part], indices[part], block_size))
  return out


def scale_of(log_scale):
  """sigma_p as encoder and decoder both compute it from the stored float32 log (erp.exact)."""
  with np.errstate(over='ignore'):  # An overflowing scale decodes to inf, which is refused.
    return np.float32(exact.exp(np.float64(np.float32(log_scale))))


def weights(variables, num_vars, rank, sign, shape):
  """A leaf's weights [shape] from its variables (flat, at least num_vars long)."""
  values = np.asarray(variables, np.float32).ravel()[:num_vars]
  return (values[rank % num_vars] * sign).reshape(shape)


def kl_nats(mu, sigma, scale):
  """Elementwise KL(N(mu, sigma^2) || N(0, scale^2)) in nats."""
  return jnp.log(scale / sigma) + (jnp.square(sigma) + jnp.square(mu)) / (2 * jnp.square(scale)) - 0.5


def encode_leaf(seed, num_vars, block_size, bits, log_scale, indices):
  """Section payload bytes of one leaf from its sent indices [num_blocks]."""
  indices = np.asarray(indices, np.int64)
  if not (0 <= seed <= MAX_SEED and 1 <= block_size <= MAX_BLOCK_SIZE):
    raise ValueError(f'need 0 <= seed <= {MAX_SEED} and 1 <= block_size <= {MAX_BLOCK_SIZE}; '
                     f'got {seed}, {block_size}')
  if len(indices) != num_blocks(num_vars, block_size) or not 1 <= bits <= MAX_BITS:
    raise ValueError(f'{len(indices)} indices for {num_vars} variables in blocks of '
                     f'{block_size} at {bits} bits')
  if indices.size and (indices.min() < 0 or indices.max() >= 2**bits):
    raise ValueError(f'indices must lie in [0, 2**{bits})')
  w = container.Writer().varint(seed).varint(num_vars).varint(block_size).varint(bits)
  w.f32(np.float32(log_scale))
  bit_matrix = (indices[:, None] >> np.arange(bits - 1, -1, -1)) & 1
  return w.raw(np.packbits(bit_matrix.astype(np.uint8).ravel()).tobytes()).getvalue()


def read_leaf(payload, n, what='miracle group'):
  """(seed, num_vars, block_size, bits, log_scale, indices int64) of a section, checked."""
  r = container.Reader(payload, what)
  seed, num_vars = r.varint(MAX_SEED), r.varint(n)
  block_size, bits = r.varint(MAX_BLOCK_SIZE), r.varint(MAX_BITS)
  if num_vars < 1 or block_size < 1 or bits < 1:
    raise ErpError(f'{what}: invalid layout ({num_vars} variables, blocks of {block_size}, '
                   f'{bits} bits)')
  log_scale = float(r.f32(1)[0])
  if not math.isfinite(log_scale):
    raise ErpError(f'{what}: encoding scale is not finite')
  count = num_blocks(num_vars, block_size)
  packed = np.frombuffer(r.raw(-(-count * bits // 8)), np.uint8)
  r.done()
  bit_matrix = np.unpackbits(packed)[:count * bits].reshape(count, bits).astype(np.int64)
  indices = bit_matrix @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
  return seed, num_vars, block_size, bits, log_scale, indices


def decode_leaf(payload, shape, path):
  """float32 weights [shape] of one MIRACLE section: hashing, candidates, indices replayed."""
  n = int(np.prod(shape))
  seed, num_vars, block_size, bits, log_scale, indices = read_leaf(
      payload, n, f'miracle group {path}')
  key = leaf_key(seed, path)
  values = block_values(key, np.arange(len(indices)), indices, block_size, scale_of(log_scale))
  rank, sign = hashing(seed, path, n, num_vars)
  return weights(values, num_vars, rank, sign, shape)


WORK_PER_WEIGHT = 3  # Hashing sorts a 64-bit hash per weight: ~3 values' worth of memory.


def work(payload, leaf):
  """Values' worth of memory decoding allocates beyond the leaf (erp.file's budget)."""
  del payload
  return WORK_PER_WEIGHT * math.prod(leaf.shape)


def read(payload, leaf):
  return decode_leaf(payload, tuple(leaf.shape), leaf.path)


def describe(payload, leaf, value):
  """The whole section is the code; value: what read() decoded from it."""
  return coding.code_stats(8 * len(payload), value)
