"""Every committed .erp file evaluated through the current loader, against what its run recorded.

python experiments/reevaluate.py [--root experiments/results] [--out experiments/results/reevaluated.json]

Writes one row per file (size and test error now, and as result.json recorded them) and
prints a markdown table and the count of files whose size and error are unchanged.
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from erp import evaluate  # noqa: E402


def reevaluate(root):
  rows = []
  for path in sorted(glob.glob(os.path.join(root, '*', '*', 'model.erp'))):
    with open(os.path.join(os.path.dirname(path), 'result.json')) as f:
      result = json.load(f)
    record = evaluate.evaluate_file(path)
    rows.append({'file': os.path.relpath(path, root), 'method': record['method'],
                 'num_bytes': record['num_bytes'],
                 'recorded_num_bytes': result['export']['num_bytes'],
                 'error_pct': record['error_pct'],
                 'recorded_error_pct': result['export']['error_pct']})
    print(f'{rows[-1]["file"]}: {record["num_bytes"]} B, {record["error_pct"]:.2f} %',
          file=sys.stderr, flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--root', default='experiments/results')
  parser.add_argument('--out', default='experiments/results/reevaluated.json')
  args = parser.parse_args()
  rows = reevaluate(args.root)
  if not rows:
    raise SystemExit(f'no model.erp files under {args.root}/*/*/')
  with open(args.out, 'w') as f:
    json.dump(rows, f, indent=1)
  same = [r for r in rows if r['num_bytes'] == r['recorded_num_bytes']
          and r['error_pct'] == r['recorded_error_pct']]
  print('| file | method | bytes | recorded bytes | error % | recorded error % |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["file"]} | {r["method"]} | {r["num_bytes"]:,} | {r["recorded_num_bytes"]:,} | '
          f'{r["error_pct"]:.2f} | {r["recorded_error_pct"]:.2f} |')
  print(f'\n{len(rows)} files; {len(same)} with the recorded size and error, '
        f'{len(rows) - len(same)} changed.')


if __name__ == '__main__':
  main()
