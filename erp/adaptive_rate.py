"""A small group's rate as the file codes it: the length of its adaptive code.

A deep factorized prior (erp.priors) is a smooth density; the histogram of a
group of a few hundred integers is not. On the committed LeNet files the
priors priced LeNet5-Caffe's first kernel (500 latents) at 1.6-1.7x the bits
its code spent and LeNet-300-100's last (1,000) at 1.10-1.27x, so λ priced
those groups' bytes wrongly. The file codes such a group block-adaptively
(erp.adaptive: an additive estimator, alpha = 2**-a for the best a of
erp.adaptive.ALPHA_EXPONENTS, over the K integers from its smallest to its
largest value). For counts c_k of n values that code costs about the
sequential estimator's length,

  log2 G(n + K alpha) - log2 G(K alpha) - sum_k [log2 G(c_k + alpha) - log2 G(alpha)]

(G: the gamma function; the file's block-adaptive tables spend a little more,
a binarized code sometimes less). A group of >= 2 axes may be coded ACTIVE
(erp.latent_code: the masks of the slices that hold a value other than a base, 0
or the most frequent value, then the block they cut out): with views, such a
group is priced by the cheapest of its whole code and those, each masks' and
block's length as above (a LeNet5-Caffe fc2 at -1 in most rows, coded as a
block of 80 of its 500 inputs: 2,078 bits against 2,104 coded; its whole code,
2,408). With rd.adaptive_rate_max_latents
= N, training prices every group of at most N latents by that length instead
of its prior, and the export's estimate does the same. The latents' gradient
(rd.adaptive_rate_gradient): 'prior', the prior's, scaled to the code's length
(prior_shaped_bits), or 'code', the noise-averaged slope of the bits each
integer costs under the group's own estimator, log2(n + K alpha) -
log2(c_k + alpha) (training_bits): measured on LeNet-300-100 (λ = 0.75), the
local 'code' slope left files 3-4 % larger at no lower error.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from erp import active
from erp import adaptive
from erp import latent_code
from erp import rate_table

_ALPHAS = np.array([2.0**-a for a in adaptive.ALPHA_EXPONENTS], np.float32)


def code_bits(counts):
  """(bits [...], bits of each integer [..., M], the same for a value already counted in
  its own integer [..., M]) of counts [..., M] of consecutive integers: the adaptive code's
  length at its best alpha, log2(n + K alpha) - log2(c_k + alpha) and log2(n + K alpha) -
  log2(c_k - 1 + alpha) at that alpha (no gradient: counts are counts)."""
  counts = jax.lax.stop_gradient(jnp.asarray(counts, jnp.float32))
  m = counts.shape[-1]
  present = counts > 0
  index = jnp.arange(m)
  lo = jnp.min(jnp.where(present, index, m), -1, keepdims=True)
  hi = jnp.max(jnp.where(present, index, -1), -1, keepdims=True)
  num_symbols = jnp.maximum(hi - lo + 1, 1).astype(jnp.float32)
  n = counts.sum(-1, keepdims=True)
  alpha = _ALPHAS.reshape((-1,) + (1,) * counts.ndim)  # [A, ..., 1]
  per_symbol = jnp.where(present, gammaln(counts + alpha) - gammaln(alpha), 0.0).sum(
      -1, keepdims=True)
  nats = gammaln(n + num_symbols * alpha) - gammaln(num_symbols * alpha) - per_symbol
  best = jnp.argmin(nats, 0)  # [..., 1]
  bits = jnp.maximum(jnp.take_along_axis(nats, best[None], 0)[0, ..., 0], 0.0) / np.log(2.0)
  best_alpha = jnp.asarray(_ALPHAS)[best]
  total = jnp.log2(n + num_symbols * best_alpha)
  return bits, total - jnp.log2(counts + best_alpha), total - jnp.log2(
      jnp.maximum(counts - 1, 0) + best_alpha)


def _whole_bits(values):
  values = np.asarray(values).astype(np.int64).ravel()
  return float(code_bits(np.bincount(values - values.min()))[0]) if values.size else 0.0


def integer_bits(values, view=None, reference=None):
  """The adaptive code's length (bits, a float) of integers values (any shape); with view
  (the shape the file's code sees, >= 2 axes) the cheapest of that and its ACTIVE codes,
  with reference (erp.active.references) those whose input mask is coded given it too."""
  values = np.asarray(values).astype(np.int64).ravel()
  bits = _whole_bits(values)
  if view is None or len(view) < 2 or not values.size:
    return bits
  for base in {0, int(active.base(values))}:
    shifted = values.reshape(view) - base
    masks = latent_code.active_masks(shifted)
    block = _whole_bits(shifted[np.ix_(*masks)])
    bits = min(bits, block + _whole_bits(np.concatenate(masks).astype(np.int64)))
    if reference is not None:
      parts = latent_code.referenced_flags(masks, np.asarray(reference))
      bits = min(bits, block + sum(_whole_bits(p.astype(np.int64)) for p in parts))
  return bits


def _flag_bits(num_flags, ones):
  """The adaptive code's length of num_flags bool flags of which ones are True (traced)."""
  ones = jnp.asarray(ones, jnp.float32)
  return code_bits(jnp.stack([jnp.asarray(num_flags, jnp.float32) - ones, ones]))[0]


def _active_bits(rounded, mode, view, half_width, reference=None):
  """[bits of each ACTIVE code, base 0 and mode, each also with its input mask coded given
  reference if not None] of rounded int values [size] in view."""
  out = []
  for base in (0, mode):
    shifted = rounded - base
    masks, block = active.masks_and_block((shifted != 0).reshape(view))
    hist = jnp.bincount(jnp.clip(shifted + half_width, 0, 2 * half_width - 1),
                        block.reshape(-1).astype(jnp.float32), length=2 * half_width)
    block_bits = code_bits(hist)[0]
    out.append(block_bits + _flag_bits(sum(view), sum(m.sum() for m in masks)))
    if reference is not None:  # The flags latent_code.referenced_flags splits, counted.
      inputs = masks[-2]
      rest = [m for axis, m in enumerate(masks) if axis != len(view) - 2]
      out.append(block_bits + _flag_bits(sum(view) - view[-2], sum(m.sum() for m in rest))
                 + _flag_bits((~reference).sum(), (inputs & ~reference).sum())
                 + _flag_bits(reference.sum(), (inputs & reference).sum()))
  return out


def _code_bits(latents, half_width, views=None, references=None):
  """(names, bits [G], grid [G, 2 half_width], own [G, 2 half_width]) of the rounded latents,
  counted over the integers [-half_width, half_width) (values beyond count at the edge);
  with views ({group: shape the file's code sees}), a group of >= 2 axes' bits are its
  cheapest code, ACTIVE ones included (grid and own stay those of its whole code), and
  with references ({group: bool mask}, erp.active.references) ACTIVE_REF ones."""
  names = sorted(latents)
  rounded = [jnp.round(jax.lax.stop_gradient(latents[n])).astype(jnp.int32).ravel()
             for n in names]
  indices = [jnp.clip(r + half_width, 0, 2 * half_width - 1) + i * 2 * half_width
             for i, r in enumerate(rounded)]
  hists = jnp.bincount(jnp.concatenate(indices), length=len(names) * 2 * half_width)
  hists = hists.reshape(len(names), 2 * half_width)
  bits, grid, own = code_bits(hists)
  cheapest = []
  for i, n in enumerate(names):
    view = None if views is None else views.get(n)
    if view is None or len(view) < 2:
      cheapest.append(bits[i])
      continue
    mode = active.histogram_base(hists[i], half_width)
    reference = None if references is None else references.get(n)
    cheapest.append(jnp.min(jnp.stack([bits[i]] + _active_bits(rounded[i], mode, view,
                                                               half_width, reference))))
  return names, jnp.stack(cheapest), grid, own


def rounded_bits(latents, half_width, views=None, references=None):
  """{group: bits} of latents {group: float array}: the code's length of their rounded
  values (views, references: as _code_bits), without gradient."""
  names, bits, _, _ = _code_bits(latents, half_width, views, references)
  return {n: bits[i] for i, n in enumerate(names)}


def training_bits(latents, half_width, views=None, references=None):
  """{group: bits} of latents {group: float array} at their rounded values (the value;
  views, references: as _code_bits), with gradient='code': the latents' gradient of the
  noise-averaged bits of the integers joined by lines (of the whole code), a latent's own
  integer counted without it (a local slope: it pulls a latent toward a neighbouring
  integer that holds more values, never further)."""
  names, bits, grid, own = _code_bits(latents, half_width, views, references)
  slopes = rate_table.integer_slopes(grid, own)
  return {n: bits[i] + rate_table.expected_slope_only(slopes[i], latents[n])
          for i, n in enumerate(names)}


def prior_shaped_bits(latents, prior_bits, half_width, views=None, references=None):
  """{group: bits} with gradient='prior': the value is the code's length of the rounded
  latents (views, references: as _code_bits), the gradients (to latents and priors) are
  those of prior_bits {group: the priors' training-time bits} scaled by code / prior bits: the
  smooth prior's pull toward its mode, at the strength of what the file spends."""
  out = {}
  for n, bits in rounded_bits(latents, half_width, views, references).items():
    ratio = bits / jnp.maximum(jax.lax.stop_gradient(prior_bits[n]), 1.0)
    out[n] = bits + ratio * (prior_bits[n] - jax.lax.stop_gradient(prior_bits[n]))
  return out
