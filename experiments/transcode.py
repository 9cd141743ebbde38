"""Rewrites committed erp 0.1-0.2 EPR files in the current format and measures what changed.

python experiments/transcode.py [--out experiments/results/format3]

Each file keeps its integer latents exactly; its decoders are snapped onto the
format-3 grid (erp.reparam.file_decoder) and its latents coded by
erp.latent_code; SuRP, MIRACLE and float payloads are copied. The new file is
written under OUT/<dataset>/<run>/model.erp and evaluated on the test set
(the run's λ and schedule were chosen before the validation split existed:
this measures the format, not the operating points). Writes OUT/summary.json.
"""
import argparse
import glob
import json
import os

from erp import evaluate
from erp import file as file_lib
from erp.codecs import epr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METADATA = ('method', 'model', 'width', 'dataset')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments/results/format3'))
  args = parser.parse_args()
  records = []
  for path in sorted(glob.glob(os.path.join(REPO, 'experiments/results/*/lenet*_epr_*/model.erp'))):
    dataset, run = path.split(os.sep)[-3:-1]
    with open(path, 'rb') as f:
      old = f.read()
    new = file_lib.upgrade(old, METADATA)
    coded = [(leaf, p) for leaf, p in zip(*file_lib.parse(new)[:2]) if leaf.codec == epr.NAME]
    coded_bytes = sum(len(g[2]) for g in epr.read_groups([p for _, p in coded],
                                                         [leaf for leaf, _ in coded]))
    out = os.path.join(args.out, dataset, run, 'model.erp')
    os.makedirs(os.path.dirname(out), exist_ok=True)
    file_lib.write_atomic(out, new)
    with open(os.path.join(os.path.dirname(path), 'result.json')) as f:
      old_error = json.load(f)['export']['error_pct']
    record = evaluate.evaluate_file(out)
    records.append({'file': os.path.relpath(out, REPO), 'from': os.path.relpath(path, REPO),
                    'old_num_bytes': len(old), 'num_bytes': len(new),
                    'coded_latent_bytes': coded_bytes,
                    'fixed_overhead_bytes': len(new) - coded_bytes,
                    'old_error_pct': old_error, 'error_pct': record['error_pct']})
    print(json.dumps(records[-1]), flush=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump(records, f, indent=1)


if __name__ == '__main__':
  main()
