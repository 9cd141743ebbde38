"""What each part of the EPR step's rate term costs: the step timed without it.

python benchmarks/step_parts.py [--model lenet300] [--rounds 40] [--one_thread] [--out FILE.json]

Builds the float step, the EPR step, and the EPR step with one part of the
rate term replaced by a zero of the same dependencies (so XLA keeps the rest
as it was): 'no_rate' (erp.rate_term.training_bits: no rate at all, leaving
the decode and the optimizers), 'no_fit' (rounded_bits: the priors' fit to the
rounded latents), 'no_slope' (rate_table.slope_only: the latents' gradient
from the tables), 'no_noise' (uniform_noise: zeros, so the latents' pass reads
no noise) and 'no_tables' (rate_table.segments: tables of each density's first
point only, so the density is evaluated once, not at every table point). All are timed in alternating blocks as
benchmarks/step_time.py does; each one's median ratio to the float step says
what its part costs. With two cores XLA runs independent ops side by side, so a
part's cost can hide behind another's; --one_thread (XLA on one thread; run it
under `taskset -c 0`) times the work itself. These steps train nothing useful:
they exist to be timed.
"""
import argparse
import os
import sys
from unittest import mock

if '--one_thread' in sys.argv:  # Before jax is imported: XLA reads its flags once.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false'
                             ' intra_op_parallelism_threads=1'
                             ' --xla_cpu_parallel_codegen_split_count=1')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from erp import config as config_lib
from erp import data
from erp import rate_table
from erp import rate_term

import record as record_lib  # benchmarks/record.py, beside this script.
from step_time import Stepper, alternate


def _no_rate(latents, *unused_args, **unused_kwargs):
  return {n: 0.0 * latents[n].ravel()[0] for n in latents}


def _no_fit(latents, prior_params, names, *unused_args, **unused_kwargs):
  return jnp.zeros(len(names)) + 0.0 * sum(jax.tree.leaves(prior_params[n])[0].ravel()[0]
                                           for n in names)


def _no_slope(segments, x):
  return 0.0 * x.ravel()[0] + 0.0 * segments[0].ravel()[0]


def _no_noise(seed, shape):
  return jnp.zeros(shape, jnp.float32) + 0.0 * seed[0].astype(jnp.float32)


def _no_tables(table):
  # Tables of the density's first point only (XLA evaluates just that one), so the
  # slope's pass still reads tables it cannot fold away: zero constant tables would fold it.
  first = jnp.broadcast_to(table[..., :1], table.shape[:-1] + (table.shape[-1] - 1,))
  return first, 0.5 * first


WITHOUT = {'no_rate': (rate_term, 'training_bits', _no_rate),
           'no_fit': (rate_term, 'rounded_bits', _no_fit),
           'no_slope': (rate_table, 'slope_only', _no_slope),
           'no_noise': (rate_term, 'uniform_noise', _no_noise),
           'no_tables': (rate_table, 'segments', _no_tables)}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--model', default='lenet300')
  p.add_argument('--dataset', default='mnist')
  p.add_argument('--rounds', type=int, default=40)
  p.add_argument('--block', type=int, default=20)
  p.add_argument('--one_thread', action='store_true',
                 help='XLA on one thread (set before jax starts; pin with taskset -c 0)')
  p.add_argument('--out', default='experiments/results/benchmarks/step_parts.json')
  args = p.parse_args()
  images, labels = data.load(args.dataset, 'train')

  def config(enabled):
    c = config_lib.base_config()
    c.model.name, c.data.name = args.model, args.dataset
    c.rd.enabled, c.rd.lmbda = enabled, 1.0 if enabled else 0.0
    return c

  steppers = {'float': Stepper(config(False), images, labels, args.block),
              'epr': Stepper(config(True), images, labels, args.block)}
  for name, (module, attribute, replacement) in WITHOUT.items():
    with mock.patch.object(module, attribute, replacement):  # Traced (compiled) inside.
      steppers[name] = Stepper(config(True), images, labels, args.block)
  times = alternate(steppers, args.rounds)
  base = np.array(times['float'])
  record = {'model': args.model, 'dataset': args.dataset, 'rounds': args.rounds,
            'one_thread': args.one_thread,
            'steps_per_block': args.block,
            'step_ms': {k: 1000 * float(np.median(v)) for k, v in times.items()},
            'ratio_to_float': {k: float(np.median(np.array(v) / base)) for k, v in times.items()},
            **record_lib.machine()}
  record_lib.write(record, args.out)


if __name__ == '__main__':
  main()
