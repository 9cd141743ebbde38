"""Shared fixtures: the real data directory (../shared/data or $ERP_DATA_DIR)."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def data_dir():
  path = os.environ.get('ERP_DATA_DIR') or os.path.join(REPO, '..', 'shared', 'data')
  if not os.path.isdir(os.path.join(path, 'mnist')):
    raise FileNotFoundError(f'MNIST original files not found under {path}; set ERP_DATA_DIR')
  return path


def load_config(name, arg=None):
  """get_config of configs/<name>.py, unlocked copy for editing in tests."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
