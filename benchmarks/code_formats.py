"""Latent codes of committed files written in format 6 and in format 7: bytes and time.

python benchmarks/code_formats.py [--rounds 3] [--out FILE.json] RUN_DIR...

Decodes each file's EPR groups, then writes their latents' codes with
erp.latent_code (a DFT kernel's every latent, not only its frequencies in use
as the file codes them) in both formats, alternating (format 6, 7, 6, 7, ...) so a noisy machine slows both
alike; reports each format's code bytes and its fastest round.
"""
import argparse
import os
import time

import numpy as np

from erp import container
from erp import file as file_lib
from erp import latent_code
from erp.codecs import epr

import record as record_lib  # benchmarks/record.py, beside this script.

RUNS = ('experiments/results/mnist/lenet300_epr_val_ffaug_active_lmbda0.6_seed1',
        'experiments/results/mnist/lenet5_epr_val_ffa40augkd0.5T4_ep60_pf8_lmbda11_seed1')


def measure(run_dir, rounds):
  with open(os.path.join(run_dir, 'model.erp'), 'rb') as f:
    leaves, payloads, _ = file_lib.parse(f.read())
  coded = [(leaf, p) for leaf, p in zip(leaves, payloads) if leaf.codec == epr.NAME]
  groups = [g[0] for g in epr.read_groups([p for _, p in coded], [leaf for leaf, _ in coded])]
  out = {}
  for _ in range(rounds):
    for version in (6, 7):
      start = time.perf_counter()
      num_bytes = 0
      for values in groups:
        w = container.Writer()
        latent_code.write(w, values, version=version)
        num_bytes += len(w.getvalue())
      seconds = time.perf_counter() - start
      best = out.get(version, {}).get('write_s', np.inf)
      out[version] = {'code_bytes': num_bytes, 'write_s': min(best, seconds)}
  return {'run': run_dir, 'format6': out[6], 'format7': out[7],
          'bytes_saved': out[6]['code_bytes'] - out[7]['code_bytes'],
          'write_time_ratio': out[7]['write_s'] / out[6]['write_s']}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('runs', nargs='*', default=list(RUNS))
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--out', default='experiments/results/benchmarks/code_formats.json')
  args = p.parse_args()
  record = {'rounds': args.rounds, 'runs': [measure(r, args.rounds) for r in args.runs],
            **record_lib.machine()}
  record_lib.write(record, args.out)


if __name__ == '__main__':
  main()
