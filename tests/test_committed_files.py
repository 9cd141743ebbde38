"""Every committed .erp file decodes to the same params everywhere.

tests/data/decoded_digests.json (experiments/digests.py) holds the sha256 of each
committed file's decoded variables. They are recomputed here in fresh processes
with XLA held to older vector ISAs (a CPU without AVX2/FMA, or without AVX) and
with 64-bit JAX: decoding is exact NumPy arithmetic, so nothing may change.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

DIGESTS = os.path.join(REPO, 'tests', 'data', 'decoded_digests.json')
SETTINGS = {
    'default': {},
    'avx': {'XLA_FLAGS': '--xla_cpu_max_isa=AVX'},
    'sse4_2_x64': {'XLA_FLAGS': '--xla_cpu_max_isa=SSE4_2', 'JAX_ENABLE_X64': '1'},
}


@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_committed_files_decode_to_their_digests(setting):
  with open(DIGESTS) as f:
    expected = json.load(f)['digests']
  assert len(expected) >= 100
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_ENABLE_X64')}
  env.update(SETTINGS[setting])
  out = subprocess.run([sys.executable, os.path.join(REPO, 'experiments', 'digests.py')],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  found = json.loads(out.stdout)['digests']
  assert set(found) == set(expected)
  changed = sorted(p for p in expected if found[p] != expected[p])
  assert not changed, f'{len(changed)} files decode differently under {setting}: {changed[:5]}'


def test_evaluate_fit_reproduces_a_runs_val_split_and_reports_its_training_error():
  run = os.path.join(REPO, 'experiments', 'results', 'mnist', 'lenet300_epr_val_ff_lmbda0.1_seed1')
  with open(os.path.join(run, 'result.json')) as f:
    logged = json.load(f)['export']
  out = subprocess.run([sys.executable, '-m', 'erp.evaluate', '--model',
                        os.path.join(run, 'model.erp'), '--fit', '--json'],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  record = json.loads(out.stdout)
  # The file's config cuts the same held-out val the run chose on, from the same decode.
  assert record['val_error_pct'] == logged['val_error_pct']
  assert record['error_pct'] == logged['error_pct']
  # 50,000 training images, the run's own: a LeNet-300-100 at 9 KB fits them below val.
  assert 0.0 <= record['train_error_pct'] < record['val_error_pct']
