"""Tables and plots are generated from the runs' result.json files."""
import json
import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'experiments'))
import fronts  # noqa: E402
import run_rows  # noqa: E402
import plot_rd  # noqa: E402
import tables  # noqa: E402


def _write(root, dataset, run, method, num_bytes, error, config):
  os.makedirs(root / dataset / run)
  result = {'dataset': dataset, 'model': 'lenet300', 'method': method, 'wall_s': 1.0,
            'float32_num_bytes': 1_066_440, 'test_error_pct': 99.0, 'config': config}
  if method != 'float':
    result['export'] = {'num_bytes': num_bytes, 'error_pct': error}
  else:
    result['test_error_pct'] = error
  (root / dataset / run / 'result.json').write_text(json.dumps(result))


def test_rows_take_size_and_error_from_the_decoded_file(tmp_path):
  base = {'train': {'num_epochs': 3}, 'rd': {'lmbda': 0.1}, 'uniform': {'rel_step': 0.5}}
  _write(tmp_path, 'mnist', 'a_float', 'float', None, 1.5, base)
  _write(tmp_path, 'mnist', 'b_epr', 'epr', 8000, 1.9, base)
  _write(tmp_path, 'mnist', 'c_uniform', 'uniform', 100_000, 1.6, base)
  # A knob away from its default shows in the setting (runs differing in it never merge).
  _write(tmp_path, 'mnist', 'd_epr', 'epr', 7000, 2.0,
         {**base, 'rd': {'lmbda': 0.1, 'latent_lr': 0.1}})
  augmented = {**base, 'train': {'num_epochs': 3, 'augment': True}}
  _write(tmp_path, 'mnist', 'e_epr', 'epr', 7000, 2.0, augmented)
  _write(tmp_path, 'mnist', 'f_epr', 'epr', 7000, 2.0,
         {**augmented, 'data': {'augmentation': 'shift_flip'}})
  rows = run_rows.rows(str(tmp_path))
  assert [(r['method'], r['num_bytes'], r['error_pct']) for r in rows] == [
      ('float', 1_066_440, 1.5), ('epr', 8000, 1.9), ('uniform', 100_000, 1.6),
      ('epr', 7000, 2.0), ('epr', 7000, 2.0), ('epr', 7000, 2.0)]
  assert [r['setting'] for r in rows] == ['', 'λ=0.1', 'step=0.5σ', 'λ=0.1 latent lr=0.1',
                                          'λ=0.1 +aug', 'λ=0.1 +aug(shift_flip)']
  text = tables.markdown(rows)
  assert '| 8,000 | 8.00 | 133× |  | 1.90 % |' in text  # No validation split: blank.
  pub = tables.published_markdown(rows, [{'dataset': 'mnist', 'model': 'lenet300',
                                          'method': 'x', 'num_bytes': 8560, 'error_pct': 1.9,
                                          'float_error_pct': 1.6, 'source': 'paper'}])
  assert '| 8.56 | 125× | 1.9 % (1.6 %) | paper |' in pub
  plot_rd.plot(rows, [], 'mnist', 'lenet300', str(tmp_path / 'rd.png'))
  assert (tmp_path / 'rd.png').read_bytes()[:4] == b'\x89PNG'


def test_every_published_row_names_its_source():
  for p in tables.published():
    assert p['source'] and p['cite'] and p['num_bytes'] > 0 and 0 < p['error_pct'] < 100


def test_each_baseline_row_names_its_rate_setting(tmp_path):
  config = {'train': {'num_epochs': 3},
            'prune': {'sparsity': 0.9, 'rel_step': 0.5},
            'surp': {'sparsity': 0.95, 'beta_scale': 1.0, 'refine': 0.0},
            'miracle': {'bits': 10, 'block_size': 20, 'max_vars': 40000,
                        'pretrain_epochs': 1, 'kl_epochs': 20}}
  for method in ('prune', 'surp', 'miracle'):
    _write(tmp_path, 'mnist', f'run_{method}', method, 5000, 2.0, config)
  config['prune']['scope'] = 'global'
  _write(tmp_path, 'mnist', 'run_global', 'prune', 5000, 2.0, config)
  rows = run_rows.rows(str(tmp_path))
  settings = {r['run']: r['setting'] for r in rows}
  assert settings == {'run_prune': 'sparsity=0.9 step=0.5σ',
                      'run_global': 'sparsity=0.9 global step=0.5σ',
                      'run_surp': 'sparsity=0.95 β=1·ln n refine=0',
                      'run_miracle': '10 bits/20 vars, ≤40000 vars/leaf'}
  assert {r['run']: r['epochs'] for r in rows}['run_miracle'] == 21


def test_versus_finds_a_smaller_and_better_file_or_none(tmp_path):
  config = {'train': {'num_epochs': 3}, 'rd': {'lmbda': 0.1}, 'uniform': {'rel_step': 0.5}}
  _write(tmp_path, 'mnist', 'epr_big', 'epr', 20_000, 1.5, config)
  _write(tmp_path, 'mnist', 'epr_small', 'epr', 8_000, 1.9, config)
  _write(tmp_path, 'mnist', 'u_coarse', 'uniform', 40_000, 3.0, config)
  _write(tmp_path, 'mnist', 'u_fine', 'uniform', 150_000, 1.4, config)
  _write(tmp_path, 'mnist', 'u_tiny', 'uniform', 5_000, 80.0, config)
  triples = tables.versus(run_rows.rows(str(tmp_path)))
  # Sorted by the uniform file's size; the smallest EPR file that is no larger and
  # better, else the best EPR file no larger (to show the miss), else nothing.
  assert [(b['run'], w and w['run'], best and best['run']) for b, w, best in triples] == [
      ('u_tiny', None, None), ('u_coarse', 'epr_small', 'epr_big'),
      ('u_fine', None, 'epr_big')]
  text = tables.versus_markdown(triples)
  assert '| u_coarse | 40.00 | 3.00 % | yes | epr_small | 8.00 | 1.90 % |' in text
  assert '| u_fine | 150.00 | 1.40 % | **no** | epr_big | 20.00 | 1.50 % |' in text
  assert text.count('**no**') == 2


def test_tables_read_a_sweep_root_and_refuse_to_write_an_empty_table(tmp_path):
  sweep = tmp_path / 'sweep'
  base = {'train': {'num_epochs': 3}, 'rd': {'lmbda': 0.1}}
  _write(sweep, '', 'lmbda0.1', 'epr', 5000, 2.0, base)  # sweep.py's ROOT/RUN/result.json.
  assert [r['run'] for r in run_rows.rows(str(sweep))] == ['lmbda0.1']
  readme = tmp_path / 'README.md'
  readme.write_text('a\n<!-- results:start -->\nOLD\n<!-- results:end -->\nb\n')
  empty = tmp_path / 'empty'
  empty.mkdir()
  for script in ('tables.py', 'plot_rd.py'):
    args = ['--results', str(empty)] + (['--readme', str(readme)] if script == 'tables.py' else [])
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'experiments', script)] + args,
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and 'nothing' in proc.stderr, proc.stderr
  assert 'OLD' in readme.read_text()
  out = tmp_path / 'new' / 'deeper' / 'summary.md'  # Output folders are created.
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'experiments', 'tables.py'),
                         '--results', str(sweep), '--out', str(out)], capture_output=True,
                        text=True, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert 'lmbda0.1' in out.read_text() and not (tmp_path / 'README.md').read_text() == ''


def test_seed_means_average_runs_that_differ_only_in_their_seed(tmp_path):
  runs = [('epr_seed1', 1500, 0.9, 1.0), ('epr_seed2', 1600, 1.1, 0.8),
          ('epr_seed3', 1400, 1.0, 0.9), ('epr_newcode_seed1', 1450, 1.0, 0.9)]
  for i, (run, size, val, test) in enumerate(runs):
    config = {'train': {'num_epochs': 30}, 'rd': {'lmbda': 1.0}, 'seed': i % 3 + 1,
              'init_from': f'/session{i}/float'}
    _write(tmp_path, 'mnist', run, 'epr', size, test, config)
    path = tmp_path / 'mnist' / run / 'result.json'
    result = json.loads(path.read_text())
    result['export']['val_error_pct'] = val
    path.write_text(json.dumps(result))
  # Each seed started from a float run in another workdir: one setting. From scratch is another,
  # and so is a sweep of another name with the same config (a change of code, not of config).
  _write(tmp_path, 'mnist', 'epr_scratch', 'epr', 1500, 1.0,
         {'train': {'num_epochs': 30}, 'rd': {'lmbda': 1.0}, 'seed': 7, 'init_from': ''})
  path = tmp_path / 'mnist' / 'epr_scratch' / 'result.json'
  result = json.loads(path.read_text())
  result['export']['val_error_pct'] = 1.0
  path.write_text(json.dumps(result))
  _write(tmp_path, 'mnist', 'old', 'epr', 900, 2.0, {'train': {'num_epochs': 30},
                                                     'rd': {'lmbda': 1.0}, 'seed': 9})
  rows = run_rows.rows(str(tmp_path))
  groups = tables.seed_means(rows)  # 'old' has no validation split.
  assert sorted(g['runs'] for g in groups) == [['epr_newcode_seed1'],
                                               ['epr_scratch'],
                                               ['epr_seed1', 'epr_seed2', 'epr_seed3']]
  (group,) = [g for g in groups if len(g['runs']) == 3]
  mine = dict(rows[0], series='epr (this notebook)')
  plot_rd.plot(rows, [], 'mnist', 'lenet300', str(tmp_path / 'rd.png'), highlight=[mine])
  assert (tmp_path / 'rd.png').read_bytes()[:4] == b'\x89PNG'
  assert group['seeds'] == [1, 2, 3] and group['num_bytes'] == (1500.0, 100.0)
  assert abs(group['val_error_pct'][0] - 1.0) < 1e-12 and abs(group['error_pct'][1] - 0.1) < 1e-12
  assert '| 1.500 ± 0.100 | 1.00 ± 0.10 % | 0.90 ± 0.10 % |' in tables.seed_markdown([group])


def test_a_teacher_of_another_model_or_an_ensemble_is_named_and_kept_apart(tmp_path):
  kd = {'train': {'num_epochs': 10, 'distill_from': '/float', 'distill_weight': 0.5,
                  'distill_temperature': 4.0}, 'rd': {'lmbda': 1.0}, 'model': {'name': 'lenet300'}}
  teachers = {'own': {'name': 'lenet300', 'width': 1}, 'conv': {'name': 'lenet5', 'width': 1},
              'trio': {'name': 'lenet300', 'width': 1, 'ensemble': 3}}
  for run, teacher in teachers.items():
    for seed in (1, 2):
      _write(tmp_path, 'mnist', f'{run}_seed{seed}', 'epr', 5000, 2.0, {**kd, 'seed': seed})
      path = tmp_path / 'mnist' / f'{run}_seed{seed}' / 'result.json'
      result = json.loads(path.read_text())
      result['export']['val_error_pct'] = 2.0
      result['teacher_model'] = teacher
      path.write_text(json.dumps(result))
  rows = run_rows.rows(str(tmp_path))
  assert {r['run']: r['setting'] for r in rows} == {
      'own_seed1': 'λ=1 +kd(w=0.5, T=4)', 'own_seed2': 'λ=1 +kd(w=0.5, T=4)',
      'conv_seed1': 'λ=1 +kd(lenet5, w=0.5, T=4)',
      'conv_seed2': 'λ=1 +kd(lenet5, w=0.5, T=4)',
      'trio_seed1': 'λ=1 +kd(3 teachers, w=0.5, T=4)',
      'trio_seed2': 'λ=1 +kd(3 teachers, w=0.5, T=4)'}
  assert sorted(g['runs'] for g in tables.seed_means(rows)) == [
      ['conv_seed1', 'conv_seed2'], ['own_seed1', 'own_seed2'], ['trio_seed1', 'trio_seed2']]


def test_runs_from_an_augmented_float_run_are_labelled_and_never_merged_with_plain_ones(
    tmp_path):
  """float_runs in result.json: an augmented float run (started from, distilled from) is
  named in the setting and keeps its runs apart; a plain one groups with runs that
  predate the record."""
  kd = {'train': {'num_epochs': 10, 'distill_from': '/float', 'distill_weight': 0.5,
                  'distill_temperature': 4.0}, 'rd': {'lmbda': 1.0}, 'init_from': '/float',
        'model': {'name': 'lenet5'}}
  aug = {'augment': True, 'num_epochs': 40}
  plain = {'augment': False, 'num_epochs': 20}
  # plain_seed2's result.json predates float_runs: its float run was plain too.
  for run, recipe in (('plain_seed1', plain), ('plain_seed2', None), ('aug_seed1', aug),
                      ('aug_seed2', aug)):
    seed = int(run[-1])
    _write(tmp_path, 'mnist', run, 'epr', 5000, 2.0, {**kd, 'seed': seed})
    path = tmp_path / 'mnist' / run / 'result.json'
    result = json.loads(path.read_text())
    result['export']['val_error_pct'] = 2.0
    if recipe:
      result['float_runs'] = {'init_from': recipe, 'distill_from': recipe}
    path.write_text(json.dumps(result))
  rows = run_rows.rows(str(tmp_path))
  settings = {r['run']: r['setting'] for r in rows}
  assert settings['aug_seed1'] == ('λ=1 from float(+aug, 40 ep) +kd(teacher(+aug, 40 ep), '
                                   'w=0.5, T=4)')
  assert settings['plain_seed1'] == settings['plain_seed2'] == 'λ=1 from float +kd(w=0.5, T=4)'
  assert sorted(g['runs'] for g in tables.seed_means(rows)) == [
      ['aug_seed1', 'aug_seed2'], ['plain_seed1', 'plain_seed2']]


def _group(method, num_bytes, val, test, seeds=(1,)):
  return {'dataset': 'mnist', 'model': 'lenet5', 'method': method, 'setting': f'{method}@{num_bytes}',
          'epochs': 1, 'runs': ['r'], 'seeds': list(seeds), 'num_bytes': (num_bytes, 0.0),
          'val_error_pct': (val, 0.0), 'error_pct': (test, 0.0)}


def test_fronts_are_chosen_on_the_val_error_and_compare_at_equal_val_error():
  groups = [_group('epr', 1500, 1.2, 0.9), _group('epr', 1600, 1.3, 0.8),  # beaten on val
            _group('epr', 3000, 1.0, 1.1), _group('prune', 8000, 1.25, 1.1),
            _group('prune', 12000, 1.05, 1.0), _group('prune', 9000, 1.25, 1.2)]
  front = fronts.val_fronts(groups)
  # The 1,600 B run has the best test error but is beaten on val: not on the front.
  assert [g['num_bytes'][0] for g in front[('mnist', 'lenet5', 'epr')]] == [1500, 3000]
  assert [g['num_bytes'][0] for g in front[('mnist', 'lenet5', 'prune')]] == [8000, 12000]
  pairs = fronts.at_equal_error(front, groups, 'prune', 'epr')
  assert [(g['num_bytes'][0], m and m['num_bytes'][0]) for g, m in pairs] == [
      (8000, 1500), (12000, 3000)]
  assert [m for _, m in fronts.at_equal_error(front, groups, 'epr', 'prune')] == [
      groups[4], None]  # Prune at val <= 1.2 % is 12 kB; nothing reaches 1.0 %.
  text = fronts.at_equal_error_markdown(pairs, 'prune', 'epr')
  assert '| 8.000 | 1.25 % | epr@1500 | 1 | 1.500 | 1.20 % | 0.19 |' in text
  pub = {'dataset': 'mnist', 'model': 'lenet5', 'method': 'miracle (published)',
         'num_bytes': 1520, 'error_pct': 0.96, 'cite': 'Havasi et al. 2019'}
  table = fronts.fronts_markdown(front, [pub])
  assert '| mnist | lenet5 | miracle (published) | Havasi et al. 2019 | | 1.52 | | 0.96 % |' in table
  assert table.count('\n') == 2 + 4 + 1
