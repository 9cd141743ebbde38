"""What every baseline shares: its float starting point, coded groups, the file, the result."""
import os
import time

import numpy as np
from flax import traverse_util

from erp import cli
from erp import data
from erp import evaluate
from erp import export
from erp import file as file_lib
from erp import reparam
from erp import runs
from erp import workdir as workdir_lib
from erp.codecs import epr
from erp.errors import ErpError


def float_start(config):
  """(model, ds, float variables) of the trained float run named by config.init_from."""
  if not config.init_from:
    raise ErpError('a baseline starts from a trained float run: set --config.init_from=DIR')
  model, ds = runs.build_model(config)
  return model, ds, runs.init_model(config, model, ds)


def affine_row(path, values, step):
  """(Leaf, payload) of integers decoded as step * values (+ 0 shift): an 'epr' affine leaf,
  coded as EPR's latents are (erp.latent_code), so the group costs what the file holds.
  step must be on the file's grid (grid_step)."""
  values = np.asarray(values, np.int64)
  decoder = {'log_step': np.float32(np.log(step))}
  if reparam.has_shift(values.shape):
    decoder['shift'] = np.float32(0.0)
  payload, _ = epr.write(values, decoder)
  return file_lib.coded_row(path, epr.NAME, 'affine', values.shape, payload)


def grid_step(values, rel_step):
  """rel_step * the values' spread (std; max |v| if that is 0; else 1), as the loader sees it.

  The file stores log steps on a grid (erp.reparam.file_decoder), so the step
  is returned as the file's: encoder and decoder then round onto the same grid.
  """
  values = np.asarray(values)
  spread = float(np.std(values)) if values.size > 1 else 0.0
  spread = spread or float(np.abs(values).max(initial=0.0)) or 1.0
  return reparam.file_step(rel_step * spread)


def finish(config, workdir, method, param_rows, batch_stats, extra, start):
  """Writes DIR/model.erp and DIR/result.json; size and error come from decoding the file."""
  workdir_lib.write_config(workdir, config)
  path = os.path.join(workdir, workdir_lib.FILE_NAME)
  rows = sorted(param_rows, key=lambda row: row[0].path)
  rows += file_lib.extra_rows({'batch_stats': batch_stats} if batch_stats else None,
                              config.export.float_dtype)
  file_lib.write_atomic(path, file_lib.to_bytes(rows, export.metadata(config, method)))
  val = data.source(config.data, 'val')  # Held out from training: the split to choose on.
  record = evaluate.evaluate_file(path, config.data.dir or None, val=val)
  result = workdir_lib.result_record(config, method, record['num_params'])
  result.update(val_error_pct=record['val_error_pct'], test_error_pct=record['error_pct'],
                **extra)
  result['export'] = {'path': path, 'num_bytes': record['num_bytes'],
                      'error_pct': record['error_pct'], 'val_error_pct': record['val_error_pct'],
                      'decode_s': record['decode_seconds']}
  result['wall_s'] = time.time() - start
  workdir_lib.write_result(workdir, result)
  print(f'{method}: {path} {record["num_bytes"]} bytes, test error from file '
        f'{record["error_pct"]:.2f}%', flush=True)
  return result


def flat_params(variables):
  return traverse_util.flatten_dict(variables['params'], sep='/')


def run_cli(run_fn):
  """`python -m erp.baselines.X --config FILE --workdir DIR [--config.k=v]` for run_fn."""
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for the file and result.json.')
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(lambda argv: run_fn(flags.FLAGS.config, flags.FLAGS.workdir))
