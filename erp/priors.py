"""Learned density models for the integer latents, and their bits.

The "deep factorized" non-parametric density of Balle, Minnen, Singh, Hwang,
Johnston, "Variational image compression with a scale hyperprior" (ICLR 2018),
appendix 6.1: a cumulative c(x) = sigmoid(f_K(...f_1(x))) built from small
monotone layers, one scalar density per parameter group, shared by the group's
elements. The probability mass of integer k is c(k + 1/2) - c(k - 1/2), so
bits(k) = -log2 of it; during training it is evaluated at latent + U(-1/2, 1/2)
noise, which fits the density to the integer grid (EPR, sec. 2.2).

erp mixes it with a small learned weight of a Cauchy density: sigmoid tails
decay exponentially, and a sparse layer's latents (a spike at 0, a few
surviving weights out to +-20) were priced at 60 bits each in the tails where
the file spends ~15 (measured on LeNet5: the deep factorized density alone,
fitted to convergence, priced a 400k-latent layer at 1.34x its entropy; the
mixture, at 1.03x).
"""
import jax
import jax.numpy as jnp
import numpy as np

# Smallest probability mass used in bits, so one outlier cannot give infinite bits.
MIN_PROBABILITY = 1e-9


def init(rng, filters=(3, 3, 3), init_scale=10.0, spikes=0):
  """Parameters of one density; initially ~ a logistic of width ~init_scale.

  spikes > 0 adds a third mixture component: a categorical over the integers
  -spikes..spikes (see probability_mass).
  """
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
  params['tail_logit'] = jnp.float32(-4.0)  # Weight of the Cauchy tail: sigmoid(-4) ~ 2 %.
  params['tail_log_scale'] = jnp.float32(np.log(init_scale / 4))  # Scale 1/2 + exp(.).
  if spikes:
    params['spike_logit'] = jnp.float32(-4.0)  # Weight of the categorical: ~2 %,
    params['spike_logits'] = jnp.zeros(2 * spikes + 1, jnp.float32)  # initially uniform.
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


def _logits_cumulative_on_grid(params, x):
  """logits_cumulative at a grid x [n], each layer one [out, in] @ [in, n] matmul.

  On a grid of a few hundred points (the priors' fit, every training step) the
  elementwise form's gradient to the params is a few reductions per matrix
  entry: ~170 XLA ops, each costing more to launch than to run on a CPU; this
  form's, ~60 (2-core CPU: 0.28 ms against 0.47 ms for six groups).
  """
  h = x[None, :]
  n = _num_layers(params)
  for i in range(n):
    matrix = jax.nn.softplus(params[f'matrix_{i}'])
    h = jnp.matmul(matrix, h, precision=jax.lax.Precision.HIGHEST) + params[f'bias_{i}']
    if i < n - 1:
      h = h + jnp.tanh(params[f'factor_{i}']) * jnp.tanh(h)
  return h[0]


def probability_mass(params, x):
  """Mass of [x - 1/2, x + 1/2] under the mixture (1 - w) deep factorized + w Cauchy.

  The deep factorized part is c(x + 1/2) - c(x - 1/2), computed on the side of
  the sigmoid where it is accurate (a tie, lower + upper == 0, takes the upper
  side: jnp.sign would give 0 there, and a probability of 0). The Cauchy part,
  arctan((x + 1/2) / s) - arctan((x - 1/2) / s), as one arctan, which keeps
  its precision far in the tails.
  """
  return _mass(params, x, logits_cumulative(params, x - 0.5),
               logits_cumulative(params, x + 0.5))


def integer_grid_bits(params, lowest, num):
  """bits_of at the integers lowest .. lowest + num - 1 (concrete ints).

  The cumulative is evaluated once on the num + 1 half-integers between them,
  each shared by two neighbours: half probability_mass's graph, which halves
  the XLA compile of the priors' fit (its gradient), the slowest part of a
  training step's compile on CPU. Equal to bits_of there within float rounding
  (_logits_cumulative_on_grid).
  """
  edges = _logits_cumulative_on_grid(
      params, jnp.arange(num + 1, dtype=jnp.float32) + (lowest - 0.5))
  return _bits_of_mass(
      _mass(params, jnp.arange(num, dtype=jnp.float32) + lowest, edges[:-1], edges[1:]))


def _mass(params, x, lower, upper):
  """probability_mass from the deep factorized logits at x - 1/2 (lower) and x + 1/2."""
  sign = jax.lax.stop_gradient(jnp.where(lower + upper > 0, -1.0, 1.0))
  factorized = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
  weight, excess = _tail(params)  # scale = 1/2 + excess > 1/2: the one arctan is exact.
  # scale**2 - 1/4 written as excess (1 + excess): no cancellation when a prior narrows
  # its Cauchy part onto 0 (excess -> 0), where scale**2 - 0.25 rounded to 0 in float32
  # and the priors' gradient became NaN (a LeNet5 run, after 18k steps).
  cauchy = jnp.arctan((0.5 + excess) / (excess * (1 + excess) + x * x)) / jnp.pi
  mass = (1 - weight) * factorized + weight * cauchy
  if 'spike_logits' not in params:
    return mass
  # The categorical's density is m_k on [k - 1/2, k + 1/2), so the mass of
  # [x - 1/2, x + 1/2] interpolates linearly between the integers around x: at
  # an integer it is m_k exactly, and the latents' gradient is its slope.
  spike = jax.nn.sigmoid(params['spike_logit'])
  padded = _spike_masses(params)
  below = jnp.floor(x)
  t = x - below
  return (1 - spike) * mass + spike * ((1 - t) * _spike_at(padded, below) +
                                       t * _spike_at(padded, below + 1))


def _spike_masses(params):
  """The categorical's masses with a zero on each side: [0, m_-K, ..., m_K, 0]."""
  return jnp.pad(jax.nn.softmax(params['spike_logits']), 1)


def _spike_index(padded, k):
  """(index into padded of integer k (float array), clipped to its zero ends; K)."""
  half = (padded.shape[0] - 3) // 2
  return jnp.clip(k + half + 1, 0, padded.shape[0] - 1).astype(jnp.int32), half


def _spike_at(padded, k):
  """padded's mass at integer k (float array; 0 outside -K..K)."""
  return padded.at[_spike_index(padded, k)[0]].get(mode='promise_in_bounds')


def _tail(params):
  """(weight, excess) of the Cauchy part, whose scale is 1/2 + excess."""
  return jax.nn.sigmoid(params['tail_logit']), jnp.exp(params['tail_log_scale'])


def bits_of(params, x):
  """Elementwise -log2 p(x) under one density (x: latents, or latents + noise)."""
  return _bits_of_mass(probability_mass(params, x))


def _bits_of_mass(p):
  return -jnp.log2(jnp.maximum(p, MIN_PROBABILITY))


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


def cumulative(params, x):
  """The mixture's cumulative at x: (1 - w) sigmoid(f(x)) + w (1/2 + arctan(x / s) / pi),
  and with spikes, mixed with the categorical's (piecewise linear) cumulative."""
  weight, excess = _tail(params)
  out = ((1 - weight) * jax.nn.sigmoid(logits_cumulative(params, x))
         + weight * (0.5 + jnp.arctan(x / (0.5 + excess)) / jnp.pi))
  if 'spike_logits' not in params:
    return out
  spike = jax.nn.sigmoid(params['spike_logit'])
  padded = _spike_masses(params)
  nearest = jnp.floor(x + 0.5)
  below = jnp.concatenate([jnp.zeros(1), jnp.cumsum(padded)])  # Mass below each entry.
  index, half = _spike_index(padded, nearest)
  categorical = below[index] + padded[index] * (x - (nearest - 0.5))
  categorical = jnp.where(nearest < -half, 0.0, jnp.where(nearest > half, 1.0, categorical))
  return (1 - spike) * out + spike * categorical


@jax.jit
def _bisect(params, q):
  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = cumulative(params, mid) < q
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)
  lo, hi = jax.lax.fori_loop(0, 60, body, (jnp.float32(-2.0**30), jnp.float32(2.0**30)))
  return 0.5 * (lo + hi)


def quantile(params, q):
  """x with cumulative(x) = q, by bisection (for table ranges)."""
  return float(_bisect(params, jnp.float32(q)))
