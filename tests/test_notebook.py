"""The quickstart notebook runs top to bottom (its code cells, with 1 training epoch)."""
import json
import os

import matplotlib

from conftest import REPO


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, data_dir, monkeypatch):
  matplotlib.use('Agg')
  with open(os.path.join(REPO, 'notebooks', 'quickstart.ipynb')) as f:
    nb = json.load(f)
  cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
  assert 'EPOCHS = 4' in cells[0] and "WORKDIR = " in cells[0]
  cells[0] = cells[0].replace('EPOCHS = 4', 'EPOCHS = 1')
  cells[0] += f'\nWORKDIR = {str(tmp_path / "run")!r}\n'
  monkeypatch.setenv('ERP_DATA_DIR', data_dir)
  monkeypatch.chdir(os.path.join(REPO, 'notebooks'))
  scope = {}
  for cell in cells:
    exec(compile(cell, 'quickstart.ipynb', 'exec'), scope)
  assert scope['record']['num_bytes'] == os.path.getsize(tmp_path / 'run' / 'model.erp')
  assert scope['record']['error_pct'] < 10
  assert len(scope['rows']) == 6
