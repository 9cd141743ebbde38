"""Time to the first EPR step, and export time, of a short training run.

python benchmarks/startup_export.py [--config configs/mnist_lenet300.py]
    [--init_from FLOAT_WORKDIR] [--trials 3] [--steps 50] [--out FILE.json]

Each trial is a fresh process (cold JAX caches, as a user's run) that trains
--steps steps with EPR and exports: its result.json gives first_step_s (from
the train_and_evaluate call to the end of the first, compiling, step) and the
export's write_s (tables, range coding, writing the file) and decode_s
(reading it back). The imports' time is measured apart (python -c 'import
erp.train'). Reports the median of each over the trials; writes the record
as JSON. Needs ERP_DATA_DIR for MNIST.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import record as record_lib  # benchmarks/record.py, beside this script.


def _trial(args, workdir):
  cmd = [sys.executable, '-m', 'erp.train', '--config', args.config, '--workdir', workdir,
         '--config.rd.enabled=True', f'--config.rd.lmbda={args.lmbda}',
         f'--config.train.num_steps={args.steps}', '--config.train.log_every_steps=1000']
  if args.init_from:
    cmd.append(f'--config.init_from={os.path.abspath(args.init_from)}')
  subprocess.run(cmd, check=True, capture_output=True)
  with open(os.path.join(workdir, 'result.json')) as f:
    return json.load(f)


def _import_seconds():
  t0 = time.perf_counter()
  subprocess.run([sys.executable, '-c', 'import erp.train'], check=True)
  return time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--config', default='configs/mnist_lenet300.py')
  p.add_argument('--init_from', default='', help='a float run to start from (as the sweeps do)')
  p.add_argument('--lmbda', type=float, default=0.75)
  p.add_argument('--steps', type=int, default=50)
  p.add_argument('--trials', type=int, default=3)
  p.add_argument('--out', default='experiments/results/benchmarks/startup_export_lenet300.json')
  args = p.parse_args()
  records, imports = [], []
  for _ in range(args.trials):
    imports.append(_import_seconds())
    with tempfile.TemporaryDirectory() as workdir:
      records.append(_trial(args, workdir))
  median = lambda values: float(np.median(values))
  record = {
      'config': args.config, 'init_from': bool(args.init_from), 'steps': args.steps,
      'trials': args.trials,
      'first_step_s': median([r['first_step_s'] for r in records]),
      'first_step_s_all': [r['first_step_s'] for r in records],
      'import_s': median(imports),
      'export_write_s': median([r['export']['write_s'] for r in records]),
      'export_decode_s': median([r['export']['decode_s'] for r in records]),
      'num_bytes': records[-1]['export']['num_bytes'],
      'device': records[-1]['device'], 'cpu_count': os.cpu_count(),
      'jax_version': records[-1]['jax_version'], 'platform': platform.platform()}
  record_lib.write(record, args.out)


if __name__ == '__main__':
  main()
