"""Markdown tables generated from the runs' result.json files (never typed by hand).

python experiments/tables.py [--results ROOT] [--out FILE.md] [--readme README.md]

One row per run directory ROOT/<dataset>/<run>/result.json (the committed results) or
ROOT/<run>/result.json (a sweep's root). It prints the tables, and writes only the files
named by --out and --readme; with no rows it writes nothing and fails. For
every compressed run (EPR and the baselines) the size is the .erp file on disk
and the error that of the model decoded from it (result['export']); 1 KB =
1000 bytes. Published rows come from experiments/published.json, each with its
source.
"""
import argparse
import json
import os
import re

import fronts
from run_rows import rows

HERE = os.path.dirname(os.path.abspath(__file__))


def _mean_std(xs):
  mean = sum(xs) / len(xs)
  return mean, (sum((x - mean)**2 for x in xs) / (len(xs) - 1))**0.5 if len(xs) > 1 else 0.0


def seed_means(rows_):
  """Runs whose configs and names differ only in the seed (with a validation split), as mean
  and sample std of size, validation and test error. The name too: a change of code (e.g.
  how the rate prices a group) leaves the config as it was, and the sweep's prefix says so."""
  groups = {}
  for r in rows_:
    if r['val_error_pct'] is not None and r['method'] != 'float':
      key = (r['dataset'], r['model'], r['method'], r['setting'], r['epochs'],
             r['config_but_seed'], re.sub(r'_seed\d+$', '', r['run']))
      groups.setdefault(key, []).append(r)
  out = []
  for key, group in sorted(groups.items()):
    out.append(dict(zip(('dataset', 'model', 'method', 'setting', 'epochs'), key[:5]),
                    runs=sorted(r['run'] for r in group),
                    seeds=sorted(r['seed'] for r in group),
                    num_bytes=_mean_std([r['num_bytes'] for r in group]),
                    val_error_pct=_mean_std([r['val_error_pct'] for r in group]),
                    error_pct=_mean_std([r['error_pct'] for r in group])))
  return out


def seed_markdown(groups):
  lines = ['| dataset | model | method | runs | setting | epochs | seeds | size (KB) '
           '| val error | test error |', '|' + '---|' * 10]
  for g in groups:
    (b, bs), (v, vs), (e, es) = g['num_bytes'], g['val_error_pct'], g['error_pct']
    lines.append(f'| {g["dataset"]} | {g["model"]} | {g["method"]} | {g["runs"][0]}'
                 f'{" …" if len(g["runs"]) > 1 else ""} | {g["setting"]} '
                 f'| {g["epochs"]} | {",".join(map(str, g["seeds"]))} '
                 f'| {b / 1000:.3f} ± {bs / 1000:.3f} | {v:.2f} ± {vs:.2f} % '
                 f'| {e:.2f} ± {es:.2f} % |')
  return '\n'.join(lines) + '\n'


def published(path=os.path.join(HERE, 'published.json')):
  with open(path) as f:
    return json.load(f)


def markdown(rows_):
  lines = ['| dataset | model | method | run | setting | epochs | size (bytes) | size (KB) '
           '| ratio | val error | test error | wall time |', '|' + '---|' * 12]
  for r in rows_:
    val = '' if r['val_error_pct'] is None else f'{r["val_error_pct"]:.2f} %'
    lines.append(f'| {r["dataset"]} | {r["model"]} | {r["method"]} | {r["run"]} '
                 f'| {r["setting"]} | {r["epochs"]} | {r["num_bytes"]:,} '
                 f'| {r["num_bytes"] / 1000:.2f} | {r["float32_num_bytes"] / r["num_bytes"]:.0f}× '
                 f'| {val} | {r["error_pct"]:.2f} % | {r["wall_s"]:.0f} s |')
  return '\n'.join(lines) + '\n'


def published_markdown(rows_, pubs):
  """Published rows, with the float32 size of our model of the same name for the ratio."""
  float_bytes = {(r['dataset'], r['model']): r['float32_num_bytes'] for r in rows_}
  lines = ['| dataset | model | method | size (KB) | ratio | test error (uncompressed) '
           '| source |', '|' + '---|' * 7]
  for p in pubs:
    ref = float_bytes.get((p['dataset'], p['model']))
    ratio = f'{ref / p["num_bytes"]:.0f}×' if ref else ''
    lines.append(f'| {p["dataset"]} | {p["model"]} | {p["method"]} | {p["num_bytes"] / 1000:g} '
                 f'| {ratio} | {p["error_pct"]:g} % ({p["float_error_pct"]:g} %) '
                 f'| {p["source"]} |')
  return '\n'.join(lines) + '\n'


def panels(rows_):
  """{(dataset, model): its rows}, sorted: one table section or figure each."""
  out = {}
  for r in rows_:
    out.setdefault((r['dataset'], r['model']), []).append(r)
  return dict(sorted(out.items()))


def versus(rows_, method='epr', baseline='uniform'):
  """Does `method`'s curve lie below `baseline`'s at every one of the baseline's sizes?

  For each baseline point (size, error): (point, win, best). win is the smallest
  `method` file that is no larger and has strictly lower error, or None; best is
  the lowest-error `method` file no larger (None if there is none), so a miss
  shows by how much. The must-show of issue 5, checked point by point from the
  decoded files rather than read off a plot.
  """
  out = []
  for mine in panels(rows_).values():
    ours = [r for r in mine if r['method'] == method]
    for b in sorted((r for r in mine if r['method'] == baseline), key=lambda r: r['num_bytes']):
      no_larger = [r for r in ours if r['num_bytes'] <= b['num_bytes']]
      wins = [r for r in no_larger if r['error_pct'] < b['error_pct']]
      win = min(wins, key=lambda r: r['num_bytes']) if wins else None
      best = min(no_larger, key=lambda r: (r['error_pct'], r['num_bytes'])) if no_larger else None
      out.append((b, win, best))
  return out


def versus_markdown(triples, method='epr', baseline='uniform'):
  lines = [f'| dataset | model | {baseline} run | size (KB) | error | {method} below? '
           f'| {method} file: smallest no larger with lower error, else the best no larger '
           '| size (KB) | error |', '|' + '---|' * 9]
  for b, win, best in triples:
    shown = win or best
    cells = (f'{shown["run"]} | {shown["num_bytes"] / 1000:.2f} | {shown["error_pct"]:.2f} %'
             if shown else '| | ')
    lines.append(f'| {b["dataset"]} | {b["model"]} | {b["run"]} | {b["num_bytes"] / 1000:.2f} '
                 f'| {b["error_pct"]:.2f} % | {"yes" if win else "**no**"} | {cells} |')
  return '\n'.join(lines) + '\n'


COMPARED = [('surp', 'prune'), ('prune', 'surp'), ('prune', 'epr'), ('surp', 'epr'),
            ('miracle', 'epr'), ('uniform', 'epr')]


def comparisons_markdown(groups):
  """Each method's front chosen on the validation error, beside the published points, and
  the methods compared at equal validation error (experiments/fronts.py)."""
  val_fronts = fronts.val_fronts(groups)
  text = ('Each method\'s front under the validation protocol (settings no other setting of '
          'the method beats in both mean size and mean val error), with the published '
          'points:\n\n' + fronts.fronts_markdown(val_fronts, published()))
  for method, baseline in COMPARED:
    pairs = fronts.at_equal_error(val_fronts, groups, method, baseline)
    if pairs:
      text += (f'\n{method} against {baseline} at equal validation error (seed means):\n\n'
               + fronts.at_equal_error_markdown(pairs, method, baseline))
  return text


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--results', default=os.path.join(HERE, 'results'),
                 help='results root: DATASET/RUN/result.json or RUN/result.json below it')
  p.add_argument('--out', default='', help='write the tables to this markdown file')
  p.add_argument('--readme', default='', help='replace the table between this file\'s '
                 'results:start/end markers')
  args = p.parse_args()
  ours = rows(args.results)
  if not ours:
    raise SystemExit(f'no result.json under {args.results}/RUN/ or {args.results}/DATASET/RUN/; '
                     'nothing written')
  groups = seed_means(ours)
  text = ('<!-- Generated by experiments/tables.py from result.json files; do not edit. -->\n'
          + 'Runs with a validation split (chosen on it), mean ± std over seeds:\n\n'
          + seed_markdown(groups) + '\n' + comparisons_markdown(groups)
          + '\nEvery run (the val error is blank for runs made before the validation split '
          'existed, whose settings were chosen on the test set):\n\n' + markdown(ours) + '\nPublished (ratios against our float32 model of the same '
          'architecture):\n\n' + published_markdown(ours, published())
          + '\nEPR against post-training uniform quantization, at each uniform point:\n\n'
          + versus_markdown(versus(ours)))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      f.write(text)
  if args.readme:
    with open(args.readme) as f:
      readme = f.read()
    start, end = '<!-- results:start -->\n', '<!-- results:end -->'
    if start not in readme or end not in readme:
      raise SystemExit(f'{args.readme} has no {start.strip()} ... {end} markers')
    head, rest = readme.split(start, 1)
    readme = head + start + text + rest[rest.index(end):]
    with open(args.readme, 'w') as f:
      f.write(readme)
  print(text)


if __name__ == '__main__':
  main()
