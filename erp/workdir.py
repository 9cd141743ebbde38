"""A run's directory: config.json, checkpoint, metrics.jsonl, result.json (harness)."""
import json
import os
import platform

import flax
import jax
import jax.numpy as jnp
from flax import traverse_util

from erp.config import config_hash, to_json
from erp.errors import ErpError

CHECKPOINT = 'checkpoint.msgpack'
FILE_NAME = 'model.erp'


def write_config(workdir, config):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(to_json(config))


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
  with open(path, 'rb') as f:
    return flax.serialization.from_bytes(state, f.read())


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
