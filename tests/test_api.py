"""The library face: a user's own linen and nnx models compressed through erp's public API.

Each model trains a few hundred steps on real MNIST with the rate, is saved, and
is loaded back in a fresh process that never imports the model's code.
"""
import json
import os
import subprocess
import sys

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import erp
from erp import data
from erp import leaves
from conftest import REPO

STEPS, BATCH, LMBDA = 300, 64, 1.0


class LinenCNN(nn.Module):
  """Conv-BatchNorm-ReLU blocks, Dropout, Dense; its norm layer is named bn1."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.BatchNorm(not train, name='bn1')(nn.Conv(8, (5, 5))(x)))
    x = nn.max_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes)(nn.Dropout(0.3, deterministic=not train)(x))


class NnxCNN(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 8, (5, 5), rngs=rngs)
    self.bn = nnx.BatchNorm(8, rngs=rngs)
    self.dropout = nnx.Dropout(0.3, rngs=rngs)
    self.fc = nnx.Linear(8 * 14 * 14, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    x = nnx.max_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
    return self.fc(self.dropout(x))


@pytest.fixture(scope='module')
def mnist(data_dir):
  images, labels = data.load('mnist', 'train', data_dir)
  return (jnp.asarray(images[:8192], jnp.float32) / 255 - 0.1307) / 0.3081, labels[:8192]


def _batches(mnist):
  images, labels = mnist
  for step in range(STEPS):
    idx = np.random.default_rng(step).integers(0, len(labels), BATCH)
    yield images[idx], labels[idx], jax.random.PRNGKey(step)


def _loaded_in_fresh_process(path, tmp_path):
  """{collection/path: array} of erp.load_variables(path) run in a new interpreter."""
  out = tmp_path / 'loaded.npz'
  script = ('import sys, numpy as np, erp\n'
            'from erp import leaves\n'
            'v = erp.load_variables(sys.argv[1])\n'
            'paths, values, _ = leaves.flatten(v)\n'
            'np.savez(sys.argv[2], **dict(zip(paths, map(np.asarray, values))))\n'
            'print(sorted(sys.modules))\n')
  proc = subprocess.run([sys.executable, '-c', script, str(path), str(out)], cwd=tmp_path,
                        capture_output=True, text=True, check=True,
                        env={**os.environ, 'PYTHONPATH': REPO})
  modules = eval(proc.stdout.strip().splitlines()[-1])
  assert not any(m.startswith(('test_', 'erp.models', 'erp.train')) for m in modules)
  return dict(np.load(out))


def _flat(tree, prefix):
  paths, values, _ = leaves.flatten(tree)
  return {f'{prefix}/{p}': np.asarray(v) for p, v in zip(paths, values)}


def test_linen_model_of_ones_own_trains_saves_and_loads_from_the_file_alone(mnist, tmp_path):
  model = LinenCNN()
  variables = model.init(jax.random.PRNGKey(0), mnist[0][:1])
  state = erp.reparameterize(variables['params'])
  kinds = dict(state.kinds)
  # The norm layer named bn1 stays float by its role; conv and dense are compressed.
  assert kinds['bn1/scale'] == kinds['bn1/bias'] == 'float'
  assert kinds['Conv_0/kernel'] == 'dft' and kinds['Dense_0/kernel'] == 'affine'
  batch_stats, tx = variables['batch_stats'], erp.optimizer()
  opt_state = tx.init(state)

  @jax.jit
  def step(state, opt_state, batch_stats, x, y, rng):
    def loss_fn(state):
      k_rate, k_dropout = jax.random.split(rng)
      logits, new = model.apply({'params': erp.decode(state), 'batch_stats': batch_stats}, x,
                                train=True, rngs={'dropout': k_dropout}, mutable=['batch_stats'])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      bits = erp.rate(state, k_rate)
      return ce + LMBDA * bits / 60000, (new['batch_stats'], ce, bits)
    grads, (batch_stats, ce, bits) = jax.grad(loss_fn, has_aux=True)(state)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, batch_stats, ce, bits

  history = []
  for x, y, rng in _batches(mnist):
    state, opt_state, batch_stats, ce, bits = step(state, opt_state, batch_stats, x, y, rng)
    history.append((float(ce), float(bits)))
  assert np.mean([c for c, _ in history[-20:]]) < 0.5 * np.mean([c for c, _ in history[:20]])
  assert history[-1][1] < 0.8 * history[0][1]  # The rate term is optimized too.
  # Norm params trained as floats (not frozen).
  assert not np.array_equal(state.floats['bn1/scale'], variables['params']['bn1']['scale'])

  saved = erp.save(tmp_path / 'mine.erp', state, extra={'batch_stats': batch_stats})
  assert saved['num_bytes'] == os.path.getsize(tmp_path / 'mine.erp')
  num_params = sum(np.size(v) for v in jax.tree.leaves(variables['params']))
  assert saved['num_bytes'] < 4 * num_params / 4
  loaded = _loaded_in_fresh_process(tmp_path / 'mine.erp', tmp_path)
  expected = {**_flat(erp.decode(state, exact=True), 'params'),
              **_flat(batch_stats, 'batch_stats')}
  assert set(loaded) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
  # Training's decode differs by the file's decoder grid: steps within 0.4 %, a shift
  # within 1/32 of its group's step (erp.reparam.file_decoder).
  for key, value in _flat(erp.decode(state), 'params').items():
    path = key.removeprefix('params/')
    if path not in state.decoders:
      continue
    step = float(np.exp(np.max(np.asarray(state.decoders[path]['log_step']))))
    tol = 0.004 * float(np.abs(value).max()) + step / 32 + 1e-7
    np.testing.assert_allclose(loaded[key], value, rtol=0, atol=tol, err_msg=key)
    assert not np.array_equal(loaded[key], value) or not np.any(value)  # Snapped, measurably.
  np.testing.assert_array_equal(loaded['params/bn1/scale'], state.floats['bn1/scale'])
  # In this process too, and the loaded variables run the model unchanged.
  again = erp.load_variables(tmp_path / 'mine.erp')
  assert jax.tree.structure(again) == jax.tree.structure(
      {'params': jax.tree.map(np.asarray, erp.decode(state)), 'batch_stats': batch_stats})
  np.testing.assert_array_equal(
      model.apply(again, mnist[0][:64]),
      model.apply({'params': erp.decode(state, exact=True), 'batch_stats': batch_stats},
                  mnist[0][:64]))


def test_nnx_model_trains_saves_and_loads_from_the_file_alone(mnist, tmp_path):
  model = NnxCNN(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  state = erp.reparameterize(params, model=model)
  kinds = dict(state.kinds)
  assert kinds['bn/scale'] == kinds['bn/bias'] == 'float'
  assert kinds['conv/kernel'] == 'dft' and kinds['fc/kernel'] == 'affine'
  tx = erp.optimizer()
  opt_state = tx.init(state)

  @jax.jit
  def step(state, opt_state, rest, x, y, rng):
    def loss_fn(state):
      # The map rebuilds rest's Variables inside this trace, so BatchNorm may update them.
      net = nnx.merge(graphdef, erp.decode(state), jax.tree.map(lambda v: v, rest))
      ce = optax.softmax_cross_entropy_with_integer_labels(net(x), y).mean()
      return ce + LMBDA * erp.rate(state, rng) / 60000, (nnx.split(net, nnx.Param, ...)[2], ce)
    grads, (rest, ce) = jax.grad(loss_fn, has_aux=True)(state)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, rest, ce

  ces = []
  for x, y, rng in _batches(mnist):  # Dropout's key lives in rest (nnx.Rngs).
    state, opt_state, rest, ce = step(state, opt_state, rest, x, y, rng)
    ces.append(float(ce))
  assert np.mean(ces[-20:]) < 0.5 * np.mean(ces[:20])
  batch_stats = nnx.state(nnx.merge(graphdef, erp.decode(state), rest), nnx.BatchStat)
  assert not np.array_equal(batch_stats['bn']['mean'][...], np.zeros(8))
  extra = {'batch_stats': nnx.to_pure_dict(batch_stats)}
  erp.save(tmp_path / 'nnx.erp', state, extra=extra)
  loaded = _loaded_in_fresh_process(tmp_path / 'nnx.erp', tmp_path)
  expected = {**_flat(erp.decode(state, exact=True), 'params'),
              **_flat(extra['batch_stats'], 'batch_stats')}
  assert set(loaded) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
  np.testing.assert_array_equal(loaded['params/bn/scale'], state.floats['bn/scale'])


def test_fine_tuning_a_trained_float_model(mnist, tmp_path):
  model = LinenCNN()
  variables = model.init(jax.random.PRNGKey(0), mnist[0][:1])
  params, tx = variables['params'], optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def float_step(params, opt_state, x, y):
    def loss_fn(params):
      logits = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                           train=True, rngs={'dropout': jax.random.PRNGKey(0)},
                           mutable=['batch_stats'])[0]
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  for x, y, _ in _batches(mnist):
    params, opt_state = float_step(params, opt_state, x, y)
  state = erp.reparameterize(params)
  for a, b in zip(jax.tree.leaves(erp.decode(state, quantize=False)), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  tx = erp.optimizer(latents=optax.adam(0.05))  # A transformation as is, for one part.
  opt_state = tx.init(state)
  rate_step = jax.jit(lambda s, o, rng: _rate_only_step(tx, s, o, rng))
  before = float(erp.rate(state))
  for i in range(100):
    state, opt_state = rate_step(state, opt_state, jax.random.PRNGKey(i))
  assert float(erp.rate(state)) < before
  saved = erp.save(tmp_path / 'ft.erp', state)
  num_params = sum(np.size(v) for v in jax.tree.leaves(params))
  assert saved['num_bytes'] < 4 * num_params
  per_group = erp.rate(state, per_group=True)
  assert set(per_group) == {p for p, k in state.kinds if k != 'float'}


def _rate_only_step(tx, state, opt_state, rng):
  grads = jax.grad(lambda s: erp.rate(s, rng))(state)
  updates, opt_state = tx.update(grads, opt_state, state)
  return optax.apply_updates(state, updates), opt_state


def test_keep_float_overrides_the_role_rule():
  params = LinenCNN().init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))['params']
  by_regex = dict(erp.reparameterize(params, keep_float='Dense').kinds)
  assert by_regex['Dense_0/kernel'] == 'float' and by_regex['bn1/scale'] == 'float'
  compress_norms = dict(erp.reparameterize(
      params, keep_float=lambda path, v: False if path.startswith('bn1') else None).kinds)
  assert compress_norms['bn1/scale'] == 'affine' and compress_norms['Conv_0/kernel'] == 'dft'
  affine = dict(erp.reparameterize(params, conv_decoder='affine').kinds)
  assert affine['Conv_0/kernel'] == 'affine'
  with pytest.raises(erp.ErpError, match='conv_decoder'):
    erp.reparameterize(params, conv_decoder='wavelet')
  bad = jax.tree.map(lambda v: v.at[(0,) * v.ndim].set(jnp.nan), params)
  with pytest.raises(erp.ErpError, match='non-finite'):
    erp.reparameterize(bad)


def test_metadata_round_trips_and_must_be_json(tmp_path):
  params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros((3,))}
  state = erp.reparameterize(params)
  erp.save(tmp_path / 'm.erp', state, metadata={'note': 'mine', 'lmbda': 0.5})
  assert erp.load_metadata(tmp_path / 'm.erp') == {'note': 'mine', 'lmbda': 0.5}
  with pytest.raises(erp.ErpError, match='metadata'):
    erp.save(tmp_path / 'n.erp', state, metadata={'x': float('nan')})
  assert not (tmp_path / 'n.erp').exists()
  with pytest.raises(erp.ErpError, match='not written by an erp run'):
    erp.load(tmp_path / 'm.erp')


def test_harness_trains_a_model_named_by_module_and_evaluates_its_file(tmp_path, data_dir):
  """erp.train with --config.model.name=test_api:LinenCNN (Dropout, BatchNorm named bn1)."""
  from erp import train
  from conftest import load_config
  c = load_config('mnist_lenet5')
  c.unlock()
  c.model.name = 'test_api:LinenCNN'
  c.data.dir = data_dir
  c.rd.enabled, c.rd.lmbda = True, 1.0
  c.train.num_epochs, c.train.log_every_steps = 1, 200
  c.export.run_config = True  # The config diff in the file, without local paths.
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['export']['bit_exact'] and result['export']['error_pct'] < 10.0  # Chance: 90 %.
  path = str(tmp_path / 'run' / 'model.erp')
  metadata = erp.load_metadata(path)
  assert metadata['model'] == 'test_api:LinenCNN'
  assert data_dir not in json.dumps(metadata) and 'init_from' not in metadata['config']
  assert metadata['config']['rd.lmbda'] == 1.0 and metadata['erp_version'] == erp.__version__
  # The file alone names the model, but importing it is the user's call.
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([REPO, os.path.join(REPO, 'tests')]),
         'ERP_DATA_DIR': data_dir}
  cmd = [sys.executable, '-m', 'erp.evaluate', '--model', path, '--json']
  refused = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
  assert refused.returncode == 1 and 'model_class' in refused.stderr, refused.stderr
  assert len(refused.stderr.strip().splitlines()) == 1
  done = subprocess.run(cmd + ['--model_class=test_api:LinenCNN'], capture_output=True,
                        text=True, env=env, cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  record = json.loads(done.stdout)  # --json: one JSON document, nothing else.
  assert record['error_pct'] == result['export']['error_pct']
  inspected = subprocess.run([sys.executable, '-m', 'erp.inspect', path, '--json'],
                             capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
  codecs = {row['path']: row['codec'] for row in json.loads(inspected.stdout)['leaves']}
  assert codecs['params/bn1/scale'] == 'float:float32'
  assert codecs['params/Conv_0/kernel'] == 'epr:dft'
  assert codecs['batch_stats/bn1/mean'] == 'float:float32'


def test_readme_carries_the_example_verbatim():
  with open(os.path.join(REPO, 'examples', 'compress_own_model.py')) as f:
    example = f.read()
  with open(os.path.join(REPO, 'README.md')) as f:
    assert '```python\n' + example + '```' in f.read()
