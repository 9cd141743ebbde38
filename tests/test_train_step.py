"""rd.rate_every: the rate term every K-th step, its latents' gradient reused between."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import erp
from erp import config as config_lib
from erp import data
from erp import runs
from erp import train
from erp import train_step
from conftest import load_config

BATCH = 64


def _config(data_dir, rate_every, lmbda=2.0):
  c = load_config('mnist_lenet300')
  c.unlock()
  c.data.dir = data_dir
  c.rd.enabled, c.rd.lmbda, c.rd.rate_every = True, lmbda, rate_every
  c.rd.latent_gradient = 'interpolated'  # What rate_every > 1 needs.
  return c


def _setup(c):
  """(step function, initial state, images, labels) of config c."""
  model, ds, trainable, batch_stats = runs.setup(c)
  tx = train_step.make_optimizer(c, 100, 100)
  state = train_step.initial_state(c, trainable, batch_stats, tx, jax.random.PRNGKey(0))
  images, labels = data.load_split(c.data, 'train')
  return train_step.make_train_step(c, model, ds, tx, 50000), state, images, labels


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)  # The step donates its state.


def _batch(images, labels, i):
  return images[i * BATCH:(i + 1) * BATCH], labels[i * BATCH:(i + 1) * BATCH]


def _assert_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_the_rate_is_computed_every_kth_step_only_in_epr_runs(data_dir):
  c = _config(data_dir, 3)
  assert [train_step.computes_rate(c, s) for s in range(7)] == [
      True, False, False, True, False, False, True]
  c.rd.enabled = False  # A float run: every step is a whole step.
  assert all(train_step.computes_rate(c, s) for s in range(4))
  assert not train_step.holds_rate_grads(c)
  assert not train_step.holds_rate_grads(_config(data_dir, 1))
  assert train_step.holds_rate_grads(_config(data_dir, 3))


def test_a_step_with_the_rate_stores_its_latents_gradient_and_moves_as_rate_every_1(data_dir):
  step_k, state_k, images, labels = _setup(_config(data_dir, 4))
  step_1, state_1, _, _ = _setup(_config(data_dir, 1))
  assert state_1.rate_grads is None
  zeros = jax.tree.map(np.zeros_like, state_k.trainable.latents)
  _assert_equal(state_k.rate_grads, zeros)
  new_k, metrics_k = step_k(state_k, *_batch(images, labels, 0), with_rate=True)
  new_1, metrics_1 = step_1(state_1, *_batch(images, labels, 0))
  _assert_equal(new_k.trainable, new_1.trainable)
  _assert_equal(new_k.opt_state, new_1.opt_state)
  assert float(metrics_k['bits']) == float(metrics_1['bits']) > 0
  # The stored gradient: the rate's, lmbda / num_train * d bits / d latents (the rate
  # pulls the latents to the prior's mass: most entries nonzero).
  grads = new_k.rate_grads
  assert set(grads) == set(state_k.trainable.latents)
  for name, g in grads.items():
    assert g.shape == state_k.trainable.latents[name].shape
    assert np.isfinite(g).all() and np.count_nonzero(g) > 0.5 * g.size
  assert new_1.rate_grads is None


def test_a_step_without_the_rate_adds_the_stored_gradient_and_leaves_the_priors(data_dir):
  step, state, images, labels = _setup(_config(data_dir, 4))
  batch = _batch(images, labels, 0)
  with_rate, _ = step(_copy(state), *batch, with_rate=True)
  # From the same state, holding the gradient the step with the rate computed: the same
  # task gradient plus the same rate gradient, so the same latents, decoders and floats;
  # but the priors and their optimizer's state as they were.
  held = _copy(state).replace(rate_grads=_copy(with_rate.rate_grads))
  without, metrics = step(held, *batch, with_rate=False)
  assert set(metrics) == {'ce', 'accuracy'}  # No loss or bits: the rate was not computed.
  for part in ('latents', 'decoders', 'floats'):
    _assert_equal(getattr(without.trainable, part), getattr(with_rate.trainable, part))
    _assert_equal(without.opt_state[part], with_rate.opt_state[part])
  _assert_equal(without.trainable.priors, state.trainable.priors)
  _assert_equal(without.opt_state['priors'], state.opt_state['priors'])
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(with_rate.trainable.priors), jax.tree.leaves(state.trainable.priors)))
  _assert_equal(without.rate_grads, with_rate.rate_grads)  # Kept for the next step.
  assert int(without.step) == int(with_rate.step) == 1
  # With no gradient held, only the task's moves the latents: a lazy step differs.
  bare, _ = step(_copy(state), *batch, with_rate=False)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(bare.trainable.latents), jax.tree.leaves(without.trainable.latents)))


@pytest.mark.parametrize('bad', [0, -1])
def test_rate_every_must_be_a_positive_integer(bad):
  c = config_lib.base_config()
  c.rd.enabled, c.rd.lmbda, c.rd.rate_every = True, 1.0, bad
  with pytest.raises(erp.ErpError, match='rd.rate_every must be an integer'):
    config_lib.validate(c)


def test_rate_every_above_1_needs_the_expected_latent_gradient():
  c = config_lib.base_config()
  c.rd.enabled, c.rd.lmbda, c.rd.rate_every = True, 1.0, 2
  with pytest.raises(erp.ErpError, match="rate_every=2 needs rd.latent_gradient='interp"):
    config_lib.validate(c)  # The default gradient, one noise draw's.
  c.rd.latent_gradient = 'interpolated'
  config_lib.validate(c)


def test_a_run_with_rate_every_trains_exports_and_resumes(tmp_path, data_dir):
  c = _config(data_dir, 3, lmbda=1.0)
  c.train.num_steps, c.train.log_every_steps = 50, 10
  result = train.train_and_evaluate(c, str(tmp_path))
  assert result['steps'] == 50 and result['test_error_pct'] < 50  # Chance: 90 %.
  assert result['config']['rd']['rate_every'] == 3
  assert result['export']['num_bytes'] > 0
  records = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  lines = [r for r in records if r['split'] == 'train']
  assert lines and all(np.isfinite(l['bits']) and np.isfinite(l['loss']) for l in lines)
  again = train.train_and_evaluate(c, str(tmp_path))  # From its checkpoint, rate_grads too.
  assert again['test_error_pct'] == result['test_error_pct']


def test_group_lmbda_scales_each_groups_rate_gradient_and_not_the_bits_logged(data_dir):
  plain = _config(data_dir, 4)
  scaled = _config(data_dir, 4)
  scaled.rd.group_lmbda = r'Dense_0/kernel=0, Dense_2/.*=2.5'
  step_p, state_p, images, labels = _setup(plain)
  step_s, state_s, _, _ = _setup(scaled)
  batch = _batch(images, labels, 0)
  new_p, metrics_p = step_p(state_p, *batch, with_rate=True)
  new_s, metrics_s = step_s(state_s, *batch, with_rate=True)
  assert float(metrics_s['bits']) == float(metrics_p['bits']) > 0  # Logged unweighted.
  assert float(metrics_s['loss']) < float(metrics_p['loss'])  # fc1's bits priced at 0.
  grads_p, grads_s = new_p.rate_grads, new_s.rate_grads
  assert not np.any(grads_s['Dense_0/kernel']) and np.any(grads_p['Dense_0/kernel'])
  for name in ('Dense_2/kernel', 'Dense_2/bias'):
    np.testing.assert_allclose(grads_s[name], 2.5 * grads_p[name], rtol=1e-6)
  for name in ('Dense_1/kernel', 'Dense_0/bias'):
    _assert_equal(grads_s[name], grads_p[name])


@pytest.mark.parametrize('spec,message', [
    ('Dense_0=nan', 'finite SCALE'),
    ('Dense_0=-1', 'finite SCALE'),
    ('Dense_0', 'REGEX=SCALE'),
    ('(=2', 'not REGEX=SCALE'),
    ('=2', 'REGEX=SCALE'),
])
def test_malformed_group_lmbda_is_refused_by_validation(spec, message):
  c = _config(None, 1)
  c.rd.group_lmbda = spec
  with pytest.raises(erp.ErpError, match=message):
    config_lib.validate(c)


def test_group_lmbda_naming_no_group_is_refused_with_the_groups():
  with pytest.raises(erp.ErpError, match=r"\['Conv_9'\] match no group.*Dense_0/kernel"):
    config_lib.group_lmbda_scales('Dense_0=2,Conv_9=0.5', ['Dense_0/kernel', 'Dense_0/bias'])
  assert config_lib.group_lmbda_scales('kernel=2,Dense_0=3', ['Dense_0/kernel', 'Dense_0/bias']) \
      == {'Dense_0/kernel': 2.0, 'Dense_0/bias': 3.0}  # The first pattern that matches.
