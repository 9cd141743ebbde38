"""The block an ACTIVE code holds (erp.latent_code), traced: what training prices of it.

The file stores, for each axis of a group's coded view, which slices hold a
nonzero, then codes the block those masks cut out (the zeros outside cost
nothing). erp.latent_code.active_masks finds them in NumPy when writing;
these are the same masks as JAX arrays, for the rate's estimate of that code
(erp.rate_term.active_block, erp.adaptive_rate), and the base an ACTIVE_BASE code
subtracts as training prices it: the most frequent value, ties going to 0.
"""
import jax.numpy as jnp
import numpy as np


def masks_and_block(nonzero):
  """([bool [n] per axis: the slices of nonzero (bool, the coded view) that hold a True],
  bool block of nonzero's shape: the product of those slices)."""
  ndim = nonzero.ndim
  masks = [nonzero.any(axis=tuple(a for a in range(ndim) if a != axis)) for axis in range(ndim)]
  block = masks[0].reshape((-1,) + (1,) * (ndim - 1))
  for axis in range(1, ndim):
    block = block & masks[axis].reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))
  return masks, block


def base(values):
  """The most frequent of integer values (NumPy, any shape), ties going to 0."""
  uniques, counts = np.unique(np.asarray(values), return_counts=True)
  return uniques[np.argmax(counts + 0.5 * (uniques == 0))]


def histogram_base(hists, half_width):
  """The most frequent integer of each histogram hists [..., 2 half_width] over the integers
  [-half_width, half_width) (traced), ties going to 0."""
  return jnp.argmax(hists.astype(jnp.float32).at[..., half_width].add(0.5), -1) - half_width
