"""Rewrites the committed format 3-8 files in the current format, in place, where that
leaves every decoded value bit-identical and the file no larger, and updates their
result.json sizes.

python experiments/upgrade_results.py [--root experiments/results]

A format-9 file codes the same integer latents in fewer bytes (format 5:
erp.latent_code's ACTIVE block, a 'dft' kernel's latents at its frequencies in
use only; format 6: a 'dft' kernel's steps in one Rice-coded bit block, the
Fashion-MNIST LeNet headers in the header dictionary; format 7: the binarized
code and every stream cut to its shortest decodable length; format 8: the ACTIVE code
of a group's values minus their most frequent value, ACTIVE_BASE; format 9: a kernel's
input mask given the previous kernel's output mask, ACTIVE_REF): the decoded model, hence
its val and test error, is unchanged; this checks that and refuses to touch a
file whose decoded values would move. export.num_bytes, coded_latent_bits and
the groups' coded_bits / payload_bytes / mode are then the new file's;
export.upgraded keeps the old size, format and this script's name (and, as
'before', the record of an earlier upgrade).
Formats 1-2 (erp 0.1-0.2) are left as they are: their upgrade snaps decoders and
moves the weights (experiments/transcode.py measures that separately).
"""
import argparse
import glob
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from erp import container  # noqa: E402
from erp import file as file_lib  # noqa: E402
from erp import workdir as workdir_lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def upgrade_run(run_dir):
  """'upgraded' / 'skipped: why' for one run directory (model.erp + result.json)."""
  path = os.path.join(run_dir, 'model.erp')
  with open(path, 'rb') as f:
    old = f.read()
  version = old[4]
  if version not in (3, 4, 5, 6, 7, 8):
    return f'skipped: format {version}'
  new = file_lib.upgrade(old)
  if len(new) > len(old):
    return f'skipped: {len(old)} -> {len(new)} bytes'  # A header the new dictionary fits worse.
  before, after = file_lib.decode_bytes(old)[0], file_lib.decode_bytes(new)[0]
  same = jax.tree.structure(before) == jax.tree.structure(after) and all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
  if not same:
    return 'skipped: decoded values would change'
  with open(os.path.join(run_dir, 'result.json')) as f:
    result = json.load(f)
  export = result['export']
  groups = export.get('groups', {})
  coded_bits = 0
  found, payloads, _ = file_lib.parse(new)
  for i, (rewritten, stats) in sorted(file_lib.rewrite_groups(found, payloads).items()):
    leaf = found[i]
    assert rewritten == payloads[i], leaf.name
    coded_bits += stats['coded_bits']
    if leaf.path in groups:
      groups[leaf.path].update({k: stats[k] for k in ('coded_bits', 'payload_bytes', 'mode')})
  earlier = export.get('upgraded')
  export['upgraded'] = {'from_format': version, 'num_bytes': export['num_bytes'],
                        'by': 'experiments/upgrade_results.py'}
  if earlier:
    export['upgraded']['before'] = earlier
  if 'coded_latent_bits' in export:
    export['upgraded']['coded_latent_bits'] = export['coded_latent_bits']
    export['coded_latent_bits'] = coded_bits
  export['num_bytes'] = len(new)
  export['format'] = container.VERSION
  file_lib.write_atomic(path, new)
  workdir_lib.write_result(run_dir, result)
  return f'upgraded: {len(old)} -> {len(new)} bytes'


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--root', default=os.path.join(REPO, 'experiments/results'))
  args = parser.parse_args()
  for path in sorted(glob.glob(os.path.join(args.root, '*', '*', 'model.erp'))):
    print(f'{os.path.relpath(os.path.dirname(path), args.root)}: '
          f'{upgrade_run(os.path.dirname(path))}', flush=True)


if __name__ == '__main__':
  main()
