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
