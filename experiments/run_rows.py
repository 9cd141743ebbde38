"""One table row per run: its result.json read as a setting label, epochs and a grouping key.

experiments/tables.py and plot_rd.py build on rows(): a run's setting is what its config
changed from erp's defaults (lambda, float start, teacher, prior and rate settings), and
runs that differ only in the seed share config_but_seed, so tables.seed_means can group them.
"""
import glob
import json
import os

from erp import config as config_lib


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
                      f'{" per-group λ×(%s)" % c["rd"]["group_lmbda"] if c["rd"].get("group_lmbda") else ""}'
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
