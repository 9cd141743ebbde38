"""The rate term in training: the priors' bits of noisy latents and the priors' fit.

EPR (Oktay et al. 2020, sec. 2.2) trains on the bits of latents + U(-1/2, 1/2)
under each group's prior (erp.priors): cheap uniform noise, large groups read
from a table of the density, and the priors' gradient fitted to the rounded
latents the file codes (training_bits).
"""
import jax
import jax.numpy as jnp
import numpy as np

from erp.priors import bits_of

def _fmix32(h):
  """MurmurHash3's 32-bit finalizer: every input bit flips each output bit with p ~ 1/2."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def uniform_noise(rng, shape):
  """U(-1/2, 1/2) at 24-bit resolution, from a counter hash seeded by two threefry words.

  The rate's noise only dithers the latents (EPR sec. 2.2), so it needs
  uniform, uncorrelated values, not threefry's cryptographic strength: hashing
  each element's index costs ~1/25 of jax.random's bits on a 2-core CPU
  (266k values: 0.12 ms against 3.0 ms), a quarter of LeNet-300-100's EPR step.
  """
  seed = jax.random.bits(rng, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, int(np.prod(shape))) * jnp.uint32(0x9E3779B1)
  h = _fmix32(_fmix32(index ^ seed[0]) ^ seed[1])
  return (((h >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24)) - 0.5).reshape(shape)


def group_bits(latents, prior_params, rng=None):
  """{group: total bits} of the latents; with rng, at latents + U(-1/2, 1/2) (training)."""
  out = {}
  names = sorted(latents)
  keys = jax.random.split(rng, len(names)) if rng is not None else [None] * len(names)
  for name, key in zip(names, keys):
    x = latents[name]
    if key is not None:
      x = x + uniform_noise(key, x.shape)
    out[name] = bits_of(prior_params[name], x).sum()
  return out


# The table's points are even in asinh(x) over +-2**30 (the largest latent a file
# holds): 0.003 apart near 0, where a sparse layer's spike is, and further apart
# in the tails, where bits change slowly; no outlier can coarsen it.
TABLE_REACH = float(np.arcsinh(2.0**30))


def _table_points(num_points):
  u = -TABLE_REACH + 2 * TABLE_REACH * jnp.arange(num_points, dtype=jnp.float32) / (num_points - 1)
  return jnp.sinh(u)


def _interpolate(table, x):
  """table [m] (values at _table_points(m)) linearly interpolated in asinh(x).

  The table is materialized first: otherwise XLA:CPU fuses the density that
  computes it into the gathers and recomputes it once per latent (measured on
  266k latents: 9.4 ms for the latents' gradient, against 1.1 ms).
  """
  table = table.at[0].set(table[0])  # An in-place update: XLA fuses no producer through it.
  num_points = table.shape[0]
  position = (jnp.arcsinh(x) + TABLE_REACH) * ((num_points - 1) / (2 * TABLE_REACH))
  position = jnp.clip(position, 0.0, num_points - 1.0)
  index = jnp.clip(jnp.floor(jax.lax.stop_gradient(position)).astype(jnp.int32),
                   0, num_points - 2)
  left = table.at[index].get(mode='promise_in_bounds')
  right = table.at[index + 1].get(mode='promise_in_bounds')
  return left + (position - index) * (right - left)


def tabulated_bits(params, x, num_points):
  """Elementwise bits_of(params, x), linearly interpolated from num_points values.

  The points are even in asinh(x) (TABLE_REACH); the gradient to x is the
  interpolant's slope. A 16384-point table on 400k latents costs ~1/10 of
  evaluating the density at each of them, value and gradient (LeNet5, 2-core
  CPU), and its error is far below the bits' own noise, outliers or not
  (tests/test_priors.py). Use it with frozen params: the table carries no
  useful gradient to them.
  """
  return _interpolate(bits_of(params, _table_points(num_points)), x)


def _stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


# The density of G groups at once: params stacked [G, ...], x [G, n]. Each group's
# density fused forward and backward takes XLA ~1.5 s to compile on CPU, so the rate
# evaluates them in a few batched calls, whatever the number of groups.
_batched_bits = jax.vmap(bits_of)


FITS = ('rounded', 'noisy')
FIT_HALF_WIDTH = 512  # fit='rounded' prices the integers [-512, 512) from a histogram.


def training_bits(latents, prior_params, rng, prior_samples, table_points=0, fit='rounded'):
  """{group: bits} at latents + U(-1/2, 1/2); value and gradients for training.

  The value and the latents' gradient take every element at latents + noise
  (EPR sec. 2.2). fit says what the priors' gradient fits:
  * 'rounded': the likelihood of round(latents), the integers the file codes,
    so the priors price the file, not a blurred proxy of it. It is computed
    exactly and cheaply from each group's histogram over [-512, 512) (one
    density evaluation per integer, whatever the group's size; latents
    beyond count at the edge: trained LeNets' stay within +-33, and 512
    rather than 2048 makes LeNet-300-100's fit 2.2x cheaper), with the
    priors frozen in the value's part.
  * 'noisy' (as the paper, after Balle et al. 2018): the mass at the same
    latents + noise, i.e. the unrounded latents' histogram blurred by one bin,
    estimated without bias from `prior_samples` elements per larger group
    (backpropagating into ~60 prior parameters over a whole group cost 4x the
    rest of a LeNet-300-100 step on CPU). Measured on LeNet5: these priors
    priced the file's latents at 1.3-1.7x the bits the coder spent.
  In groups larger than prior_samples, with table_points > 0, the latents'
  part reads the (frozen) density from a table of that many points
  (tabulated_bits). Small groups are evaluated together, zero-padded to the
  largest and masked; the large groups' tables in one call.
  """
  if fit not in FITS:
    raise ValueError(f'unknown prior fit {fit!r}; known: {FITS}')
  names = sorted(latents)
  if not names:
    return {}
  k_noise, k_sample = jax.random.split(rng)
  sizes = [latents[n].size for n in names]
  offsets = np.cumsum([0] + sizes)
  noise = uniform_noise(k_noise, (int(offsets[-1]),))  # One draw for all groups: one compile.
  noisy = {n: latents[n] + noise[offsets[i]:offsets[i + 1]].reshape(latents[n].shape)
           for i, n in enumerate(names)}
  params = {n: prior_params[n] if fit == 'noisy' else jax.lax.stop_gradient(prior_params[n])
            for n in names}
  large = [n for n in names if prior_samples and latents[n].size > prior_samples]
  small = [n for n in names if n not in large]
  out = {}
  if small:
    sizes = [latents[n].size for n in small]
    width = max(sizes)
    mask = (np.arange(width) < np.array(sizes)[:, None]).astype(np.float32)
    x = jnp.stack([jnp.pad(noisy[n].ravel(), (0, width - size)) for n, size in zip(small, sizes)])
    bits = (_batched_bits(_stack([params[n] for n in small]), x) * mask).sum(-1)
    out.update({n: bits[i] for i, n in enumerate(small)})
  if large:
    frozen = jax.lax.stop_gradient(_stack([prior_params[n] for n in large]))
    if table_points:  # Gradient to the latents.
      points = jnp.broadcast_to(_table_points(table_points), (len(large), table_points))
      tables = _batched_bits(frozen, points)
      out.update({n: _interpolate(tables[i], noisy[n]).sum() for i, n in enumerate(large)})
    else:
      out.update({n: bits_of(jax.tree.map(lambda a: a[i], frozen), noisy[n]).sum()
                  for i, n in enumerate(large)})
    if fit == 'noisy':  # The priors' gradient, from samples.
      maxval = np.array([latents[n].size for n in large], np.int32)[:, None]
      idx = jax.random.randint(k_sample, (len(large), prior_samples), 0, maxval)
      x = jnp.stack([jax.lax.stop_gradient(noisy[n].ravel()[idx[i]]) for i, n in enumerate(large)])
      estimates = _batched_bits(_stack([prior_params[n] for n in large]), x).sum(-1)
      for i, n in enumerate(large):
        estimate = estimates[i] * (latents[n].size / prior_samples)
        out[n] = out[n] + estimate - jax.lax.stop_gradient(estimate)
  if fit == 'rounded':
    fit_bits = rounded_bits(latents, prior_params, names)
    out = {n: out[n] + fit_bits[i] - jax.lax.stop_gradient(fit_bits[i])
           for i, n in enumerate(names)}
  return out


def rounded_bits(latents, prior_params, names):
  """[len(names)] bits of round(latents) under each group's prior, from histograms over
  [-FIT_HALF_WIDTH, FIT_HALF_WIDTH) (values beyond count at the edges); gradient to the
  priors only."""
  half = FIT_HALF_WIDTH
  hists = jnp.stack([
      jnp.bincount(jnp.clip(jnp.round(jax.lax.stop_gradient(latents[n])).astype(jnp.int32)
                            .ravel() + half, 0, 2 * half - 1), length=2 * half)
      for n in names]).astype(jnp.float32)
  points = jnp.broadcast_to(jnp.arange(-half, half, dtype=jnp.float32), hists.shape)
  return (_batched_bits(_stack([prior_params[n] for n in names]), points) * hists).sum(-1)
