"""Training step time with EPR vs the plain float step (same model, batch, machine, run).

python benchmarks/step_time.py [--model lenet5] [--dataset mnist] [--width 1]
    [--rounds 15] [--block 20] [--rate_table_points N] [--lmbda L] [--prior_fit FIT]
    [--latent_gradient noisy|interpolated] [--rate_every K] [--out FILE.json]

CIFAR shapes without CIFAR-10: write a synthetic one in the original format
(benchmarks/synthetic_cifar10.py --out DIR) and run with ERP_DATA_DIR=DIR.

Both steps come from erp.train_step.make_train_step; the float one is the same code
with rd.enabled=False. Steps are dispatched back to back as erp.train does
(asynchronously) in blocks of --block steps. The shared 2-core machine's speed
drifts by +-20 % over a minute, so the two steps are timed in alternating
blocks (the order flipped every round) and the ratio is taken per round:
drift then hits both sides of each ratio alike. Reports the median per-step
time of each, the median of the per-round ratios and the ratio of the fastest
blocks; writes the record as JSON.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from erp import config as config_lib
from erp import data
from erp import runs
from erp import train_step

import record as record_lib  # benchmarks/record.py, beside this script.


class Stepper:
  """One training step function and its state, timed a block of steps at a time."""

  def __init__(self, config, images, labels, block):
    model, ds, trainable, batch_stats = runs.setup(config)
    tx = train_step.make_optimizer(config, 10_000, 100)
    self.state = train_step.initial_state(config, trainable, batch_stats, tx,
                                          jax.random.PRNGKey(0))
    self.step = train_step.make_train_step(config, model, ds, tx, len(labels))
    self.config, self.count = config, 0  # Steps taken: which compute the rate.
    batch = config.train.batch_size
    idx = np.arange(batch * block).reshape(block, batch) % len(labels)
    self.batches = [(jnp.asarray(images[i]), jnp.asarray(labels[i])) for i in idx]
    self.block_seconds(warmup=True)

  def block_seconds(self, warmup=False):
    """Seconds per step over one block (the first call compiles)."""
    steps = 3 if warmup else len(self.batches)
    t0 = time.perf_counter()
    for i in range(steps):
      self.state, _ = self.step(self.state, *self.batches[i],
                                with_rate=train_step.computes_rate(self.config, self.count))
      self.count += 1
    jax.block_until_ready(self.state)
    return (time.perf_counter() - t0) / steps


def alternate(steppers, rounds):
  """{name: [seconds per step of each block]}: one block of each stepper a round, in their
  order on even rounds and reversed on odd ones, so drift hits them alike."""
  order = list(steppers)
  times = {name: [] for name in order}
  for r in range(rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      times[name].append(steppers[name].block_seconds())
  return times


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--model', default='lenet5')
  p.add_argument('--dataset', default='mnist')
  p.add_argument('--width', type=int, default=1, help='model.width (ResNet-20-4: 4)')
  p.add_argument('--batch_size', type=int, default=128)
  p.add_argument('--rounds', type=int, default=15)
  p.add_argument('--block', type=int, default=20)
  p.add_argument('--rate_table_points', type=int,
                 default=config_lib.base_config().rd.rate_table_points,
                 help='rd.rate_table_points of the EPR step (0: density evaluated per latent)')
  p.add_argument('--lmbda', type=float, default=1.0, help='rd.lmbda of the EPR step')
  p.add_argument('--prior_fit', default=config_lib.base_config().rd.prior_fit,
                 help='rd.prior_fit of the EPR step (erp.rate_term.FITS)')
  p.add_argument('--latent_gradient', default=config_lib.base_config().rd.latent_gradient,
                 help='rd.latent_gradient of the EPR step (erp.rate_term.LATENT_GRADIENTS)')
  p.add_argument('--rate_every', type=int, default=config_lib.base_config().rd.rate_every,
                 help='rd.rate_every of the EPR step (erp.train_step.computes_rate)')
  p.add_argument('--out', default='experiments/results/benchmarks/step_time.json')
  args = p.parse_args()
  images, labels = data.load(args.dataset, 'train')
  steppers = {}
  for enabled in (False, True):
    config = config_lib.base_config()
    config.model.name, config.data.name = args.model, args.dataset
    config.model.width = args.width
    config.train.batch_size = args.batch_size
    config.rd.enabled = enabled
    config.rd.lmbda = args.lmbda if enabled else 0.0
    config.rd.rate_table_points = args.rate_table_points
    config.rd.prior_fit = args.prior_fit
    config.rd.latent_gradient = args.latent_gradient
    config.rd.rate_every = args.rate_every
    steppers['epr' if enabled else 'float'] = Stepper(config, images, labels, args.block)
  times = alternate(steppers, args.rounds)
  ratios = np.array(times['epr']) / np.array(times['float'])
  record = {'model': args.model, 'width': args.width, 'dataset': args.dataset,
            'batch_size': args.batch_size,
            'rate_table_points': args.rate_table_points, 'lmbda': args.lmbda,
            'prior_fit': args.prior_fit, 'latent_gradient': args.latent_gradient,
            'rate_every': args.rate_every,
            'rounds': args.rounds,
            'steps_per_block': args.block,
            'float_step_ms': 1000 * float(np.median(times['float'])),
            'epr_step_ms': 1000 * float(np.median(times['epr'])),
            'float_images_per_s': args.batch_size / float(np.median(times['float'])),
            'epr_images_per_s': args.batch_size / float(np.median(times['epr'])),
            'ratio': float(np.median(ratios)),
            'ratio_quartiles': [float(q) for q in np.percentile(ratios, [25, 75])],
            # The fastest block of each over the fastest float block: what the steps cost when
            # the host's other tenants left both alone (timeit's argument for the minimum).
            'ratio_of_fastest': float(min(times['epr']) / min(times['float'])),
            **record_lib.machine()}
  record_lib.write(record, args.out)


if __name__ == '__main__':
  main()
