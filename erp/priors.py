"""Learned density models for the integer latents, and their bits.

The "deep factorized" non-parametric density of Ballé, Minnen, Singh, Hwang,
Johnston, "Variational image compression with a scale hyperprior" (ICLR 2018),
appendix 6.1: a cumulative c(x) = sigmoid(f_K(...f_1(x))) built from small
monotone layers, one scalar density per parameter group, shared by the group's
elements. The probability mass of integer k is c(k + 1/2) - c(k - 1/2), so
bits(k) = -log2 of it; during training it is evaluated at latent + U(-1/2, 1/2)
noise, which fits the density to the integer grid (EPR, sec. 2.2).
"""
import jax
import jax.numpy as jnp
import numpy as np

# Smallest probability mass used in bits, so one outlier cannot give infinite bits.
MIN_PROBABILITY = 1e-9


def init(rng, filters=(3, 3, 3), init_scale=10.0):
  """Parameters of one deep factorized density; initially a logistic of width ~init_scale."""
  dims = (1,) + tuple(filters) + (1,)
  scale = init_scale**(1.0 / (len(filters) + 1))
  params = {}
  keys = jax.random.split(rng, len(dims) - 1)
  for i in range(len(dims) - 1):
    fan_out, fan_in = dims[i + 1], dims[i]
    raw = np.log(np.expm1(1.0 / scale / fan_out))
    params[f'matrix_{i}'] = jnp.full((fan_out, fan_in), raw, jnp.float32)
    params[f'bias_{i}'] = jax.random.uniform(keys[i], (fan_out, 1), jnp.float32, -0.5, 0.5)
    if i < len(dims) - 2:
      params[f'factor_{i}'] = jnp.zeros((fan_out, 1), jnp.float32)
  return params


def _num_layers(params):
  return sum(1 for k in params if k.startswith('matrix_'))


def logits_cumulative(params, x):
  """f_K(...f_1(x)): the logit of the cumulative at x (any shape -> same shape).

  The layers are a few channels wide, so each is written as elementwise
  multiply-adds over channels (a list of x-shaped arrays) rather than a [3, 3]
  matmul: XLA then fuses the whole density into one pass over the latents
  (about 10x faster on CPU than dots, which block fusion).
  """
  h = [x]
  n = _num_layers(params)
  for i in range(n):
    matrix = jax.nn.softplus(params[f'matrix_{i}'])  # [out, in], positive: monotone.
    bias = params[f'bias_{i}']
    h = [sum(matrix[j, k] * h[k] for k in range(len(h))) + bias[j, 0]
         for j in range(matrix.shape[0])]
    if i < n - 1:
      factor = jnp.tanh(params[f'factor_{i}'])
      h = [hj + factor[j, 0] * jnp.tanh(hj) for j, hj in enumerate(h)]
  return h[0]


def probability_mass(params, x):
  """c(x + 1/2) - c(x - 1/2), computed on the side of the sigmoid where it is accurate."""
  lower = logits_cumulative(params, x - 0.5)
  upper = logits_cumulative(params, x + 0.5)
  sign = jax.lax.stop_gradient(-jnp.sign(lower + upper))
  return jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))


def bits_of(params, x):
  """Elementwise -log2 p(x) under one density (x: latents, or latents + noise)."""
  p = jnp.maximum(probability_mass(params, x), MIN_PROBABILITY)
  return -jnp.log2(p)


_probability_mass = jax.jit(probability_mass)


def mass_at(params, points):
  """float64 probability mass at concrete points [n], outside any trace.

  The points are padded to a power of two (edge values, then dropped), so the
  jitted density compiles for a few sizes rather than one per call.
  """
  points = np.asarray(points, np.float32).ravel()
  size = 1 << max(len(points) - 1, 1).bit_length()
  padded = np.pad(points, (0, size - len(points)), mode='edge') if len(points) else \
      np.zeros(size, np.float32)
  return np.asarray(_probability_mass(params, jnp.asarray(padded)), np.float64)[:len(points)]


def integer_bits(params, latent):
  """Total bits of round(latent) (concrete), from its histogram: the density is evaluated
  once per distinct integer (mass_at), so reporting the rate of a large model takes
  milliseconds, not an XLA compile of it."""
  values, counts = np.unique(np.round(np.asarray(latent, np.float32)), return_counts=True)
  bits = -np.log2(np.maximum(mass_at(params, values), MIN_PROBABILITY))
  return float(np.dot(bits, counts))


def uniform_noise(rng, shape):
  """U(-1/2, 1/2) at 16-bit resolution: 3.5x cheaper than float32 uniforms on CPU."""
  bits = jax.random.bits(rng, shape, jnp.uint16)
  return (bits.astype(jnp.float32) + 0.5) / 65536.0 - 0.5


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


@jax.jit
def _bisect(params, target_logit):
  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = logits_cumulative(params, mid) < target_logit
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)
  lo, hi = jax.lax.fori_loop(0, 60, body, (jnp.float32(-2.0**20), jnp.float32(2.0**20)))
  return 0.5 * (lo + hi)


def _grid(x, num_points):
  """(lo, hi, grid [num_points]): an even grid over [min(x), max(x)] (at least 1 wide)."""
  lo = jax.lax.stop_gradient(x.min())
  hi = jnp.maximum(jax.lax.stop_gradient(x.max()), lo + 1.0)
  return lo, hi, lo + (hi - lo) * jnp.arange(num_points, dtype=jnp.float32) / (num_points - 1)


def _interpolate(table, lo, hi, x):
  """table [m] (values on _grid's points) linearly interpolated at x; slope as gradient."""
  num_points = table.shape[0]
  position = (x - lo) * ((num_points - 1) / (hi - lo))
  index = jnp.clip(jnp.floor(jax.lax.stop_gradient(position)).astype(jnp.int32),
                   0, num_points - 2)
  left = table.at[index].get(mode='promise_in_bounds')
  right = table.at[index + 1].get(mode='promise_in_bounds')
  return left + (position - index) * (right - left)


def tabulated_bits(params, x, num_points):
  """Elementwise bits_of(params, x), linearly interpolated from num_points values.

  The table spans [min(x), max(x)] on an even grid; the gradient to x is the
  slope of the interpolant. A 16384-point table on 400k latents costs ~1/10 of
  evaluating the density at each of them, value and gradient (LeNet5, 2-core
  CPU), and its error is far below the bits' own noise (tests/test_priors.py).
  Use it with frozen params: the table carries no useful gradient to them.
  """
  lo, hi, grid = _grid(x, num_points)
  return _interpolate(bits_of(params, grid), lo, hi, x)


def _stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


# The density of G groups at once: params stacked [G, ...], x [G, n]. Each group's
# density fused forward and backward takes XLA ~1.5 s to compile on CPU, so the rate
# evaluates them in a few batched calls, whatever the number of groups.
_batched_bits = jax.vmap(bits_of)


def training_bits(latents, prior_params, rng, prior_samples, table_points=0):
  """{group: bits} at latents + U(-1/2, 1/2), with a cheaper gradient for the priors.

  The value and the latents' gradient use every element. The priors' gradient
  is estimated, unbiased, from `prior_samples` elements drawn per group (all
  when the group is smaller or prior_samples is 0): backpropagating into the
  prior's ~60 parameters needs one reduction over the group per parameter,
  which cost 4x more than everything else in a LeNet-300-100 step on CPU.
  In those large groups, with table_points > 0, the latents' part reads the
  (frozen) density from a table of that many points (tabulated_bits).
  The small groups are evaluated together, zero-padded to the largest of them
  and masked; the large groups' tables and samples in one call each.
  """
  names = sorted(latents)
  k_noise, k_sample = jax.random.split(rng)
  sizes = [latents[n].size for n in names]
  offsets = np.cumsum([0] + sizes)
  noise = uniform_noise(k_noise, (int(offsets[-1]),))  # One draw for all groups: one compile.
  noisy = {n: latents[n] + noise[offsets[i]:offsets[i + 1]].reshape(latents[n].shape)
           for i, n in enumerate(names)}
  large = [n for n in names if prior_samples and latents[n].size > prior_samples]
  samples = {}
  if large:
    maxval = np.array([latents[n].size for n in large], np.int32)[:, None]
    idx = jax.random.randint(k_sample, (len(large), prior_samples), 0, maxval)
    samples = {n: jax.lax.stop_gradient(noisy[n].ravel()[idx[i]]) for i, n in enumerate(large)}
  out = {}
  small = [n for n in names if n not in samples]
  if small:
    sizes = [latents[n].size for n in small]
    width = max(sizes)
    x = jnp.stack([jnp.pad(noisy[n].ravel(), (0, width - size)) for n, size in zip(small, sizes)])
    mask = (np.arange(width) < np.array(sizes)[:, None]).astype(np.float32)
    bits = (_batched_bits(_stack([prior_params[n] for n in small]), x) * mask).sum(-1)
    out.update({n: bits[i] for i, n in enumerate(small)})
  if large:
    stacked = _stack([prior_params[n] for n in large])
    frozen = jax.lax.stop_gradient(stacked)
    if table_points:  # Gradient to the latents.
      grids = [_grid(noisy[n], table_points) for n in large]
      tables = _batched_bits(frozen, jnp.stack([g for _, _, g in grids]))
      full = [_interpolate(tables[i], lo, hi, noisy[n]).sum()
              for i, (n, (lo, hi, _)) in enumerate(zip(large, grids))]
    else:
      full = [bits_of(jax.tree.map(lambda a: a[i], frozen), noisy[n]).sum()
              for i, n in enumerate(large)]
    estimates = _batched_bits(stacked, jnp.stack([samples[n] for n in large])).sum(-1)
    for i, n in enumerate(large):
      estimate = estimates[i] * (latents[n].size / prior_samples)
      out[n] = full[i] + estimate - jax.lax.stop_gradient(estimate)
  return out


def quantile(params, q):
  """x with c(x) = q, by bisection on the monotone cumulative (for table ranges)."""
  return float(_bisect(params, jnp.float32(np.log(q) - np.log1p(-q))))
