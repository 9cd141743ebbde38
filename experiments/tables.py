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
import glob
import json
import os
import re

from erp import config as config_lib

import fronts

HERE = os.path.dirname(os.path.abspath(__file__))


def global_prune(r):
  """Whether a run pruned under one threshold over all kernels (prune.scope='global')."""
  return r['method'] == 'prune' and r['config']['prune'].get('scope') == 'global'


def distilled(r):
  """' +kd(w=…, T=…)' for a run distilled from a float teacher (erp.distill), ' +kd(MODEL,
  w=…, T=…)' from a teacher of another model, ' +kd(N teachers, …)' from an ensemble,
  else ''."""
  train = r['config']['train']
  if not train.get('distill_weight'):
    return ''
  teacher = r.get('teacher_model', {}).get('name', r.get('model'))
  other = f'{teacher}, ' if teacher != r.get('model') else ''
  ensemble = r.get('teacher_model', {}).get('ensemble')
  other = f'{other}{ensemble} teachers, ' if ensemble else other
  recipe = float_recipe(r, 'distill_from')
  other = f'{other}teacher{recipe}, ' if recipe else other
  return f' +kd({other}w={train["distill_weight"]:g}, T={train["distill_temperature"]:g})'


def augmented_float_run(r, key):
  """The recipe {'augment', 'num_epochs'} of the float run a run started ('init_from') or
  distilled ('distill_from') from, where that run was augmented; else None. Runs before
  result.json recorded it (float_runs) all came from plain float runs at their config's
  epochs, so a plain float run is one setting whatever its record."""
  recipe = r.get('float_runs', {}).get(key)
  return recipe if recipe and recipe.get('augment') else None


def float_recipe(r, key):
  """'(+aug, N ep)' where the float run behind `key` was augmented, else ''."""
  recipe = augmented_float_run(r, key)
  return f'(+aug, {recipe["num_epochs"]} ep)' if recipe else ''


def started_from(r):
  """' from float' (its recipe where augmented) for a run started from a float run."""
  return f' from float{float_recipe(r, "init_from")}' if r['config'].get('init_from') else ''


def augmented(c):
  """' +aug' for a run trained with its dataset's augmentation, ' +aug(NAME)' with
  another (data.augmentation), '' without."""
  if not c['train'].get('augment'):
    return ''
  name = c.get('data', {}).get('augmentation')
  return f' +aug({name})' if name else ' +aug'


def latent_lr(rd):
  """' latent lr=…' where a run's latents' learning rate is not the default, and
  ' λ warm-up=N ep' where λ ramps up; else ''."""
  default = config_lib.base_config().rd.latent_lr
  lr = rd.get('latent_lr', default)
  warmup = rd.get('lmbda_warmup_epochs', 0)
  return (('' if lr == default else f' latent lr={lr:g}')
          + (f' λ warm-up={warmup:g} ep' if warmup else ''))


def prior_setting(rd):
  """' fit=…' / ' filters=…' / ' gradient=…' / ' adaptive rate≤N' / ' rate every K steps'
  where a run's priors are not fitted or shaped, its latents' rate gradient not taken, its
  small groups not priced, or its rate not computed every step, as by default."""
  base = config_lib.base_config().rd
  fit = rd.get('prior_fit', base.prior_fit)
  filters = tuple(rd.get('prior_filters', base.prior_filters))
  gradient = rd.get('latent_gradient', base.latent_gradient)
  adaptive = rd.get('adaptive_rate_max_latents', 0)
  # Runs from before rd.adaptive_rate_gradient existed (session 36) took the code's gradient.
  gradient_of_small = rd.get('adaptive_rate_gradient', 'code')
  if adaptive and gradient_of_small != 'prior':
    adaptive = f'{adaptive} ({gradient_of_small} gradient)'
  return ((f' fit={fit}' if fit != base.prior_fit else '')
          + (f' gradient={gradient}' if gradient != base.latent_gradient else '')
          + (f' adaptive rate≤{adaptive}' if adaptive else '')
          + (f' rate every {rd["rate_every"]} steps' if rd.get('rate_every', 1) > 1 else '')
          + (f' filters={",".join(map(str, filters))}' if filters != tuple(base.prior_filters)
             else ''))


def surp_setting(s):
  """SuRP's knobs: per-layer (ours) or global (the authors'), the stages, the refinement."""
  if s.get('scope', 'layer') == 'global':
    stages = 'authors\' stages' if s['rounds'] == 0 else f'{s["rounds"]} rounds'
    return (f'sparsity={s["sparsity"]:g} global α={s["alpha"]:g} {stages}×'
            f'{s["retrain_epochs"]} ep refine={s["refine"]:g}')
  return f'sparsity={s["sparsity"]:g} β={s["beta_scale"]:g}·ln n refine={s["refine"]:g}'


def setting(r):
  """The knob that sets a run's rate: lambda for EPR, the step/sparsity for baselines."""
  c = r['config']
  return {
      'epr': lambda: (f'λ={c["rd"]["lmbda"]:g}'
                      f'{started_from(r)}'
                      f'{augmented(c)}'
                      f'{" spikes=%d" % c["rd"]["prior_spikes"] if c["rd"].get("prior_spikes") else ""}'
                      f'{prior_setting(c["rd"])}'
                      f'{distilled(r)}{latent_lr(c["rd"])}'),
      'float': lambda: augmented(c).strip(),
      'uniform': lambda: f'step={c["uniform"]["rel_step"]:g}σ',
      'prune': lambda: (f'sparsity={c["prune"]["sparsity"]:g}'
                        f'{" global" if global_prune(r) else ""}'
                        f' step={c["prune"]["rel_step"]:g}σ'),
      'surp': lambda: surp_setting(c['surp']),
      'miracle': lambda: (f'{c["miracle"]["bits"]} bits/{c["miracle"]["block_size"]} vars, '
                          f'≤{c["miracle"]["max_vars"]} vars/leaf'),
  }.get(r['method'], lambda: '')()


def epochs(r):
  """Training epochs: EPR and float runs; MIRACLE's pretraining + KL epochs; '' otherwise."""
  c = r['config']
  if r['method'] in ('epr', 'float'):
    return c['train']['num_epochs']
  if r['method'] == 'miracle':
    return c['miracle']['pretrain_epochs'] + c['miracle']['kl_epochs']
  return ''


def config_but_seed(config, teacher_model=None, augmented_float_runs=None):
  """A run's config without its seed, keys it predates at their defaults (JSON): runs of
  one setting made by erp versions that added a key at its default still group. The float
  run a run starts or distills from counts by whether there is one, not by its path: the
  float run's recipe is the setting (retrained on one machine it gives the same val and
  test error, on another it may differ by float rounding: README);
  a teacher of another model or an ensemble (result.json's teacher_model) counts by its
  model and size, an augmented float run by its recipe (augmented_float_runs:
  {'init_from' or 'distill_from': recipe})."""
  flat = {**config_lib.flatten(config_lib.base_config().to_dict()), **config_lib.flatten(config)}
  flat.pop('seed', None)
  for key in ('init_from', 'train.distill_from'):
    recipe = (augmented_float_runs or {}).get(key.split('.')[-1])
    flat[key] = (recipe or True) if flat.get(key) else False
  if teacher_model and (teacher_model.get('name') != flat.get('model.name')
                        or teacher_model.get('ensemble')):
    flat['teacher_model'] = teacher_model
  return json.dumps(flat, sort_keys=True, default=list)


def rows(results_dir):
  out = []
  paths = (glob.glob(os.path.join(results_dir, '*', 'result.json'))
           + glob.glob(os.path.join(results_dir, '*', '*', 'result.json')))
  for path in sorted(paths):
    with open(path) as f:
      r = json.load(f)
    export = r.get('export')
    num_bytes = export['num_bytes'] if export else r['float32_num_bytes']
    out.append({
        'dataset': r['dataset'], 'model': r['model'], 'method': r['method'],
        'run': os.path.basename(os.path.dirname(path)),
        'setting': setting(r),
        'epochs': epochs(r),
        'num_bytes': num_bytes,
        'float32_num_bytes': r['float32_num_bytes'],
        'error_pct': export['error_pct'] if export else r['test_error_pct'],
        'val_error_pct': (export or {}).get('val_error_pct', r.get('val_error_pct')),
        'seed': r['config'].get('seed'),
        'config_but_seed': config_but_seed(
            r['config'], r.get('teacher_model'),
            {k: augmented_float_run(r, k) for k in ('init_from', 'distill_from')}),
        'wall_s': r['wall_s'],
    })
  return out


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
