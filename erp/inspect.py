"""python -m erp.inspect FILE: per-group table of what an .erp file holds."""
import sys

import numpy as np
from flax import traverse_util

from erp import container
from erp import loader
from erp.errors import ErpError


def group_rows(path):
  """One dict per leaf: path, shape, decoder, section bytes, coded bits, zeros."""
  with open(path, 'rb') as f:
    header, sections = container.read(f.read())
  _, variables, _ = loader.load(path)  # Full validation first: a bad file fails here.
  decoded = {(col, p): v for col in variables
             for p, v in traverse_util.flatten_dict(variables[col], sep='/').items()}
  rows = []
  leaves = loader.parse_leaves(header)
  for leaf, (_, payload) in zip(leaves, sections):
    row = {'path': f'{leaf["collection"]}/{leaf["path"]}', 'shape': leaf['shape'],
           'decoder': leaf['kind'], 'section_bytes': len(payload)}
    if leaf['kind'] in ('affine', 'dft'):
      values, _, stream = loader.read_group(payload, leaf)
      row.update(coded_bits=8 * len(stream), bits_per_value=8 * len(stream) / max(values.size, 1),
                 zero_fraction=float((values == 0).mean()))
    elif leaf['kind'] in ('surp', 'miracle'):  # The whole section is the code.
      values = np.asarray(decoded[(leaf['collection'], leaf['path'])])
      row.update(coded_bits=8 * len(payload), bits_per_value=8 * len(payload) / max(values.size, 1),
                 zero_fraction=float((values == 0).mean()))
    rows.append(row)
  return header, rows


def main(argv):
  if len(argv) != 2:
    print('usage: python -m erp.inspect FILE', file=sys.stderr)
    sys.exit(2)
  try:
    header, rows = group_rows(argv[1])
  except (ErpError, OSError) as e:
    print(f'erp: error: {e}', file=sys.stderr)
    sys.exit(1)
  print(f'{argv[1]}: {header["method"]} {header["model"]} on {header["dataset"]}')
  print(f'{"leaf":42s} {"shape":18s} {"decoder":7s} {"bytes":>8s} {"bits/value":>10s} '
        f'{"coded bits":>10s} {"zeros":>6s}')
  for r in rows:
    per = f'{r["bits_per_value"]:.3f}' if 'bits_per_value' in r else ''
    coded = f'{r["coded_bits"]}' if 'coded_bits' in r else ''
    zeros = f'{r["zero_fraction"]:.3f}' if 'zero_fraction' in r else ''
    print(f'{r["path"]:42s} {str(tuple(r["shape"])):18s} {r["decoder"]:7s} '
          f'{r["section_bytes"]:8d} {per:>10s} {coded:>10s} {zeros:>6s}')
  total = sum(r['section_bytes'] for r in rows)
  with open(argv[1], "rb") as f:
    print(f"sections {total} bytes; whole file {len(f.read())} bytes")


if __name__ == '__main__':
  main(sys.argv)
