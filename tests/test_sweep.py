import os
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'experiments'))
import sweep  # noqa: E402


def test_grid_is_the_cartesian_product_with_flat_names():
  runs = sweep.grid(['rd.lmbda=0.1,0.2', 'init_from=,/tmp/float/run1/'])
  names = [name for name, _ in runs]
  assert names == ['lmbda0.1_init_from', 'lmbda0.1_init_fromrun1',
                   'lmbda0.2_init_from', 'lmbda0.2_init_fromrun1']
  assert all('/' not in n for n in names)
  assert runs[1][1] == ['--config.rd.lmbda=0.1', '--config.init_from=/tmp/float/run1/']


def test_no_sweep_axes_is_one_run():
  assert sweep.grid([]) == [('run', [])]


def test_progress_reads_the_last_line_of_a_runs_log(tmp_path):
  (tmp_path / 'run1').mkdir()
  (tmp_path / 'run1' / 'train.log').write_text('step 1\n' + 'x' * 5000 + '\nstep 200/468 ETA 0:01\n\n')
  assert sweep.last_line(str(tmp_path), 'run1') == 'step 200/468 ETA 0:01'
  assert sweep.last_line(str(tmp_path), 'not_started') == ''
