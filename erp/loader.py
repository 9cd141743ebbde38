"""erp.load: a file written by an erp run -> (model, variables, config) (harness).

Built on erp.file: the variables come from the file alone; the model and config
come from the file's metadata (model name, width, dataset, config diff). A model
named 'package.module:Class' (defined outside erp) is imported only when the
caller names it too (model_class): a file never chooses which code runs.
"""
import jax
import jax.numpy as jnp
from flax import traverse_util

from erp import config as config_lib
from erp import data
from erp import file as file_lib
from erp import models
from erp.errors import ErpError


def _check_leaves(name, variables, model, ds):
  """The file's leaves must be exactly the model's, with the same shapes."""
  dummy = jnp.zeros((1,) + ds.image_shape, jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, train=False))
  expected = {(col, path): tuple(v.shape) for col in shapes
              for path, v in traverse_util.flatten_dict(shapes[col], sep='/').items()}
  found = {(col, path): tuple(v.shape) for col in variables
           for path, v in traverse_util.flatten_dict(variables[col], sep='/').items()}
  if expected != found:
    missing = sorted(set(expected) - set(found))[:3]
    extra = sorted(set(found) - set(expected))[:3]
    wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])[:3]
    raise ErpError(f'file does not match model {name!r}: missing {missing}, '
                   f'unexpected {extra}, wrong shapes {wrong}')


def model_of(metadata, model_class=None):
  """(model, dataset info, model name) described by an erp run's file metadata."""
  if not all(isinstance(metadata.get(k), str) for k in ('model', 'dataset')):
    raise ErpError('the file names no erp model and dataset (not written by an erp run); '
                   'read its variables with erp.load_variables')
  name = metadata['model']
  if models.is_import_name(name) and model_class != name:
    raise ErpError(f'the file was made with model {name!r}, defined outside erp; name it '
                   f"to import it (erp.load(path, model_class='{name}'), "
                   f'or --model_class={name})')
  width = metadata.get('width', 1)
  if type(width) is not int or not 1 <= width <= 64:
    raise ErpError(f'invalid model width {width!r} in the file')
  ds = data.info(metadata['dataset'])
  kwargs = {'width': width} if width != 1 else {}
  return models.get_model(model_class or name, ds.num_classes, **kwargs), ds, name


def load_bytes(blob, model_class=None, max_values=file_lib.DEFAULT_MAX_VALUES):
  """(model, variables {'params', ['batch_stats']}, config) from a file's bytes."""
  return from_decoded(*file_lib.decode_bytes(blob, max_values), model_class)


def from_decoded(variables, metadata, model_class=None):
  """(model, variables, config) of a decoded file (erp.file.decode_bytes) and its metadata."""
  model, ds, name = model_of(metadata, model_class)
  _check_leaves(name, variables, model, ds)
  diff = metadata.get('config', {})
  if not isinstance(diff, dict):
    raise ErpError('malformed file metadata: config is not an object')
  config = config_lib.from_diff(diff)
  config.model.name, config.data.name = name, ds.name
  size = metadata.get('image_size', 0)
  if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 8192:
    raise ErpError(f'malformed file metadata: image_size {size!r}')
  config.data.image_size = size or config.data.image_size
  return model, variables, config


def load(path, model_class=None, *, max_values=file_lib.DEFAULT_MAX_VALUES):
  """(model, variables, config) of an erp run's file; variables go straight to model.apply."""
  return load_bytes(file_lib.read_file(path), model_class, max_values)
