"""A run's directory: config.json, checkpoint, metrics.jsonl, result.json (harness)."""
import json
import os
import platform
import shutil

import flax
import jax
import jax.numpy as jnp
from flax import traverse_util

from erp import config as config_lib
from erp.config import config_hash, to_json
from erp.errors import ErpError

CHECKPOINTS = 'checkpoints'  # orbax CheckpointManager directory.
CHECKPOINT = 'checkpoint.msgpack'  # erp 0.1's single checkpoint: still read.
FILE_NAME = 'model.erp'


RUN_FILES = ('config.json', CHECKPOINTS, CHECKPOINT, 'metrics.jsonl', 'result.json', FILE_NAME)
IGNORED_ON_RESUME = ('data.dir', 'data.tfds_dir')  # Where the data lives does not change the run.


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
      path = os.path.join(workdir, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
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


def _manager(workdir, keep=2):
  import orbax.checkpoint as ocp  # Heavy import; only where checkpoints are written or read.
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, CHECKPOINTS)),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False))


def _restore(workdir, args):
  """The newest orbax checkpoint, restored with args; orbax's own error logs are muted
  (it logs a damaged file, then raises, and erp's caller says it in one line)."""
  from absl import logging
  level = logging.get_verbosity()
  logging.set_verbosity(logging.FATAL)
  try:
    manager = _manager(workdir)
    return manager.restore(manager.latest_step(), args=args)
  finally:
    logging.set_verbosity(level)


def save_checkpoint(workdir, state, keep=2):
  """Writes state at its step into WORKDIR/checkpoints/ (orbax: atomic, the newest `keep`)."""
  import orbax.checkpoint as ocp
  manager = _manager(workdir, keep)
  manager.save(int(state.step), args=ocp.args.StandardSave(jax.device_get(state)), force=True)
  manager.wait_until_finished()
  manager.close()


def _has_orbax(workdir):
  path = os.path.join(workdir, CHECKPOINTS)
  return os.path.isdir(path) and any(n.isdigit() for n in os.listdir(path))


def restore_checkpoint(workdir, state):
  """state at the workdir's newest checkpoint (orbax, or an erp 0.1 checkpoint.msgpack);
  state itself if there is none."""
  try:
    if _has_orbax(workdir):
      import orbax.checkpoint as ocp
      return _restore(workdir, ocp.args.StandardRestore(state))
    path = os.path.join(workdir, CHECKPOINT)
    if not os.path.exists(path):
      return state
    with open(path, 'rb') as f:
      return flax.serialization.from_bytes(state, f.read())
  except Exception as e:  # msgpack, orbax and flax raise many kinds for a damaged checkpoint.
    raise ErpError(f'the checkpoint in {workdir} is damaged or from another kind of run '
                   f'({type(e).__name__}); rerun with --overwrite to start afresh') from None


def read_checkpoint(workdir):
  """The raw state dict of a workdir's newest checkpoint (orbax or checkpoint.msgpack)."""
  if _has_orbax(workdir):
    import orbax.checkpoint as ocp
    return _restore(workdir, ocp.args.StandardRestore())
  path = os.path.join(workdir, CHECKPOINT)
  if not os.path.exists(path):
    raise ErpError(f'no checkpoint in {workdir}')
  with open(path, 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())


def pretrained_variables(path, template):
  """Float variables from a float run's checkpoint (a file, or the workdir holding it)."""
  if os.path.isdir(path):
    if not _has_orbax(path) and not os.path.exists(os.path.join(path, CHECKPOINT)):
      raise ErpError(f'init_from: no checkpoint in {path}')
    raw = read_checkpoint(path)
  elif os.path.exists(path):  # An erp 0.1 checkpoint.msgpack file.
    with open(path, 'rb') as f:
      raw = flax.serialization.msgpack_restore(f.read())
  else:
    raise ErpError(f'init_from: no checkpoint at {path}')
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


def read_run_config(path, what, read):
  """read(config dict) of the run in workdir `path` (its config.json), or None where there
  is none (a bare checkpoint file); a damaged file, or one `read` finds a field missing or
  mistyped in, is one ErpError naming `what` and the file."""
  stored = os.path.join(path, 'config.json')
  if not os.path.isfile(stored):
    return None
  try:
    with open(stored) as f:
      return read(json.load(f))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise ErpError(f'cannot read {what} from {stored}: {e}') from None


def float_run_recipe(path):
  """{'augment', 'num_epochs'} of the float run in workdir `path`: what a run that starts
  or distills from it records, so runs from differently trained float runs are told
  apart. None where it has no config.json."""
  return read_run_config(path, "the float run's training settings", lambda run: {
      'augment': bool(run['train'].get('augment', False)),
      'num_epochs': int(run['train']['num_epochs'])})


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


class Metrics:
  """A run's metrics: WORKDIR/metrics.jsonl always; with tensorboard=True also TensorBoard
  event files in WORKDIR/tensorboard/ through clu's SummaryWriter (clu's metric writers
  import tensorflow, so this is the optional 'tensorboard' extra)."""

  def __init__(self, workdir, tensorboard=False):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.summary = None
    if tensorboard:
      try:
        from clu import metric_writers
      except ImportError as e:
        raise ErpError(f'train.tensorboard=True needs clu and tensorflow ({e}): '
                       "pip install -e '.[tensorboard]'") from None
      self.summary = metric_writers.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, record):
    """Appends one record {'step', 'split', ...numbers}; numbers go to TensorBoard as split/key."""
    append_jsonl(self.path, record)
    if self.summary is not None:
      scalars = {f'{record.get("split", "train")}/{k}': v for k, v in record.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and k not in ('step', 'epoch')}
      self.summary.write_scalars(int(record['step']), scalars)
      self.summary.flush()


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
