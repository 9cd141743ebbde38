"""Baselines on the shared harness: they write .erp files that erp's loader decodes."""
import json
import os

import numpy as np
import pytest

import erp
from erp import container
from erp import train
from erp.baselines import common
from erp.baselines import prune
from erp.baselines import uniform
from conftest import load_config


@pytest.fixture(scope='module')
def float_run(tmp_path_factory, data_dir):
  """A 1-epoch float LeNet-300-100 and its config, the starting point of every baseline."""
  workdir = tmp_path_factory.mktemp('float')
  c = load_config('mnist_lenet300')
  c.unlock()
  c.data.dir = data_dir
  c.train.num_epochs = 1
  result = train.train_and_evaluate(c, str(workdir))
  c.init_from = str(workdir)
  return c, result


def test_uniform_file_holds_the_rounded_weights(float_run, tmp_path):
  config, float_result = float_run
  config.uniform.rel_step = 0.25
  result = uniform.run(config, str(tmp_path))
  assert result['export']['num_bytes'] == os.path.getsize(tmp_path / 'model.erp')
  _, variables, _ = erp.load(str(tmp_path / 'model.erp'))
  _, _, start = common.float_start(config)
  for path, (q, step) in uniform.quantize(
      {'/'.join(k): v for k, v in _flat(start['params']).items()}, 0.25).items():
    decoded = np.asarray(_flat(variables['params'])[tuple(path.split('/'))])
    np.testing.assert_allclose(decoded, q * step, rtol=1e-6)
    original = np.asarray(_flat(start['params'])[tuple(path.split('/'))])
    assert np.abs(decoded - original).max() <= step / 2 * 1.0001
  _, header, _ = container.read((tmp_path / 'model.erp').read_bytes())
  assert header['metadata']['method'] == 'uniform'
  saved = json.loads((tmp_path / 'result.json').read_text())
  assert saved['export']['num_bytes'] == (tmp_path / 'model.erp').stat().st_size
  # Quarter-std steps keep the model: within a point of the float error.
  assert abs(saved['export']['error_pct'] - float_result['test_error_pct']) < 1.0
  # The held-out split is evaluated from the same file, for choosing settings on it.
  if config.data.val_size:
    assert abs(saved['val_error_pct'] - float_result['val_error_pct']) < 1.0
  else:
    assert saved['val_error_pct'] is None


def test_coarser_steps_give_smaller_files(float_run, tmp_path):
  config, _ = float_run
  sizes = []
  for rel_step in (0.1, 0.5, 2.0):
    config.uniform.rel_step = rel_step
    sizes.append(uniform.run(config, str(tmp_path / str(rel_step)))['export']['num_bytes'])
  assert sizes[0] > sizes[1] > sizes[2], sizes
  assert sizes[2] < 266_610 * 4 / 20  # Two-std steps: ~1.3 bits per weight.


def test_a_baseline_without_a_float_run_is_a_named_error(float_run, tmp_path):
  config, _ = float_run
  config = config.copy_and_resolve_references()
  config.init_from = ''
  with pytest.raises(erp.ErpError, match='init_from'):
    uniform.run(config, str(tmp_path))


def test_magnitude_masks_drop_the_smallest_weights_of_kernels_only():
  rng = np.random.default_rng(0)
  params = {'k': rng.normal(size=(40, 50)), 'b': rng.normal(size=(50,))}
  masks = prune.magnitude_masks(params, 0.9)
  assert masks['k'].sum() == 200 and masks['b'].sum() == 50
  assert np.abs(params['k'][masks['k'] == 0]).max() < np.abs(params['k'][masks['k'] == 1]).min()


def test_global_magnitude_masks_share_one_threshold():
  rng = np.random.default_rng(1)
  params = {'big': rng.normal(size=(40, 50)), 'small': 10 * rng.normal(size=(5, 20)),
            'b': rng.normal(size=(50,))}
  masks = prune.magnitude_masks(params, 0.9, 'global')
  assert masks['big'].sum() + masks['small'].sum() == 210 and masks['b'].sum() == 50
  kept = np.concatenate([np.abs(params[p][masks[p] == 1]) for p in ('big', 'small')])
  dropped = np.concatenate([np.abs(params[p][masks[p] == 0]) for p in ('big', 'small')])
  assert dropped.max() < kept.min()
  assert masks['small'].mean() > 0.5 > masks['big'].mean()  # The large-weight kernel survives.
  with pytest.raises(ValueError, match='scope'):
    prune.magnitude_masks(params, 0.9, 'per-channel')


def test_pruned_file_keeps_the_sparsity_and_the_accuracy(float_run, tmp_path):
  config, float_result = float_run
  config.prune.sparsity, config.prune.retrain_epochs, config.prune.quant_epochs = 0.9, 1, 1
  result = prune.run(config, str(tmp_path))
  _, variables, _ = erp.load(str(tmp_path / 'model.erp'))
  for path, value in _flat(variables['params']).items():
    if path[-1] == 'kernel':
      assert (np.asarray(value) == 0).mean() >= 0.9, path
  assert result['export']['error_pct'] < float_result['test_error_pct'] + 1.5
  # 10 % of the weights on a half-std grid: far below uniform quantization's size.
  assert result['export']['num_bytes'] < 266_610 * 4 / 25
  _, header, _ = container.read((tmp_path / 'model.erp').read_bytes())
  assert header['metadata']['method'] == 'prune'


def _flat(tree):
  from flax import traverse_util
  return traverse_util.flatten_dict(tree)


def test_surp_file_is_pruned_retrained_and_decodes(float_run, tmp_path):
  from erp.baselines import surp
  config, float_result = float_run
  config.surp.sparsity, config.surp.rounds, config.surp.retrain_epochs = 0.9, 1, 1
  config.surp.refine = 1.0  # One round from a 1-epoch model: refine the values.
  result = surp.run(config, str(tmp_path))
  _, variables, _ = erp.load(str(tmp_path / 'model.erp'))
  for path, value in _flat(variables['params']).items():
    if path[-1] == 'kernel':
      assert abs((np.asarray(value) == 0).mean() - 0.9) < 0.01, path
  _, header, _ = container.read((tmp_path / 'model.erp').read_bytes())
  assert header['metadata']['method'] == 'surp'
  assert [leaf[2] for leaf in header['leaves'] if leaf[1].endswith('kernel')] == ['surp'] * 3
  # The code keeps what retraining reached (one short round here: a few points lost).
  assert result['export']['val_error_pct'] < result['retrained_val_error_pct'] + 1.0
  assert result['export']['error_pct'] < float_result['test_error_pct'] + 5.0
  assert result['export']['num_bytes'] < 266_610  # Under 8 bits per weight.


def test_global_surp_spreads_one_sparsity_over_all_leaves(float_run, tmp_path):
  from erp.baselines import surp
  config, float_result = float_run
  s = config.surp
  s.scope, s.sparsity, s.rounds, s.retrain_epochs, s.refine = 'global', 0.3, 0, 1, 0.0
  assert surp.stages(s) == pytest.approx([0.2, 0.3])  # The authors' stages, up to 0.3.
  result = surp.run(config, str(tmp_path))
  _, header, _ = container.read((tmp_path / 'model.erp').read_bytes())
  assert {leaf[2] for leaf in header['leaves']} == {'surp_global'}  # Biases too.
  _, variables, _ = erp.load(str(tmp_path / 'model.erp'))
  values = {path: np.asarray(v) for path, v in _flat(variables['params']).items()}
  zeros = sum(int((v == 0).sum()) for v in values.values())
  size = sum(v.size for v in values.values())
  assert abs(zeros / size - 0.3) < 0.005 and result['zero_fraction'] == zeros / size
  # One threshold over L2-normalized tensors: the 235k-weight kernel, whose normalized
  # weights are small, is pruned far more than the 1k-weight output kernel.
  layer_zeros = {p[0]: (v == 0).mean() for p, v in values.items() if p[-1] == 'kernel'}
  assert layer_zeros['Dense_0'] > 0.3 > layer_zeros['Dense_2'] + 0.1, layer_zeros
  assert result['export']['error_pct'] < float_result['test_error_pct'] + 2.0


def test_miracle_file_is_the_sent_indices_and_decodes(float_run, tmp_path):
  from erp.baselines import miracle
  config, float_result = float_run
  m = config.miracle
  m.max_vars, m.block_size, m.bits = 60000, 2, 8  # 4 bits per variable: a loose budget.
  m.pretrain_epochs, m.kl_epochs, m.blocks_per_round, m.retrain_steps = 0, 1, 8192, 2
  m.beta_step = 1.005  # One short epoch: let the penalties adapt fast.
  result = miracle.run(config, str(tmp_path))
  blob = (tmp_path / 'model.erp').read_bytes()
  _, header, sections = container.read(blob)
  assert header['metadata']['method'] == 'miracle'
  assert {leaf[2] for leaf in header['leaves']} == {'miracle'}
  # The file is the indices (bits per block) plus a few bytes per leaf and the header.
  assert result['index_bits'] == result['num_blocks'] * 8
  assert sum(len(p) for _, p in sections) <= result['index_bits'] / 8 + 6 * 11
  _, variables, _ = erp.load(str(tmp_path / 'model.erp'))
  kernel = np.asarray(_flat(variables['params'])[('Dense_0', 'kernel')])
  lay = miracle.layout(config, 'Dense_0/kernel', kernel.size)
  assert lay['num_vars'] == 58800  # 235,200 weights in buckets of 4.
  pairs = np.stack([lay['rank'] % lay['num_vars'], kernel.ravel() * lay['sign']], 1)
  assert len(np.unique(pairs, axis=0)) == lay['num_vars']  # One variable per hash bucket.
  # A generous budget: the sampled network keeps the float run's accuracy.
  assert result['export']['error_pct'] < float_result['test_error_pct'] + 1.0
