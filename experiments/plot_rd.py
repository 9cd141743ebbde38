"""Rate-accuracy curves (PNG) from the runs' result.json files and the published points.

python experiments/plot_rd.py [--results experiments/results] [--out_dir experiments/results]

One figure per dataset and model: file size on a log axis against test error
of the decoded file (log axis too). Each method's line runs through its front
under the validation protocol (experiments/fronts.py: settings chosen on the
validation error alone, plotted at their seed-mean test error with the seeds'
std as error bars); every run with a validation split is a faint marker of its
method's colour, runs made before the split (settings chosen on the test set)
small grey crosses, published operating points stars, one colour per method.
"""
import argparse
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

import fronts  # noqa: E402
import run_rows  # noqa: E402
import tables  # noqa: E402

MARKERS = {'epr': 'o', 'uniform': 's', 'prune': '^', 'surp': 'v', 'miracle': 'D'}


def plot(ours, pubs, dataset, model, path, highlight=()):
  """highlight: rows drawn apart, large and labelled by their 'series' (a notebook's own run)."""
  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  compressed = [r for r in ours if r['method'] != 'float']
  old = [r for r in compressed if r['val_error_pct'] is None]
  if old:
    ax.plot([r['num_bytes'] / 1000 for r in old], [r['error_pct'] for r in old], 'x',
            color='0.6', ms=4, label='before the val split (chosen on test)')
  colors = {}
  for (_, _, method), groups in fronts.val_fronts(tables.seed_means(compressed)).items():
    marker = MARKERS.get(method, 'x')
    line = ax.errorbar([g['num_bytes'][0] / 1000 for g in groups],
                       [g['error_pct'][0] for g in groups],
                       yerr=[g['error_pct'][1] for g in groups], marker=marker, capsize=2,
                       label=f'{method} (erp, val-chosen front)')
    colors[method] = line.lines[0].get_color()
  for r in compressed:
    if r['val_error_pct'] is not None:
      ax.plot(r['num_bytes'] / 1000, r['error_pct'], marker=MARKERS.get(r['method'], 'x'),
              ls='none', color=colors.get(r['method'], 'k'), alpha=0.3)
  for r in ours:
    if r['method'] == 'float':
      ax.axhline(r['error_pct'], color='gray', ls=':', lw=0.8)
  pub_colors = {}
  for p in pubs:
    first = p['method'] not in pub_colors
    # A method we also ran keeps its colour: its published points sit beside its front.
    pub_colors.setdefault(p['method'], colors.get(p['method'].split(' (')[0],
                                                  f'C{5 + len(pub_colors)}'))
    ax.plot(p['num_bytes'] / 1000, p['error_pct'], marker='*', ms=13, ls='none',
            color=pub_colors[p['method']], mec='k', mew=0.5,
            label=p['method'] if first else None)
  for r in highlight:
    ax.plot(r['num_bytes'] / 1000, r['error_pct'], marker='P', ms=11, ls='none', color='k',
            label=r['series'])
  ax.set_xscale('log')
  ax.set_yscale('log')  # Errors span 1 % to 90 %: a log axis keeps the good end readable.
  ax.set_xlabel('compressed size, whole file (KB, 1 KB = 1000 B)')
  ax.set_ylabel('test error of the decoded file (%); dotted: float32')
  ax.set_title(f'{model} on {dataset}')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--results', default=os.path.join(tables.HERE, 'results'),
                 help='results root: DATASET/RUN/result.json or RUN/result.json below it')
  p.add_argument('--out_dir', default='', help='default: the results root')
  args = p.parse_args()
  ours, pubs = run_rows.rows(args.results), tables.published()
  if not ours:
    raise SystemExit(f'no result.json under {args.results}; nothing plotted')
  for (dataset, model), mine in tables.panels(ours).items():
    if all(r['method'] == 'float' for r in mine):
      continue
    path = os.path.join(args.out_dir or args.results, dataset, f'rd_{model}.png')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plot(mine, [q for q in pubs if (q['dataset'], q['model']) == (dataset, model)],
         dataset, model, path)
    print(path)


if __name__ == '__main__':
  main()
