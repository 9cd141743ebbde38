"""Loader: an .erp file -> (model, variables, config), bit-exact, with clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from erp import coding
from erp import config as config_lib
from erp import container
from erp import data
from erp import models
from erp import random_code
from erp import refinement
from erp import reparam
from erp.errors import ErpError

MAX_VALUES = 1 << 31


def parse_leaves(header):
  """The header's leaf rows as dicts {collection, kind, path, shape}, checked."""
  leaves = []
  for row in header['leaves']:
    collection, kind, path, shape = row
    if not (isinstance(path, str) and isinstance(shape, list)
            and all(isinstance(d, int) and 0 <= d < MAX_VALUES for d in shape)):
      raise ErpError(f'malformed leaf entry {row!r}')
    if int(np.prod(shape)) > MAX_VALUES:
      raise ErpError(f'leaf {path}: shape {shape} is too large')
    leaves.append({'collection': collection, 'kind': kind, 'path': path, 'shape': shape})
  return leaves


def read_group(payload, leaf, precision_limit=24):
  """(integer latents int64 [shape], decoder params, stream bytes) of one GROUP section."""
  shape = tuple(leaf['shape'])
  kind = leaf['kind']
  r = container.Reader(payload, f'group {leaf["path"]}')
  step_shape = shape[:2] + (1,) * (len(shape) - 2) if kind == 'dft' else ()
  decoder = {'log_step': jnp.asarray(r.f32(int(np.prod(step_shape))).reshape(step_shape))}
  if reparam.has_shift(shape):
    decoder['shift'] = jnp.asarray(r.f32(1)[0])
  values, stream = coding.read_coded(r, int(np.prod(shape)), f'group {leaf["path"]}',
                                     precision_limit)
  r.done()
  return values.reshape(shape), decoder, stream


def _decode_group(payload, leaf):
  values, decoder, _ = read_group(payload, leaf)
  return reparam.decode_group(leaf['kind'], jnp.asarray(values.astype(np.float32)), decoder)


def _float_leaf(payload, leaf, dtype):
  shape = tuple(leaf['shape'])
  np_dtype = np.dtype(container.FLOAT_DTYPES[dtype])
  expected = int(np.prod(shape)) * np_dtype.itemsize
  if len(payload) != expected:
    raise ErpError(f'leaf {leaf["path"]}: {len(payload)} bytes, expected {expected} '
                   f'for shape {shape} in {dtype}')
  return jnp.asarray(np.frombuffer(payload, np_dtype).reshape(shape).astype(np.float32))


def _check_leaves(header, leaves, model, ds):
  """The file's leaves must be exactly the model's, with the same shapes."""
  dummy = jnp.zeros((1,) + ds.image_shape, jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, train=False))
  expected = {(col, path): tuple(v.shape) for col in shapes
              for path, v in traverse_util.flatten_dict(shapes[col], sep='/').items()}
  found = {(l['collection'], l['path']): tuple(l['shape']) for l in leaves}
  if expected != found:
    missing = sorted(set(expected) - set(found))[:3]
    extra = sorted(set(found) - set(expected))[:3]
    wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])[:3]
    raise ErpError(f'file does not match model {header["model"]!r}: missing {missing}, '
                   f'unexpected {extra}, wrong shapes {wrong}')


def load_bytes(blob):
  """(model, variables {'params', ['batch_stats']}, config) from a file's bytes."""
  header, sections = container.read(blob)
  try:
    ds = data.info(header['dataset'])
    kwargs = {'width': header['width']} if header['width'] != 1 else {}
    model = models.get_model(header['model'], ds.num_classes, **kwargs)
    leaves = parse_leaves(header)
    if len(leaves) != len(sections):
      raise ErpError(f'header lists {len(leaves)} leaves but the file has '
                     f'{len(sections)} sections')
    _check_leaves(header, leaves, model, ds)
    dtype = header['float_dtype']
    if dtype not in container.FLOAT_DTYPES:
      raise ErpError(f'unknown float dtype {dtype!r}')
    flat = {}
    for leaf, (kind, payload) in zip(leaves, sections):
      if leaf['kind'] == 'float' and kind == container.FLOAT:
        value = _float_leaf(payload, leaf, dtype)
      elif leaf['kind'] in ('affine', 'dft') and kind == container.GROUP:
        value = _decode_group(payload, leaf)
      elif leaf['kind'] == 'surp' and kind == container.GROUP:
        value = jnp.asarray(refinement.decode_tensor(payload, tuple(leaf['shape']),
                                                     f'surp group {leaf["path"]}'))
      elif leaf['kind'] == 'miracle' and kind == container.GROUP:
        value = jnp.asarray(random_code.decode_leaf(payload, tuple(leaf['shape']), leaf['path']))
      else:
        raise ErpError(f'leaf {leaf["path"]}: kind {leaf["kind"]!r} does not match its section')
      flat.setdefault(leaf['collection'], {})[leaf['path']] = value
    variables = {col: traverse_util.unflatten_dict(v, sep='/') for col, v in flat.items()}
    config = config_lib.from_diff(header['config'])
  except ErpError:
    raise
  except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
    raise ErpError(f'malformed model file: {type(e).__name__}: {e}') from None
  return model, variables, config


def read_file(path):
  """The bytes of a model file; an unreadable path is an ErpError naming it."""
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise ErpError(f'cannot read {path}: {e.strerror}') from None


def load(path):
  """(model, variables, config) from an .erp file; variables go straight to model.apply."""
  return load_bytes(read_file(path))
