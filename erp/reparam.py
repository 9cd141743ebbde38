"""Parameter groups: integer latents and the decoders that map them to weights.

EPR (Oktay et al. 2020, sec. 2.1) replaces each compressible parameter tensor
theta by a latent phi and a decoder f: theta = f(round(phi)). Decoders:

* ``affine`` (dense kernels, biases): theta = step * round(phi) (+ shift for
  biases), with a learned scalar log step (and shift) per group.
* ``dft`` (conv kernels [h, w, in, out]): the latent is the kernel's
  orthonormal real DFT over its spatial dims; theta = IRDFT(step_f * round(phi)),
  with a learned log step per spatial frequency ([h, w, 1, 1]), so high
  frequencies can be coded more coarsely (the paper's frequency-domain decoder).
* ``float``: left uncompressed, stored at its precision and counted in the size.

Kernels get no shift: with one, the integer grid drifts off zero (measured: a
LeNet-300-100 layer ended with weight 0 at latent 0.62, and the last layer's
shift is a free direction since softmax ignores a constant added to all
logits), so zero weights stop being the cheap zero latent and the rate stalls.

Groups are keyed by the '/'-joined path of the leaf in the Flax params tree.
Rounding uses the straight-through estimator (identity gradient).

Two decodes: decode_group (JAX; differentiable, used in training) and
decode_exact (NumPy; what a file's weights are). XLA's exp and sums change in
the last bit with the CPU's vector ISA and the backend, so a file is decoded by
decode_exact alone: every step is one IEEE float64 operation in a fixed order
(exp included: erp.exact), rounded to float32 once at the end, so the same
file gives the same weights on every machine, backend and device count.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from erp import exact
from erp import materialize
from erp.errors import ErpError

DECODERS = ('affine', 'dft', 'float')


def round_ste(x):
  """round(x) forward, identity backward (straight-through estimator)."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


@jax.custom_vjp
def _affine_ste(latent, log_step, shift):
  scaled = jnp.exp(log_step) * jnp.round(latent)
  return scaled if shift is None else scaled + shift


def _affine_ste_fwd(latent, log_step, shift):
  # Materialized: the backward pass then reads this weight instead of recomputing it
  # from the latents late in the step, which made XLA:CPU copy every latent first.
  weight = materialize.materialized(_affine_ste(latent, log_step, shift))
  return weight, (weight, log_step, shift)


def _affine_ste_bwd(residuals, g):
  # d weight / d log_step = step * round(latent) = weight - shift: read from the weight
  # the forward pass wrote, so nothing re-reads or re-rounds the latents.
  weight, log_step, shift = residuals
  scaled = weight if shift is None else weight - shift
  return g * jnp.exp(log_step), _sum_of_product(g, scaled), None if shift is None else jnp.sum(g)


def _sum_of_product(a, b):
  """sum(a * b), as rows times a vector of ones and then a sum.

  Written as one reduction of a product whose factor comes out of a dot (the
  weight's gradient), XLA:CPU split it into 32 x 32 windows (for its precision)
  and ran those slowly: on LeNet-300-100's 784 x 300 kernel the reduction cost
  0.28 ms, this form 0.07 ms (one core, jax 0.10), against a ~1.2 ms float step.
  """
  if a.ndim < 2:
    return jnp.sum(a * b)
  rows = (a * b).reshape(-1, a.shape[-1])
  return jnp.sum(jnp.matmul(rows, jnp.ones(a.shape[-1], a.dtype),
                            precision=jax.lax.Precision.HIGHEST))


_affine_ste.defvjp(_affine_ste_fwd, _affine_ste_bwd)


def decode_affine_ste(latent, decoder):
  """decode_group('affine', round_ste(latent), decoder) in one pass each way.

  The same value, and the same gradients within float rounding; written out,
  XLA materialized the rounded latent beside the weight (for the backward
  pass) and copied the latents: extra passes over LeNet-300-100's 266k
  weights in every EPR step (2-core CPU).
  """
  return _affine_ste(latent, decoder['log_step'], decoder.get('shift'))


def real_dft_matrix(n):
  """Orthonormal real DFT basis [n, n]: rows DC, (cos, sin) pairs, Nyquist if n even.

  coefficients = B @ x and x = B.T @ coefficients, so the transform is exactly
  invertible and preserves the number of values (n real numbers in, n out).
  """
  # Scalar libm calls, not NumPy's vectorized cos/sin (whose last bit depends on the ISA).
  rows = [[1.0 / math.sqrt(n)] * n]
  for k in range(1, (n - 1) // 2 + 1):
    rows.append([math.sqrt(2.0 / n) * math.cos(2 * math.pi * k * t / n) for t in range(n)])
    rows.append([math.sqrt(2.0 / n) * math.sin(2 * math.pi * k * t / n) for t in range(n)])
  if n % 2 == 0:
    rows.append([(-1.0)**t / math.sqrt(n) for t in range(n)])
  return np.array(rows, np.float32)


def rdft2(kernel):
  """Spatial real DFT of a kernel [h, w, ...] -> coefficients [h, w, ...] (NumPy: it only
  runs when a state is initialized, where one XLA compile per leaf shape would dominate)."""
  bh, bw = real_dft_matrix(kernel.shape[0]), real_dft_matrix(kernel.shape[1])
  return np.einsum('ih,jw,hw...->ij...', bh, bw, np.asarray(kernel, np.float32))


def irdft2(coefficients):
  """Inverse of rdft2."""
  bh = real_dft_matrix(coefficients.shape[0])
  bw = real_dft_matrix(coefficients.shape[1])
  return jnp.einsum('ih,jw,ij...->hw...', bh, bw, coefficients,
                    precision=jax.lax.Precision.HIGHEST)  # No TF32 on GPUs.


def choose_decoder(value, conv_decoder='dft'):
  """The decoder of one compressed leaf: conv kernels [h, w, in, out] with h*w > 1 get
  conv_decoder, every other array of rank >= 1 the affine one."""
  if conv_decoder not in ('dft', 'affine'):
    raise ErpError(f"conv_decoder must be 'dft' or 'affine', got {conv_decoder!r}")
  if value.ndim == 4 and value.shape[0] * value.shape[1] > 1:
    return conv_decoder
  return 'affine'


def init_group(value, kind, init_levels=4.0, min_init_step=0.01):
  """(latent, decoder params) of one leaf, so the unrounded decode reproduces it.

  Initial step: a fraction of the tensor's spread, so latents start at a few
  integer levels; at least min_init_step (biases start at zero). Latents invert
  the decoder: phi = transform(theta - shift) / step.
  """
  if kind not in ('affine', 'dft'):
    raise ErpError(f'unknown decoder {kind!r}; known: {DECODERS}')
  value = np.asarray(value, np.float32)  # NumPy: no per-shape XLA compile for each leaf.
  spread = float(np.std(value)) if value.size > 1 else float(np.abs(value).max())
  step = max(spread / init_levels, min_init_step)
  if kind == 'dft':
    log_step = np.full(value.shape[:2] + (1,) * (value.ndim - 2), np.log(step), np.float32)
    latent = rdft2(value) / np.exp(log_step)
  else:
    log_step = np.float32(np.log(step))
    latent = value / np.exp(log_step)
  latent, log_step = jnp.asarray(latent, jnp.float32), jnp.asarray(log_step, jnp.float32)
  decoder = {'log_step': log_step}
  if has_shift(value.shape):
    decoder['shift'] = jnp.zeros((), jnp.float32)
  return latent, decoder


def has_shift(shape):
  """Biases (rank 1) have a learned shift; kernels do not (see module docstring)."""
  return len(shape) == 1


def decode_group(kind, latent, decoder):
  """theta of one group from its (already rounded) latent."""
  scaled = jnp.exp(decoder['log_step']) * latent
  if kind == 'dft':
    scaled = irdft2(scaled)
  return scaled + decoder['shift'] if 'shift' in decoder else scaled


# A format-3 file stores each log step as an integer / LOG_STEP_UNITS (steps within
# 0.4 % of the trained ones) and a bias's shift as an integer multiple of its
# step / SHIFT_UNITS: 2 bytes where a float32 took 4, and a DFT kernel's 25
# per-frequency steps as small differences. erp.save writes the decoders
# snapped onto that grid (file_decoder), and the accuracy reported is the
# file's, so the snapping is measured, not assumed.
LOG_STEP_UNITS = 128
SHIFT_UNITS = 16


def _log_step_of_ints(k):
  return (np.asarray(k, np.int64) / LOG_STEP_UNITS).astype(np.float32)  # Exact: k / 2**7.


def _step_of_ints(k):
  """The (scalar) step a file's integer log step decodes to, exactly as decode_exact's."""
  return float(exact.exp(np.float64(_log_step_of_ints(k))))


def file_step(step):
  """A step snapped to the file's grid: the step a file holding it decodes with."""
  return _step_of_ints(np.round(np.log(np.float64(step)) * LOG_STEP_UNITS))


def file_decoder(decoder):
  """(decoder snapped to the file's grid, float32; its integers {'log_step', ['shift']})."""
  log_step = np.asarray(decoder['log_step'], np.float64)
  if not (np.all(np.isfinite(log_step)) and np.isfinite(float(decoder.get('shift', 0.0)))):
    raise ErpError('a decoder has a non-finite step or shift (did training diverge?)')
  k = np.round(log_step * LOG_STEP_UNITS).astype(np.int64)
  ints = {'log_step': k}
  if 'shift' in decoder:
    ints['shift'] = int(np.round(float(decoder['shift']) / _step_of_ints(k) * SHIFT_UNITS))
  return decoder_of_ints(ints), ints


def decoder_of_ints(ints):
  """The float32 decoder a format-3 file's integers stand for (exact on any machine)."""
  out = {'log_step': _log_step_of_ints(ints['log_step'])}
  if 'shift' in ints:
    out['shift'] = np.float32(ints['shift'] * _step_of_ints(ints['log_step']) / SHIFT_UNITS)
  return out


CHUNK_VALUES = 1 << 20  # decode_exact's float64 temporaries stay within a few MB per leaf.


def decode_exact(kind, values, decoder):
  """float32 theta [shape] of one group from integer latents: the file's weights.

  decode_group's maths as IEEE float64 operations in a fixed order (the DFT as
  an explicit sum over frequencies), rounded to float32 once; in chunks of the
  trailing axes, which changes no value.
  """
  values = np.asarray(values)
  step = exact.exp(np.asarray(decoder['log_step'], np.float32).astype(np.float64))
  shift = np.float64(np.float32(decoder['shift'])) if 'shift' in decoder else None
  lead = 2 if kind == 'dft' else 0  # DFT: spatial dims stay whole, the rest is chunked.
  flat = values.reshape(values.shape[:lead] + (-1,))
  step = step.reshape(step.shape[:lead] + (-1,))  # One step per frequency, or a scalar.
  out = np.empty(flat.shape, np.float32)
  size = max(CHUNK_VALUES // max(int(np.prod(flat.shape[:lead])), 1), 1)
  with np.errstate(over='ignore', invalid='ignore'):  # inf/NaN: the loader refuses them.
    for start in range(0, flat.shape[-1], size):
      scaled = step * flat[..., start:start + size].astype(np.float64)
      if kind == 'dft':
        scaled = _irdft2_exact(scaled)
      if shift is not None:
        scaled = scaled + shift
      out[..., start:start + size] = scaled
  return out.reshape(values.shape)


def _irdft2_exact(coefficients):
  """irdft2 in float64, summing frequencies (i, j) in order for every (h, w)."""
  h, w = coefficients.shape[:2]
  bh = real_dft_matrix(h).astype(np.float64)
  bw = real_dft_matrix(w).astype(np.float64)
  out = np.zeros_like(coefficients)
  for a in range(h):
    for b in range(w):
      acc = np.zeros(coefficients.shape[2:])
      for i in range(h):
        for j in range(w):
          acc = acc + (bh[i, a] * bw[j, b]) * coefficients[i, j]
      out[a, b] = acc
  return out


def num_params(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
