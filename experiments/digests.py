"""sha256 of every committed file's decoded variables, for tests/test_committed_files.py.

python experiments/digests.py [--out tests/data/decoded_digests.json]

Decoding is exact NumPy arithmetic (erp.reparam.decode_exact, erp.exact), so the
digests must not change with the CPU's vector ISA, JAX_ENABLE_X64, the backend or
the JAX version; the test recomputes them under other XLA flags.
"""
import argparse
import glob
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import erp  # noqa: E402
from erp import leaves  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def variables_digest(variables):
  """sha256 over (collection/path, shape, float32 bytes) of every leaf, in sorted order."""
  h = hashlib.sha256()
  for collection in sorted(variables):
    paths, values, _ = leaves.flatten(variables[collection])
    for path, value in sorted(zip(paths, values), key=lambda pv: pv[0]):
      a = np.ascontiguousarray(np.asarray(value, np.float32))
      h.update(f'{collection}/{path}:{a.shape}'.encode())
      h.update(a.tobytes())
  return h.hexdigest()


def digests(root=os.path.join(REPO, 'experiments', 'results')):
  return {os.path.relpath(p, REPO): variables_digest(erp.load_variables(p))
          for p in sorted(glob.glob(os.path.join(root, '**', 'model.erp'), recursive=True))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=None, help='Write JSON here; default: stdout.')
  args = parser.parse_args()
  text = json.dumps({'digests': digests()}, indent=1, sort_keys=True) + '\n'
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text)
  else:
    sys.stdout.write(text)


if __name__ == '__main__':
  main()
