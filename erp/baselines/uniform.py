"""Post-training uniform quantization + entropy coding of a trained float model.

python -m erp.baselines.uniform --config configs/mnist_lenet300.py --workdir DIR \
    --config.init_from=FLOAT_RUN --config.uniform.rel_step=0.5

The simplest anchor for any compression method: each parameter tensor theta
is rounded on its own uniform grid, step = uniform.rel_step * std(theta)
(max |theta| for a tensor whose std is 0), with zero on the grid, and the
integers are range-coded with their own histogram as the table. No training.
Normalization statistics are stored as floats. Sweeping rel_step traces the
rate-accuracy curve.
"""
import time

import numpy as np

from erp.baselines import common

METHOD = 'uniform'


def quantize(params, rel_step):
  """{path: (integers, step)} of every leaf of a flat params dict."""
  out = {}
  for path, value in params.items():
    value = np.asarray(value, np.float32)
    step = common.grid_step(value, rel_step)
    out[path] = (np.round(value / step).astype(np.int64), step)
  return out


def run(config, workdir):
  start = time.time()
  if config.uniform.rel_step <= 0:
    raise ValueError(f'uniform.rel_step must be positive, got {config.uniform.rel_step}')
  _, _, variables = common.float_start(config)
  quantized = quantize(common.flat_params(variables), config.uniform.rel_step)
  rows = [common.affine_row(path, q, step) for path, (q, step) in quantized.items()]
  return common.finish(config, workdir, METHOD, rows, variables.get('batch_stats', {}),
                       {'float_run': config.init_from}, start)


if __name__ == '__main__':
  common.run_cli(run)
