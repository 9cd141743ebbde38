"""Writes a synthetic CIFAR-10 in the original binary format (for runs without the data).

python benchmarks/synthetic_cifar10.py --out DIR [--per_batch 2000] [--test 1000]

DIR/cifar10/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin: records of one
label byte and 3072 pixel bytes (R, G, B planes of 32x32), as the original files.
Each class has its own mean colour and a class-specific stripe, under heavy noise,
so a model can learn it and the test error says the pipeline works end to end;
it says nothing about real CIFAR-10 accuracy.
"""
import argparse
import os

import numpy as np


def records(n, rng):
  labels = rng.integers(0, 10, n).astype(np.uint8)
  colours = np.random.default_rng(0).integers(40, 216, (10, 3))  # Fixed per class.
  images = rng.normal(0, 60, (n, 3, 32, 32)) + colours[labels][:, :, None, None]
  rows = (np.arange(32)[None, :] == 3 * labels[:, None])  # Row 3 * label is brighter.
  images += 80 * rows[:, None, :, None]
  pixels = np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)
  return np.concatenate([labels[:, None], pixels], 1).tobytes()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', required=True)
  p.add_argument('--per_batch', type=int, default=2000)
  p.add_argument('--test', type=int, default=1000)
  args = p.parse_args()
  folder = os.path.join(args.out, 'cifar10', 'cifar-10-batches-bin')
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(1)
  for i in range(1, 6):
    with open(os.path.join(folder, f'data_batch_{i}.bin'), 'wb') as f:
      f.write(records(args.per_batch, rng))
  with open(os.path.join(folder, 'test_batch.bin'), 'wb') as f:
    f.write(records(args.test, rng))
  print(folder)


if __name__ == '__main__':
  main()
