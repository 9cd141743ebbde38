"""Worst-case files (tests/hostile.py) load or are refused within 5 s and 1 GiB each.

Each file is loaded in a fresh process whose address space is capped (RLIMIT_AS), so a
loader that over-allocates fails here rather than on a user's machine; the process's
peak RSS (JAX and NumPy included) and the load time are asserted. The time bound holds for
the smaller of wall and CPU seconds: other processes on a shared machine inflate only the
wall time, XLA's thread pool only the CPU time, and a loader that does unbounded work
inflates both.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

HOSTILE = os.path.join(REPO, 'tests', 'hostile.py')
ADDRESS_SPACE_BYTES = 3 << 30
MAX_RSS_MB = 1024
MAX_SECONDS = 5.0


# The child caps its own address space first (no preexec_fn: forking a JAX process may deadlock).
_CAP = f'({ADDRESS_SPACE_BYTES}, {ADDRESS_SPACE_BYTES})'
LIMITED = ('import resource, runpy, sys; '
           f'resource.setrlimit(resource.RLIMIT_AS, {_CAP}); '
           'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')


def _env():
  return {**os.environ, 'PYTHONPATH': os.pathsep.join([REPO, os.path.join(REPO, 'tests')])}


@pytest.fixture(scope='module')
def hostile_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('hostile')
  subprocess.run([sys.executable, HOSTILE, 'build', str(directory)], check=True, env=_env(),
                 timeout=600)
  return directory


@pytest.mark.parametrize('name,expect', [
    ('epr_affine', 'loaded'), ('epr_dft', 'loaded'), ('epr_adaptive', 'loaded'),
    ('surp_iterations', 'loaded'), ('surp_global_iterations', 'loaded'),
    ('miracle_block_sizes', 'loaded'), ('miracle_large', 'loaded'), ('many_leaves', 'loaded'),
    ('over_budget', 'refused'), ('surp_over_budget', 'refused')])
def test_worst_case_file_is_bounded(hostile_dir, name, expect):
  out = subprocess.run(
      [sys.executable, '-c', LIMITED, HOSTILE, 'load', str(hostile_dir / f'{name}.erp')],
      capture_output=True, text=True, env=_env(), timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  record = json.loads(out.stdout.strip().splitlines()[-1])
  print(record)
  if expect == 'loaded':
    assert record['outcome'] == 'loaded', record
  else:
    assert record['outcome'].startswith('erp.errors.ErpError: the file declares'), record
  assert min(record['seconds'], record['cpu_seconds']) < MAX_SECONDS, record
  assert record['peak_rss_mb'] < MAX_RSS_MB, record
