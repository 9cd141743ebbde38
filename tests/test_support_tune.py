"""experiments/support_tune.py: a retuned file keeps its support, and reports what it decodes to."""
import importlib.util
import os

import numpy as np
import pytest

from conftest import REPO
from erp import evaluate
from erp.errors import ErpError

FILE = os.path.join(REPO, 'experiments', 'results', 'fashion_mnist',
                    'lenet5_epr_val_ffkd_ep40_pf8_lmbda7_seed1', 'model.erp')


@pytest.fixture(scope='module')
def support_tune():
  spec = importlib.util.spec_from_file_location(
      'support_tune', os.path.join(REPO, 'experiments', 'support_tune.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
  monkeypatch.setenv('ERP_DATA_DIR', data_dir)


def test_without_steps_the_file_is_rewritten_byte_for_byte(support_tune):
  record, blob = support_tune.tune(FILE, mode='grid', epochs=0, log=None)
  with open(FILE, 'rb') as f:
    assert blob == f.read()
  assert record['num_bytes'] == len(blob)
  assert record['rounded_test_error_pct'] == evaluate.evaluate_file(FILE)['error_pct']


def test_a_retuned_finer_grid_keeps_the_support_and_decodes_to_its_report(support_tune,
                                                                          tmp_path):
  record, blob = support_tune.tune(FILE, mode='grid', epochs=1, step_div=2,
                                   num_steps=5, lr_scale=4.0, log=None)
  out = tmp_path / 'retuned.erp'
  out.write_bytes(blob)
  _, before, _ = support_tune.read_groups(FILE)
  _, after, _ = support_tune.read_groups(str(out))
  moved = 0
  for (old, old_decoder), (new, new_decoder) in zip(before, after):
    np.testing.assert_array_equal(old != 0, new != 0)  # Zeros stay zero, the rest off zero.
    moved += int((new != 2 * old).sum())
    np.testing.assert_allclose(np.exp(new_decoder['log_step']),
                               np.exp(old_decoder['log_step']) / 2, rtol=5e-3)
  assert moved > 0  # Five steps at 4x the run's latent learning rate move some.
  assert record['num_bytes'] == len(blob)
  assert len(record['val_error_pct']) == 1
  assert evaluate.evaluate_file(str(out))['error_pct'] == record['rounded_test_error_pct']


def test_an_unknown_mode_is_refused(support_tune):
  with pytest.raises(ErpError, match='mode must be one of'):
    support_tune.tune(FILE, mode='exact', epochs=1)



def test_labels_alone_unless_a_teacher_is_named_and_a_missing_one_is_refused(support_tune,
                                                                              tmp_path):
  record, _ = support_tune.tune(FILE, mode='grid', epochs=0, log=None)
  assert record['distill_weight'] == 0.0 and record['teacher'] == ''
  with pytest.raises(ErpError):
    support_tune.tune(FILE, mode='grid', epochs=0, teacher=str(tmp_path / 'no_such_run'))


def test_a_file_with_leaves_of_another_codec_is_refused(support_tune):
  miracle = os.path.join(REPO, 'experiments', 'results', 'fashion_mnist',
                         'lenet5_miracle_val_v12500_kl12_block_size15_seed0', 'model.erp')
  with pytest.raises(ErpError, match='every leaf is EPR-coded'):
    support_tune.read_groups(miracle)
