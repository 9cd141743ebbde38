"""A density's parameters as one vector: how an EprState holds each group's prior.

erp.priors.init returns a dict of ~13 small arrays; a state holds them packed,
one array a group. The training step's gradient, optimizer and parameter update
then run a few XLA ops per group where they ran dozens, each costing more to
launch than to compute (LeNet-300-100 on a 2-core CPU). Packed reads as that
dict (a Mapping), so every function of erp.priors takes either.
"""
import collections.abc

import flax
import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_pytree_with_keys_class
class Packed(collections.abc.Mapping):
  """Named arrays held as one vector [..., n] and read as a mapping of them.

  The vector may carry leading batch axes (stacked groups, vmap); the layout,
  ((name, shape), ...), is static (the pytree's auxiliary data).
  """

  def __init__(self, vector, layout):
    self.vector, self.layout = vector, layout

  @classmethod
  def of(cls, params):
    """Packed params of a mapping of arrays (e.g. init's dict), in sorted name order (as
    JAX orders a dict's leaves)."""
    layout = tuple((k, tuple(np.shape(params[k]))) for k in sorted(params))
    return cls(_concatenated(params, layout), layout)

  def __getitem__(self, name):
    start = 0
    for key, shape in self.layout:
      size = int(np.prod(shape, dtype=np.int64))
      if key == name:
        batch = self.vector.shape[:-1]
        return self.vector[..., start:start + size].reshape(batch + shape)
      start += size
    raise KeyError(name)

  def unpacked(self):
    """The dict of named arrays, cut from the vector by one split (whose gradient is one
    concatenation, where each key read alone adds a pad of the whole vector)."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in self.layout]
    parts = jnp.split(self.vector, np.cumsum(sizes)[:-1], axis=-1)
    batch = self.vector.shape[:-1]
    return {key: part.reshape(batch + shape) for (key, shape), part in zip(self.layout, parts)}

  def __contains__(self, name):
    return any(key == name for key, _ in self.layout)

  def __iter__(self):
    return (key for key, _ in self.layout)

  def __len__(self):
    return len(self.layout)

  def tree_flatten_with_keys(self):
    return ((jax.tree_util.GetAttrKey('vector'), self.vector),), self.layout

  @classmethod
  def tree_unflatten(cls, layout, children):
    return cls(children[0], layout)


def _packed_state_dict(packed):
  return {'vector': packed.vector}


def _packed_from_state_dict(packed, state):
  """A checkpoint's packed vector; or, from a checkpoint written before packing, the
  named arrays (packed in this layout's order)."""
  if 'vector' in state:
    return Packed(state['vector'], packed.layout)
  missing = [key for key, _ in packed.layout if key not in state]
  if missing:
    raise ValueError(f'prior parameters missing from the checkpoint: {missing}')
  return Packed(_concatenated(state, packed.layout), packed.layout)


def _concatenated(params, layout):
  """The float32 vector of params' arrays, in layout's order."""
  return jnp.concatenate([jnp.ravel(jnp.asarray(params[key], jnp.float32))
                          for key, _ in layout])


flax.serialization.register_serialization_state(Packed, _packed_state_dict,
                                                _packed_from_state_dict)
