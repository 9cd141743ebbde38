"""Rate-accuracy curves (PNG) from the runs' result.json files and the published points.

python experiments/plot_rd.py [--results experiments/results] [--out_dir experiments/results]

One figure per dataset and model: file size on a log axis against test error
of the decoded file (log axis too), one line per method (prune's global-threshold
runs apart) through its runs that no other run of it beats in both size and
error, every run as a faint marker, published operating points marked with
their method name.
"""
import argparse
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

import tables  # noqa: E402

MARKERS = {'epr': 'o', 'uniform': 's', 'prune': '^', 'surp': 'v', 'miracle': 'D'}


def front(points):
  """The (size, error) points no other point beats in both: the curve a method reaches."""
  out = []
  for size, error in sorted(points):
    if not out or error < out[-1][1]:
      out.append((size, error))
  return out


def plot(ours, pubs, dataset, model, path):
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for series in sorted({r['series'] for r in ours if r['method'] != 'float'}):
    pts = sorted((r['num_bytes'] / 1000, r['error_pct']) for r in ours if r['series'] == series)
    marker = MARKERS.get(series.split()[0], 'x')
    line, = ax.plot(*zip(*front(pts)), marker=marker, label=f'{series} (erp)')
    ax.plot(*zip(*pts), marker=marker, ls='none', color=line.get_color(), alpha=0.4)
  for r in ours:
    if r['method'] == 'float':
      ax.axhline(r['error_pct'], color='gray', ls=':', label=f'float32 ({r["num_bytes"] / 1000:.0f} KB)')
  for p in pubs:
    ax.plot(p['num_bytes'] / 1000, p['error_pct'], marker='*', ms=13, ls='none',
            label=p['method'])
  ax.set_xscale('log')
  ax.set_yscale('log')  # Errors span 1 % to 90 %: a log axis keeps the good end readable.
  ax.set_xlabel('compressed size, whole file (KB, 1 KB = 1000 B)')
  ax.set_ylabel('test error (%)')
  ax.set_title(f'{model} on {dataset}')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--results', default=os.path.join(tables.HERE, 'results'),
                 help='results root: DATASET/RUN/result.json or RUN/result.json below it')
  p.add_argument('--out_dir', default='', help='default: the results root')
  args = p.parse_args()
  ours, pubs = tables.rows(args.results), tables.published()
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
