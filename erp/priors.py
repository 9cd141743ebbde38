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


_bits_of = jax.jit(bits_of)


def integer_bits(params, latent):
  """Total bits of round(latent) (concrete), from its histogram: the density is evaluated
  once per distinct integer, padded to a power of two (few small compilations), so
  reporting the rate of a large model takes milliseconds, not an XLA compile of it."""
  values, counts = np.unique(np.round(np.asarray(latent, np.float32)), return_counts=True)
  padded = np.zeros(1 << max(len(values) - 1, 1).bit_length(), np.float32)
  padded[:len(values)] = values
  bits = np.asarray(_bits_of(params, jnp.asarray(padded)), np.float64)[:len(values)]
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


def tabulated_bits(params, x, num_points):
  """Elementwise bits_of(params, x), linearly interpolated from num_points values.

  The table spans [min(x), max(x)] on an even grid; the gradient to x is the
  slope of the interpolant. A 16384-point table on 400k latents costs ~1/10 of
  evaluating the density at each of them, value and gradient (LeNet5, 2-core
  CPU), and its error is far below the bits' own noise (tests/test_priors.py).
  Use it with frozen params: the table carries no useful gradient to them.
  """
  lo = jax.lax.stop_gradient(x.min())
  hi = jnp.maximum(jax.lax.stop_gradient(x.max()), lo + 1.0)
  grid = lo + (hi - lo) * jnp.arange(num_points, dtype=jnp.float32) / (num_points - 1)
  table = bits_of(params, grid)
  position = (x - lo) * ((num_points - 1) / (hi - lo))
  index = jnp.clip(jnp.floor(jax.lax.stop_gradient(position)).astype(jnp.int32),
                   0, num_points - 2)
  left = table.at[index].get(mode='promise_in_bounds')
  right = table.at[index + 1].get(mode='promise_in_bounds')
  return left + (position - index) * (right - left)


def training_bits(latents, prior_params, rng, prior_samples, table_points=0):
  """{group: bits} at latents + U(-1/2, 1/2), with a cheaper gradient for the priors.

  The value and the latents' gradient use every element. The priors' gradient
  is estimated, unbiased, from `prior_samples` elements drawn per group (all
  when the group is smaller or prior_samples is 0): backpropagating into the
  prior's ~60 parameters needs one reduction over the group per parameter,
  which cost 4x more than everything else in a LeNet-300-100 step on CPU.
  In those large groups, with table_points > 0, the latents' part reads the
  (frozen) density from a table of that many points (tabulated_bits).
  """
  out = {}
  frozen = jax.lax.stop_gradient(prior_params)
  names = sorted(latents)
  for name, key in zip(names, jax.random.split(rng, len(names))):
    k_noise, k_sample = jax.random.split(key)
    x = latents[name]
    noisy = x + uniform_noise(k_noise, x.shape)
    if not prior_samples or x.size <= prior_samples:
      out[name] = bits_of(prior_params[name], noisy).sum()
      continue
    if table_points:  # Gradient to the latents.
      full = tabulated_bits(frozen[name], noisy, table_points).sum()
    else:
      full = bits_of(frozen[name], noisy).sum()
    idx = jax.random.randint(k_sample, (prior_samples,), 0, x.size)
    sample = jax.lax.stop_gradient(noisy.ravel()[idx])
    estimate = bits_of(prior_params[name], sample).sum() * (x.size / prior_samples)
    out[name] = full + estimate - jax.lax.stop_gradient(estimate)
  return out


def quantile(params, q):
  """x with c(x) = q, by bisection on the monotone cumulative (for table ranges)."""
  return float(_bisect(params, jnp.float32(np.log(q) - np.log1p(-q))))
