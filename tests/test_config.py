import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

import erp

from conftest import REPO, load_config


def _parse(args, config='mnist_lenet300.py'):
  """Parse a command line as erp.train does (config_flags reads overrides from sys.argv)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'cfg', flag_values=fv, lock_config=True)
  argv = ['prog', f'--config={os.path.join(REPO, "configs", config)}'] + args
  saved, sys.argv = sys.argv, argv
  try:
    fv(argv)
  finally:
    sys.argv = saved
  return fv.config


def test_override_sets_nested_fields():
  c = _parse(['--config.rd.lmbda=0.25', '--config.rd.enabled=True', '--config.train.num_epochs=3'])
  assert c.rd.lmbda == 0.25 and c.rd.enabled is True and c.train.num_epochs == 3


def test_config_file_argument_selects_dataset():
  c = _parse([], config='mnist_lenet5.py:fashion_mnist')
  assert c.data.name == 'fashion_mnist' and c.model.name == 'lenet5'


def test_unknown_key_is_an_error():
  with pytest.raises(AttributeError, match='no_such_field'):
    _parse(['--config.rd.no_such_field=1'])


def test_cli_reports_an_unknown_key_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'erp.train', '--config=configs/mnist_lenet300.py',
       f'--workdir={tmp_path}', '--config.rd.no_such_field=1'],
      cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stderr.strip() == "erp: error: unknown config key 'rd.no_such_field'", proc.stderr
  proc = subprocess.run(
      [sys.executable, '-m', 'erp.train', '--config=configs/mnist_lenet300.py',
       f'--workdir={tmp_path}', '--config.rd.enabled=True', '--config.lmda=0.1'],
      cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
      "erp: error: unknown config key 'lmda' (did you mean 'rd.lmbda'?)"), proc.stderr


def test_wrong_type_is_an_error():
  with pytest.raises(flags.IllegalFlagValueError):
    _parse(['--config.train.num_epochs=many'])


@pytest.mark.parametrize('name', ['mnist_lenet300', 'mnist_lenet5', 'cifar10_resnet20',
                                  'cifar10_vgg16', 'imagenet_resnet18'])
def test_every_config_is_locked(name):
  c = load_config(name)
  with pytest.raises(AttributeError):
    c.not_a_field = 1


@pytest.mark.parametrize('overrides,message', [
    ({'rd.enabled': True}, 'rd.lmbda=0 trains without the rate term'),
    ({'rd.lmbda': 0.1}, 'rd.enabled=False'),
    ({'rd.enabled': True, 'rd.lmbda': float('nan')}, 'rd.lmbda must be a finite number'),
    ({'rd.enabled': True, 'rd.lmbda': float('inf')}, 'rd.lmbda must be a finite number'),
    ({'rd.enabled': True, 'rd.lmbda': -1.0}, 'rd.lmbda must be a finite number >= 0'),
    ({'optim.lr': float('nan')}, 'optim.lr must be'),
    ({'train.num_epochs': 0}, 'train.num_epochs must be'),
    ({'data.threads': 0}, 'data.threads must be'),
    ({'data.workers': -1}, 'data.workers must be'),
    ({'train.distill_weight': 1.5}, r'train.distill_weight must be in \[0, 1\]'),
    ({'train.distill_weight': float('nan')}, 'train.distill_weight must be a finite'),
    ({'train.distill_weight': 0.5}, 'needs train.distill_from'),
    ({'train.distill_temperature': 0.0}, 'train.distill_temperature must be > 0'),
    ({'rd.rate_table_points': 10}, 'a rate table needs at least 33 points'),
    ({'rd.prior_samples': -1}, 'rd.prior_samples must be'),
    ({'rd.prior_fit': 'exact'}, 'rd.prior_fit must be one of'),
    ({'rd.latent_gradient': 'exact'}, 'rd.latent_gradient must be one of'),
    ({'rd.prior_fit': 'noisy', 'rd.latent_gradient': 'interpolated'},
     "'interpolated' with rd.prior_fit other than 'noisy'"),
    ({'rd.adaptive_rate_max_latents': -1}, 'rd.adaptive_rate_max_latents must be an integer'),
    ({'rd.adaptive_rate_gradient': 'exact'}, 'rd.adaptive_rate_gradient must be one of'),
    ({'rd.group_lmbda': 'Dense_0=2'}, 'rd.group_lmbda is set but rd.enabled=False'),
])
def test_settings_that_would_train_something_else_are_refused(overrides, message):
  from erp.config import validate
  c = load_config('mnist_lenet300')
  c.unlock()
  for key, value in overrides.items():
    section, name = key.split('.')
    c[section][name] = value
  with pytest.raises(erp.ErpError, match=message):
    validate(c)
  c.rd.enabled, c.rd.lmbda, c.optim.lr, c.train.num_epochs = True, 0.1, 1e-3, 1
  c.data.threads, c.data.workers = 2, 0
  c.train.distill_weight, c.train.distill_temperature = 0.0, 1.0
  c.rd.rate_table_points, c.rd.prior_samples = 4096, 16384
  c.rd.prior_fit, c.rd.latent_gradient = 'active_base', 'interpolated'
  c.rd.adaptive_rate_max_latents, c.rd.adaptive_rate_gradient = 1024, 'code'
  c.rd.group_lmbda = ''
  validate(c)
