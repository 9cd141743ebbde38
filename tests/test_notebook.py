"""The quickstart notebook re-executes top to bottom as committed (a few CPU minutes)."""
import json
import os

import matplotlib

from conftest import REPO


def test_quickstart_notebook_runs_and_beats_uniform_quantization(tmp_path, data_dir, monkeypatch):
  matplotlib.use('Agg')
  with open(os.path.join(REPO, 'notebooks', 'quickstart.ipynb')) as f:
    nb = json.load(f)
  cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
  outputs = [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
  assert any('image/png' in o.get('data', {}) for o in outputs), 'committed without its figure'
  assert any('beats uniform' in ''.join(o.get('text', '')) for o in outputs)
  assert "WORKDIR = " in cells[0]
  cells[0] += f'\nWORKDIR = {str(tmp_path / "run")!r}\n'
  monkeypatch.setenv('ERP_DATA_DIR', data_dir)
  monkeypatch.chdir(os.path.join(REPO, 'notebooks'))
  scope = {}
  for cell in cells:
    exec(compile(cell, 'quickstart.ipynb', 'exec'), scope)
  path = tmp_path / 'run' / f'epr_lmbda{scope["LMBDA"]}' / 'model.erp'
  assert scope['record']['num_bytes'] == os.path.getsize(path)
  assert scope['beaten']  # The notebook's own check: a uniform point it is smaller and better than.
  assert len(scope['rows']) == 6 and os.path.getsize(scope['figure']) > 10_000
