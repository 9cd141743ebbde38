"""The block an ACTIVE code holds (erp.latent_code): what the file writes and training prices.

The file stores, for each axis of a group's coded view, which slices hold a
nonzero, then codes the block those masks cut out (the zeros outside cost
nothing). masks finds them on NumPy arrays (erp.latent_code's writer) and traced
ones (the rate's estimate of that code: erp.rate_term.active_block,
erp.adaptive_rate); base is what an ACTIVE_BASE code subtracts as training prices
it: the most frequent value, ties going to 0; references what predicts a group's input
mask in format 9's ACTIVE_REF code.
"""
import jax.numpy as jnp
import numpy as np


def masks(nonzero):
  """[bool [n] per axis: the slices of nonzero (bool, the coded view; NumPy or traced) that
  hold a True]."""
  ndim = nonzero.ndim
  return [nonzero.any(axis=tuple(a for a in range(ndim) if a != axis)) for axis in range(ndim)]


def coded_view(kind, shape):
  """The shape whose axes a group's ACTIVE code masks (erp.codecs.epr): a 'dft' kernel's
  two frequency axes are one (the file codes [frequency, in, out]); others as they are."""
  shape = tuple(int(d) for d in shape)
  return (shape[0] * shape[1],) + shape[2:] if kind == 'dft' and len(shape) > 2 else shape


def output_mask(nonzero):
  """bool [n]: the slices along the last axis (a layer's outputs) of nonzero that hold a True."""
  return nonzero.any(axis=tuple(range(nonzero.ndim - 1)))


def references(views, nonzero):
  """{group: bool [view[-2]] or None} for the groups of >= 2 axes of views ({group: coded
  view}, in file order), from nonzero ({group: bool array of that view}).

  A trained chain of layers leaves units that no input reaches, and their outgoing
  weights go unused: on the LeNet5-Caffe files at 1.5 KB, fc2's rows (an ACTIVE_BASE mask
  of ~300 bits) are exactly fc1's live columns, and fc1's rows lie in conv2's live output
  channels. So a group's input-axis mask (view axis -2) is coded given the output mask of
  the group before it of >= 2 axes, index i reading i % n of its n outputs (the channel of
  a flattened NHWC feature map); None where there is no such group or n does not divide
  the input axis. Only a context: wrong for a model, it costs a few bits, never a value.
  """
  out, previous = {}, None
  for name, view in views.items():
    if len(view) < 2:
      continue
    out[name] = reference(previous, view)
    previous = output_mask(nonzero[name])
  return out


def latent_references(views, latents):
  """references of NumPy-convertible latents {group: array} (the writer's and the export
  estimate's; training's are traced, erp.state.references_of)."""
  return references(views, {k: (np.round(np.asarray(latents[k], np.float32)) != 0).reshape(v)
                             for k, v in views.items()})


def reference(previous, view):
  """What references gives a group of coded view from previous (the output mask of the
  group of >= 2 axes before it, or None): None for a group of < 2 axes."""
  n = 0 if previous is None or len(view) < 2 else int(previous.shape[0])
  return previous[np.arange(view[-2]) % n] if n and view[-2] % n == 0 else None


def masks_and_block(nonzero):
  """(masks(nonzero), bool block of nonzero's shape: the product of those slices)."""
  ndim = nonzero.ndim
  slices = masks(nonzero)
  block = slices[0].reshape((-1,) + (1,) * (ndim - 1))
  for axis in range(1, ndim):
    block = block & slices[axis].reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))
  return slices, block


def base(values):
  """The most frequent of integer values (NumPy, any shape), ties going to 0."""
  uniques, counts = np.unique(np.asarray(values), return_counts=True)
  return uniques[np.argmax(counts + 0.5 * (uniques == 0))]


def histogram_base(hists, half_width):
  """The most frequent integer of each histogram hists [..., 2 half_width] over the integers
  [-half_width, half_width) (traced), ties going to 0."""
  return jnp.argmax(hists.astype(jnp.float32).at[..., half_width].add(0.5), -1) - half_width
