"""Leaves of any params pytree by path, and which of them stay float by their role.

A path is the '/'-joined keys of a leaf (``Dense_0/kernel``, ``bn/scale``); an
nnx ``State``'s trailing ``.value`` attribute is dropped, so linen params, an nnx
``State`` and the plain nested dicts a file decodes to name a leaf alike.

Normalization layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm) hold a handful
of per-channel scales and offsets that set the scale of every activation
after them; coding them costs almost nothing in bits saved and a lot in
accuracy, so they stay float. They are found by role, never by name:
* by module type, when an nnx model is given (``nnx.iter_modules``);
* else by structure: a module whose params include ``scale`` and no
  ``kernel`` or ``embedding`` is a normalization layer (true of every norm
  layer in flax.linen and flax.nnx, and of no Dense, Conv or Embed).
"""
import re

import jax

NORM_PARAM = 'scale'
WEIGHT_PARAMS = ('kernel', 'embedding')


def path_name(key_path):
  """'a/b/0/c' of a jax key path (DictKey, SequenceKey, GetAttrKey...)."""
  parts = []
  for k in key_path:
    for attr in ('key', 'idx', 'name'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  if len(parts) > 1 and type(key_path[-1]).__name__ == 'GetAttrKey' and parts[-1] == 'value':
    parts.pop()  # nnx.Variable's array.
  return '/'.join(parts)


def flatten(tree):
  """(paths [n], leaves [n], treedef) of a pytree, in its flatten order."""
  with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = [path_name(p) for p, _ in with_path]
  if len(set(paths)) != len(paths):
    raise ValueError('two leaves of the params tree have the same path name')
  return paths, [v for _, v in with_path], treedef


def nest(flat):
  """{'a/b': v} -> {'a': {'b': v}}: the plain nested dict of a file's leaves."""
  out = {}
  for path, value in flat.items():
    *parents, name = path.split('/')
    node = out
    for p in parents:
      node = node.setdefault(p, {})
    node[name] = value
  return out


def norm_paths_by_structure(paths):
  """Paths of leaves whose module has a ``scale`` param and no kernel/embedding."""
  siblings = {}
  for path in paths:
    parent, _, name = path.rpartition('/')
    siblings.setdefault(parent, set()).add(name)
  return {path for path in paths
          if NORM_PARAM in siblings[path.rpartition('/')[0]]
          and not siblings[path.rpartition('/')[0]] & set(WEIGHT_PARAMS)}


def norm_paths_of_nnx_model(model, paths):
  """Paths of leaves under an nnx normalization module of `model`."""
  from flax import nnx
  norms = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm)
  prefixes = ['/'.join(map(str, p)) for p, m in nnx.iter_modules(model) if isinstance(m, norms)]
  return {path for path in paths
          if any(path.startswith(prefix + '/') for prefix in prefixes)}


def float_paths(paths, values, keep_float=None, model=None):
  """The paths that stay float: norm layers by role, scalars, and keep_float's choice.

  keep_float overrides the role rule: a regex (leaves whose path matches stay
  float, in addition to the norm layers), or a callable (path, value) -> True
  (float), False (compressed) or None (the role rule decides).
  """
  if model is not None and _is_nnx(model):
    by_role = norm_paths_of_nnx_model(model, paths)
  else:
    by_role = norm_paths_by_structure(paths)
  out = set()
  for path, value in zip(paths, values):
    choice = None
    if callable(keep_float):
      choice = keep_float(path, value)
    elif isinstance(keep_float, str) and keep_float and re.search(keep_float, path):
      choice = True
    if choice is None:
      choice = path in by_role or getattr(value, 'ndim', 0) == 0
    if choice:
      out.add(path)
  return out


def _is_nnx(model):
  from flax import nnx
  return isinstance(model, nnx.Module)
