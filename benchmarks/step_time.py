"""Training step time with EPR vs the plain float step (same model, batch, machine, run).

python benchmarks/step_time.py [--model lenet5] [--blocks 5] [--block 20] [--out FILE.json]

Both steps come from erp.train.make_train_step; the float one is the same code
with rd.enabled=False. Steps are dispatched back to back as erp.train does
(asynchronously) in blocks of --block steps; reports the median per-step time
over --blocks blocks after a warm-up, and the ratio; writes the record as JSON.
"""
import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from erp import config as config_lib
from erp import data
from erp import train


def step_seconds(config, images, labels, blocks, block):
  model, ds, kinds, trainable, batch_stats = train.setup(config)
  tx = train.make_optimizer(config, 10_000, 100)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                           batch_stats=batch_stats, opt_state=tx.init(trainable),
                           rng=jax.random.PRNGKey(0))
  step = train.make_train_step(config, model, ds, kinds, tx, len(labels))
  batch = config.train.batch_size
  idx = jnp.asarray(np.arange(batch * block).reshape(block, batch) % len(labels))
  for i in range(3):  # Compile and warm up.
    state, _ = step(state, images, labels, idx[i])
  jax.block_until_ready(state)
  times = []
  for _ in range(blocks):
    t0 = time.perf_counter()
    for i in range(block):
      state, metrics = step(state, images, labels, idx[i])
    jax.block_until_ready(state)
    times.append((time.perf_counter() - t0) / block)
  return float(np.median(times))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--model', default='lenet5')
  p.add_argument('--dataset', default='mnist')
  p.add_argument('--batch_size', type=int, default=128)
  p.add_argument('--blocks', type=int, default=5)
  p.add_argument('--block', type=int, default=20)
  p.add_argument('--out', default='experiments/results/benchmarks/step_time.json')
  args = p.parse_args()
  config = config_lib.base_config()
  config.model.name, config.data.name = args.model, args.dataset
  config.train.batch_size = args.batch_size
  images, labels = data.load(args.dataset, 'train')
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  config.rd.enabled = False
  float_s = step_seconds(config, images, labels, args.blocks, args.block)
  config.rd.enabled = True
  epr_s = step_seconds(config, images, labels, args.blocks, args.block)
  record = {'model': args.model, 'dataset': args.dataset, 'batch_size': args.batch_size,
            'steps_timed': args.blocks * args.block, 'float_step_ms': 1000 * float_s,
            'epr_step_ms': 1000 * epr_s, 'ratio': epr_s / float_s,
            'device': str(jax.devices()[0].device_kind), 'cpu_count': os.cpu_count(),
            'jax_version': jax.__version__, 'platform': platform.platform()}
  print(json.dumps(record))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(record, f, indent=1)


if __name__ == '__main__':
  main()
