"""Tables of a density for the latents' rate term: interpolation fast on CPU.

Training reads each group's (frozen) bits from a table instead of evaluating
the density at every latent (erp.rate_term.training_bits): a table of a few
thousand points costs a fraction of a few hundred thousand density
evaluations, value and gradient.
"""
import jax
import jax.numpy as jnp
import numpy as np

from erp import materialize
from erp.errors import ErpError
from erp.priors import bits_of

# The table's points are even in the float32 bit pattern of |x| + TABLE_OFFSET:
# 2**K points per octave (K mantissa bits kept) from TABLE_OFFSET up to
# TABLE_OFFSET * 2**TABLE_OCTAVES = 2**12 (beyond, the last segment
# extrapolates: trained latents stay within +-100), mirrored for x < 0. So the
# grid is 2**-(4+K) apart near 0, where a sparse layer's spike is, and
# relatively 2**-K apart in the tails, where bits
# change slowly; no outlier can coarsen it. A point's index and the position
# between two points come from the bits with integer shifts and masks: on
# LeNet-300-100's 235k latents, value and gradient cost ~1/3 of the same
# interpolation even in asinh(x) (0.15-0.2 ms against 0.55 ms, 2-core CPU).
TABLE_OFFSET_EXPONENT = -4
TABLE_OFFSET = 2.0**TABLE_OFFSET_EXPONENT
TABLE_OCTAVES = 16
_FLOAT_BIAS, _MANTISSA = 127, 23


MAX_MANTISSA_BITS = 12  # 4096 points an octave; more would only cost memory.


def mantissa_bits(max_points):
  """K, the most mantissa bits (<= MAX_MANTISSA_BITS) whose table has <= max_points points."""
  if 2 * TABLE_OCTAVES + 1 > max_points:
    raise ErpError(f'rd.rate_table_points: a rate table needs at least '
                   f'{2 * TABLE_OCTAVES + 1} points, got {max_points} (0: no table)')
  k = 0
  while k < MAX_MANTISSA_BITS and 2 * (TABLE_OCTAVES << (k + 1)) + 1 <= max_points:
    k += 1
  return k


def points(mantissa_bits):
  """The 2 * TABLE_OCTAVES * 2**K + 1 points, ascending; the middle one is 0."""
  half = TABLE_OCTAVES << mantissa_bits
  i = np.arange(half + 1, dtype=np.int64)
  pattern = ((_FLOAT_BIAS + TABLE_OFFSET_EXPONENT) << _MANTISSA) + (i << (_MANTISSA - mantissa_bits))
  magnitude = pattern.astype(np.uint32).view(np.float32) - np.float32(TABLE_OFFSET)
  return jnp.asarray(np.concatenate([-magnitude[:0:-1], magnitude]))


def segments(table):
  """(bits at each segment's inner end, change to its outer end), each [..., 2M], from
  table [..., 2M + 1] (the last axis; leading ones are tables of several densities).

  Segment j >= M runs from point j out to j + 1 (x >= 0); j < M from point j + 1
  out to j (x < 0), so both signs interpolate outward from 0 alike. In-place
  updates materialize both: otherwise XLA:CPU fuses what computes them (the
  density, the slicing) into the gathers and recomputes it once per latent
  (measured on 266k latents: 9.4 ms for the latents' gradient, against 1.1 ms).
  """
  half = (table.shape[-1] - 1) // 2
  inner = jnp.concatenate([table[..., 1:half + 1], table[..., half:-1]], -1)
  change = jnp.concatenate([table[..., :half], table[..., half + 1:]], -1) - inner
  return materialize.materialized(inner, 0), materialize.materialized(change, 0)


def _value_and_slope(segments, x):
  """The interpolant at x and its slope d/dx: one pass over x, two gathers."""
  inner_bits, change_bits = segments
  half = inner_bits.shape[0] // 2
  k = int(np.log2(half // TABLE_OCTAVES))
  first_octave = (_FLOAT_BIAS + TABLE_OFFSET_EXPONENT) << k
  low_bits = _MANTISSA - k
  pattern = jax.lax.bitcast_convert_type(jnp.abs(x) + TABLE_OFFSET, jnp.int32)
  octave_index = pattern >> low_bits
  i = jnp.clip(octave_index - first_octave, 0, half - 1)  # |x| in [p_i, p_i+1).
  # Where |x| lies between p_i and p_i+1: the mantissa bits below the kept ones
  # (beyond the last point, the last segment extrapolates).
  fraction = ((pattern & ((1 << low_bits) - 1)).astype(jnp.float32) * (1.0 / (1 << low_bits))
              + (octave_index - first_octave - i).astype(jnp.float32))
  # 1 / (p_i+1 - p_i) = 2**(K - exponent of p_i): a power of two built from its bits.
  inverse_gap = jax.lax.bitcast_convert_type(
      (2 * _FLOAT_BIAS + k - ((i >> k) + _FLOAT_BIAS + TABLE_OFFSET_EXPONENT)) << _MANTISSA,
      jnp.float32)
  negative = x < 0
  j = jnp.where(negative, half - 1 - i, half + i)
  inner = inner_bits.at[j].get(mode='promise_in_bounds')
  change = change_bits.at[j].get(mode='promise_in_bounds')
  return inner + fraction * change, jnp.where(negative, -change, change) * inverse_gap


@jax.custom_jvp
def interpolate(segments, x):
  return _value_and_slope(segments, x)[0]


@interpolate.defjvp
def _interpolate_jvp(primals, tangents):
  # The slope comes out of the value's own pass, so the gradient is one multiply;
  # the table is frozen (no gradient to it).
  segments, x = primals
  value, slope = _value_and_slope(segments, x)
  return value, slope * tangents[1]


@jax.custom_jvp
def slope_only(segments, x):
  """0, with the gradient of the interpolant's sum over x: the latents' part of the rate
  when its value comes from elsewhere (fit='rounded'); saves the value's pass over x."""
  return jnp.zeros((), x.dtype)


@slope_only.defjvp
def _slope_only_jvp(primals, tangents):
  segments, x = primals
  slope = _value_and_slope(segments, x)[1]
  # Materialized: otherwise XLA:CPU fuses the slope's bit arithmetic into each of the
  # gradient's consumers (the optimizer's moments) and recomputes it in every one.
  slope = materialize.materialized(slope)
  return jnp.zeros((), x.dtype), (slope * tangents[1]).sum()


def tabulated_bits(params, x, max_points):
  """Elementwise bits_of(params, x), linearly interpolated from a table of <= max_points.

  The points are even in the float bits of |x| (TABLE_OFFSET); the gradient
  to x is the interpolant's slope. On 235k-400k latents a table costs a
  fraction of evaluating the density at each of them, value and gradient
  (2-core CPU), and its error is far below the bits' own noise, outliers or
  not (tests/test_priors.py). Use it with frozen params: the table carries no
  useful gradient to them.
  """
  table = jax.lax.stop_gradient(bits_of(params, points(mantissa_bits(max_points))))
  return interpolate(segments(table), x)


def integer_slopes(grid_bits, own_bits=None):
  """[..., n - 2, 2]: at each inner integer k of the bits b at n consecutive integers
  [..., n], b_k - b_(k-1) and b_(k+1) - 2 b_k + b_(k-1), side by side (one gather reads
  both) and written once (otherwise XLA recomputes them at every latent). own_bits [..., n]:
  b_k for a latent whose own integer is k (erp.adaptive_rate: its bin less itself)."""
  own = grid_bits[..., 1:-1] if own_bits is None else own_bits[..., 1:-1]
  first = own - grid_bits[..., :-2]
  curvature = grid_bits[..., 2:] - 2 * own + grid_bits[..., :-2]
  return materialize.materialized(jnp.stack([first, curvature], -1), 0)


def _expected_slope(slopes, x):
  """d/dx E L(x + u), u ~ U(-1/2, 1/2), L the bits interpolated linearly between the
  integers -H .. H - 1 (slopes: their integer_slopes): L(x + 1/2) - L(x - 1/2), which for
  k = round(x) is b_k - b_(k-1) + (x - k + 1/2) (b_(k+1) - 2 b_k + b_(k-1)); past the grid,
  its outermost lines continue."""
  half = (slopes.shape[0] + 2) // 2
  shifted = x + np.float32(half)  # k + half, rounded by the float adder (2**23 + shifted).
  k = jax.lax.bitcast_convert_type(shifted + np.float32(2.0**23), jnp.int32) - np.int32(0x4B000000)
  k = jnp.clip(k, 1, 2 * half - 2)
  offset = jnp.clip(shifted - k.astype(jnp.float32) + np.float32(0.5), 0.0, 1.0)
  pair = slopes.at[k - 1].get(mode='promise_in_bounds')
  return pair[..., 0] + offset * pair[..., 1]


@jax.custom_jvp
def expected_slope_only(slopes, x):
  """0, with the gradient of sum(E L(x + u)) over x (_expected_slope): the latents' part of
  the rate with rd.latent_gradient='interpolated'; slopes are frozen."""
  return jnp.zeros((), x.dtype)


@expected_slope_only.defjvp
def _expected_slope_only_jvp(primals, tangents):
  slopes, x = primals
  slope = materialize.materialized(_expected_slope(slopes, x))  # As slope_only's.
  return jnp.zeros((), x.dtype), (slope * tangents[1]).sum()
