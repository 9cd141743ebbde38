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
"""
import jax
import jax.numpy as jnp
import numpy as np

from erp.errors import ErpError

DECODERS = ('affine', 'dft', 'float')


def round_ste(x):
  """round(x) forward, identity backward (straight-through estimator)."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def real_dft_matrix(n):
  """Orthonormal real DFT basis [n, n]: rows DC, (cos, sin) pairs, Nyquist if n even.

  coefficients = B @ x and x = B.T @ coefficients, so the transform is exactly
  invertible and preserves the number of values (n real numbers in, n out).
  """
  t = np.arange(n)
  rows = [np.full(n, 1.0 / np.sqrt(n))]
  for k in range(1, (n - 1) // 2 + 1):
    rows.append(np.sqrt(2.0 / n) * np.cos(2 * np.pi * k * t / n))
    rows.append(np.sqrt(2.0 / n) * np.sin(2 * np.pi * k * t / n))
  if n % 2 == 0:
    rows.append((-1.0)**t / np.sqrt(n))
  return np.stack(rows).astype(np.float32)


def rdft2(kernel):
  """Spatial real DFT of a kernel [h, w, ...] -> coefficients [h, w, ...]."""
  bh, bw = real_dft_matrix(kernel.shape[0]), real_dft_matrix(kernel.shape[1])
  return jnp.einsum('ih,jw,hw...->ij...', bh, bw, kernel)


def irdft2(coefficients):
  """Inverse of rdft2."""
  bh = real_dft_matrix(coefficients.shape[0])
  bw = real_dft_matrix(coefficients.shape[1])
  return jnp.einsum('ih,jw,ij...->hw...', bh, bw, coefficients)


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
  value = jnp.asarray(value, jnp.float32)
  spread = float(jnp.std(value)) if value.size > 1 else float(jnp.abs(value).max())
  step = max(spread / init_levels, min_init_step)
  if kind == 'dft':
    log_step = jnp.full(value.shape[:2] + (1,) * (value.ndim - 2), np.log(step), jnp.float32)
    latent = rdft2(value) / jnp.exp(log_step)
  else:
    log_step = jnp.asarray(np.log(step), jnp.float32)
    latent = value / jnp.exp(log_step)
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


def num_params(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
