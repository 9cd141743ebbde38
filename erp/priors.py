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


def probability_mass(params, x):
  """Mass of [x - 1/2, x + 1/2] under the mixture (1 - w) deep factorized + w Cauchy.

  The deep factorized part is c(x + 1/2) - c(x - 1/2), computed on the side of
  the sigmoid where it is accurate (a tie, lower + upper == 0, takes the upper
  side: jnp.sign would give 0 there, and a probability of 0). The Cauchy part,
  arctan((x + 1/2) / s) - arctan((x - 1/2) / s), as one arctan, which keeps
  its precision far in the tails.
  """
  lower = logits_cumulative(params, x - 0.5)
  upper = logits_cumulative(params, x + 0.5)
  sign = jax.lax.stop_gradient(jnp.where(lower + upper > 0, -1.0, 1.0))
  factorized = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
  weight, scale = _tail(params)  # scale > 1/2: the one arctan is then exact.
  cauchy = jnp.arctan(scale / (scale * scale + x * x - 0.25)) / jnp.pi
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


def _spike_at(padded, k):
  """padded's mass at integer k (float array; 0 outside -K..K)."""
  half = (padded.shape[0] - 3) // 2
  index = jnp.clip(k + half + 1, 0, padded.shape[0] - 1).astype(jnp.int32)
  return padded.at[index].get(mode='promise_in_bounds')


def _tail(params):
  """(weight, scale) of the Cauchy part."""
  return jax.nn.sigmoid(params['tail_logit']), 0.5 + jnp.exp(params['tail_log_scale'])


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


def cumulative(params, x):
  """The mixture's cumulative at x: (1 - w) sigmoid(f(x)) + w (1/2 + arctan(x / s) / pi),
  and with spikes, mixed with the categorical's (piecewise linear) cumulative."""
  weight, scale = _tail(params)
  out = ((1 - weight) * jax.nn.sigmoid(logits_cumulative(params, x))
         + weight * (0.5 + jnp.arctan(x / scale) / jnp.pi))
  if 'spike_logits' not in params:
    return out
  spike = jax.nn.sigmoid(params['spike_logit'])
  padded = _spike_masses(params)
  nearest = jnp.floor(x + 0.5)
  below = jnp.concatenate([jnp.zeros(1), jnp.cumsum(padded)])  # Mass below each entry.
  half = (padded.shape[0] - 3) // 2
  index = jnp.clip(nearest + half + 1, 0, padded.shape[0] - 1).astype(jnp.int32)
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


def quantile(params, q):
  """x with cumulative(x) = q, by bisection (for table ranges)."""
  return float(_bisect(params, jnp.float32(q)))
