"""How many XLA operations the EPR and float steps run: a step-cost measure free of timing noise.

python benchmarks/step_ops.py [--model lenet300] [--dataset mnist] [--prior_fit FIT]
    [--rate_every K] [--out FILE.json]

On a CPU the EPR step's extra time over the float step goes mostly to launching
many small operations (XLA:CPU runs each fusion, copy or loop as its own thunk,
a few microseconds each, whatever its size), and on the shared 2-core machine
step times drift by more than a change worth making. This compiles both steps
(erp.train_step.make_train_step, as benchmarks/step_time.py builds them) and counts
the operations of each program's entry computation (fusions, dots, copies,
scatters, calls, loops, conditionals; not parameters, tuples, bitcasts or
constants), attributes them by the JAX operation that produced them, and lists
the copies of arrays of >= 4096 elements (a copy of a latent array costs as much
as a pass over it: a read of the latents ordered after their in-place update
makes XLA copy them first). With --rate_every K > 1 it also counts the EPR step
without the rate (erp.train_step.computes_rate) and the mean over a cycle of K
steps. Writes the record as JSON.
"""
import argparse
import collections
import re

from erp import config as config_lib
from erp import data
from erp import runs

import record as record_lib  # benchmarks/record.py, beside this script.
from step_time import Stepper

_SKIPPED = ('parameter', 'bitcast', 'get-tuple-element', 'tuple', 'constant')
_OP = re.compile(r'\s+(?:ROOT )?%\S+ = (\([^=]*?\)|\S+) ([a-z-]+)\(')  # Shapes may be tuples.
LARGE_ELEMENTS = 4096


def entry_ops(hlo_text):
  """[(shape, opcode, op_name)] of the operations the entry computation runs."""
  entry = hlo_text[hlo_text.index('\nENTRY'):]
  ops = []
  for line in entry.split('\n'):
    match = _OP.match(re.sub(r'/\*.*?\*/', '', line))  # Tuple shapes hold /*index=5*/.
    if not match or match.group(2) in _SKIPPED:
      continue
    name = re.search(r'op_name="([^"]*)"', line)
    ops.append((match.group(1), match.group(2),
                name.group(1).replace('jit(train_step)/', '') if name else ''))
  return ops


def part(op_name, network):
  """Which part of the step an operation belongs to, from its JAX op_name."""
  if not op_name:
    return 'copies and control (no op_name)'
  if 'vmap' in op_name:
    return "priors' density on a grid (fit and tables)"
  if f'({network})' in op_name:
    return 'network forward and backward'
  if op_name.startswith(('jvp', 'transpose(jvp')):
    return 'loss, rate and decode'
  return 'optimizer and state'


def _elements(shape):
  dims = re.match(r'[a-z0-9]+\[([0-9,]*)\]', shape)
  if not dims:
    return 0
  size = 1
  for d in filter(None, dims.group(1).split(',')):
    size *= int(d)
  return size


def count(stepper, network, with_rate=True):
  text = stepper.step.lower(stepper.state, *stepper.batches[0],
                            with_rate=with_rate).compile().as_text()
  ops = entry_ops(text)
  parts = collections.Counter(part(name, network) for _, _, name in ops)
  return {'ops': len(ops), 'parts': dict(parts.most_common()),
          # Loops (threefry's rounds) run as small calls, each compiled into one function.
          'calls': sum(op == 'call' for _, op, _ in ops),
          'while_loops': sum(op == 'while' for _, op, _ in ops),
          'conditionals': sum(op == 'conditional' for _, op, _ in ops),
          'large_copies': sorted(shape for shape, op, _ in ops
                                 if op == 'copy' and _elements(shape) >= LARGE_ELEMENTS)}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--model', default='lenet300')
  p.add_argument('--dataset', default='mnist')
  p.add_argument('--prior_fit', default=config_lib.base_config().rd.prior_fit)
  p.add_argument('--rate_every', type=int, default=config_lib.base_config().rd.rate_every)
  p.add_argument('--out', default='experiments/results/benchmarks/step_ops.json')
  args = p.parse_args()
  images, labels = data.load(args.dataset, 'train')
  record = {'model': args.model, 'dataset': args.dataset, 'prior_fit': args.prior_fit,
            'rate_every': args.rate_every}
  for enabled in (False, True):
    config = config_lib.base_config()
    config.model.name, config.data.name = args.model, args.dataset
    config.rd.enabled, config.rd.lmbda = enabled, 1.0 if enabled else 0.0
    config.rd.prior_fit, config.rd.rate_every = args.prior_fit, args.rate_every
    network = type(runs.build_model(config)[0]).__name__
    stepper = Stepper(config, images, labels, 4)
    record['epr' if enabled else 'float'] = count(stepper, network)
    if enabled and args.rate_every > 1:
      record['epr_without_rate'] = count(stepper, network, with_rate=False)
  record['ops_ratio'] = record['epr']['ops'] / record['float']['ops']
  if args.rate_every > 1:  # Over a cycle: one step with the rate, K - 1 without.
    record['ops_per_step'] = (record['epr']['ops'] + (args.rate_every - 1)
                              * record['epr_without_rate']['ops']) / args.rate_every
    record['ops_per_step_ratio'] = record['ops_per_step'] / record['float']['ops']
  record_lib.write({**record, **record_lib.machine()}, args.out)


if __name__ == '__main__':
  main()
