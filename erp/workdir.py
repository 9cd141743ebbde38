"""A run's directory: config.json, checkpoint, metrics.jsonl, result.json (harness)."""
import json
import os
import platform

import flax
import jax
import jax.numpy as jnp
from flax import traverse_util

from erp import config as config_lib
from erp.config import config_hash, to_json
from erp.errors import ErpError

CHECKPOINT = 'checkpoint.msgpack'
FILE_NAME = 'model.erp'


RUN_FILES = ('config.json', CHECKPOINT, 'metrics.jsonl', 'result.json', FILE_NAME)
IGNORED_ON_RESUME = ('data.dir',)  # Where the data lives does not change the run.


def make(workdir):
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ErpError(f'workdir {workdir} exists and is not a directory')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ErpError(f'cannot create workdir {workdir}: {e.strerror}') from None


def write_config(workdir, config):
  make(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(to_json(config))


def prepare(workdir, config, overwrite=False):
  """A workdir ready for this config: a run of another config in it is an error (or, with
  overwrite, removed); a run of this one is resumed."""
  make(workdir)
  stored = os.path.join(workdir, 'config.json')
  started = [n for n in RUN_FILES[1:] if os.path.exists(os.path.join(workdir, n))]
  if overwrite:
    for name in started:
      os.remove(os.path.join(workdir, name))
  elif started and os.path.exists(stored):
    try:
      with open(stored) as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise ErpError(f'{stored} is unreadable ({e}); use --overwrite or a new workdir') from None
    changed = [k for k in config_lib.differing_keys(old, json.loads(to_json(config)))
               if k not in IGNORED_ON_RESUME]
    if changed:
      shown = ', '.join(changed[:5]) + (' ...' if len(changed) > 5 else '')
      raise ErpError(f'workdir {workdir} holds a run with another config (differs in: {shown}); '
                     'rerun with --overwrite to start afresh, or use a new workdir')
  write_config(workdir, config)


def save_checkpoint(workdir, state):
  path = os.path.join(workdir, CHECKPOINT)
  with open(path + '.tmp', 'wb') as f:
    f.write(flax.serialization.to_bytes(jax.device_get(state)))
  os.replace(path + '.tmp', path)


def restore_checkpoint(workdir, state):
  """state restored from the workdir's checkpoint (state itself if there is none)."""
  path = os.path.join(workdir, CHECKPOINT)
  if not os.path.exists(path):
    return state
  try:
    with open(path, 'rb') as f:
      return flax.serialization.from_bytes(state, f.read())
  except Exception as e:  # msgpack and flax raise many kinds for a damaged file.
    raise ErpError(f'checkpoint {path} is damaged or from another kind of run '
                   f'({type(e).__name__}); rerun with --overwrite to start afresh') from None


def read_checkpoint(workdir):
  """The raw state dict of a workdir's checkpoint."""
  path = os.path.join(workdir, CHECKPOINT)
  if not os.path.exists(path):
    raise ErpError(f'no checkpoint in {workdir}')
  with open(path, 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())


def pretrained_variables(path, template):
  """Float variables from a float run's checkpoint (a file, or the workdir holding it)."""
  if os.path.isdir(path):
    path = os.path.join(path, CHECKPOINT)
  if not os.path.exists(path):
    raise ErpError(f'init_from: no checkpoint at {path}')
  with open(path, 'rb') as f:
    raw = flax.serialization.msgpack_restore(f.read())
  floats = raw['trainable']['floats']
  flat = traverse_util.flatten_dict(template['params'], sep='/')
  if set(floats) != set(flat):
    raise ErpError(f'init_from: {path} is not a float checkpoint of this model '
                   f'(leaves differ: {sorted(set(floats) ^ set(flat))[:3]})')
  out = {'params': traverse_util.unflatten_dict(
      {k: jnp.asarray(floats[k]) for k in flat}, sep='/')}
  if 'batch_stats' in template:
    out['batch_stats'] = flax.serialization.from_state_dict(template['batch_stats'],
                                                            raw['batch_stats'])
  return out


def logged_wall_s(metrics_path):
  """The largest wall_s in an existing metrics.jsonl (0 if none): time already spent."""
  if not os.path.exists(metrics_path):
    return 0.0
  with open(metrics_path) as f:
    return max((json.loads(line).get('wall_s', 0.0) for line in f if line.strip()),
               default=0.0)


def append_jsonl(path, record):
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


def result_record(config, method, num_params):
  """The fields every run's result.json starts with (training runs and baselines)."""
  return {
      'model': config.model.name,
      'dataset': config.data.name,
      'method': method,
      'config_hash': config_hash(config),
      'config': config.to_dict(),
      'num_params': num_params,
      'float32_num_bytes': 4 * num_params,
      'jax_version': jax.__version__,
      'device': str(jax.devices()[0].device_kind),
      'platform': platform.platform(),
  }


def write_result(workdir, result):
  with open(os.path.join(workdir, 'result.json'), 'w') as f:
    json.dump(result, f, indent=1, sort_keys=True, default=list)
