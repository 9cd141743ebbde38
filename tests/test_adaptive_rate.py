"""erp.adaptive_rate: a small group priced by the length of the adaptive code that codes it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erp import active
from erp import adaptive
from erp import adaptive_rate
from erp import container
from erp import export
from erp import latent_code
from erp import priors
from erp import rate_term
from erp import state as state_lib


def _sequential_bits(values, alpha):
  """-log2 of the additive estimator's sequential probabilities, symbol by symbol."""
  lo, k = values.min(), values.max() - values.min() + 1
  counts, bits = np.zeros(k), 0.0
  for v in values - lo:
    bits -= np.log2((counts[v] + alpha) / (counts.sum() + k * alpha))
    counts[v] += 1
  return bits


def test_code_bits_is_the_sequential_estimators_length_at_its_best_alpha():
  rng = np.random.default_rng(0)
  for values in [np.array([0, 0, 1]), rng.integers(-3, 4, 200),
                 np.r_[np.zeros(150, int), rng.integers(-20, 20, 50)]]:
    want = min(_sequential_bits(values, 2.0**-a) for a in adaptive.ALPHA_EXPONENTS)
    np.testing.assert_allclose(adaptive_rate.integer_bits(values), want, rtol=1e-5)
  assert adaptive_rate.integer_bits(np.full(30, -4)) == 0.0  # One value: nothing to code.
  # Padding with empty integers either side changes nothing: K runs from min to max.
  counts = np.bincount(rng.integers(0, 9, 300))
  padded = np.zeros((2, 64), np.float32)
  padded[0, 10:10 + counts.size] = counts
  padded[1, 40:40 + counts.size] = counts
  bits, grid, own = adaptive_rate.code_bits(padded)
  np.testing.assert_allclose(np.asarray(bits), adaptive_rate.code_bits(counts)[0], rtol=1e-6)
  assert grid.shape == own.shape == (2, 64)
  # A value's own integer counts it already: there it costs log2(n + K alpha) - log2(c - 1 +
  # alpha), so 2**(e - grid) - 2**(e - own) = 1 / alpha (e: an empty integer's bits) wherever
  # c > 0, and own = grid where c = 0.
  grid, own = np.asarray(grid[0], np.float64), np.asarray(own[0], np.float64)
  empty = grid[0]
  gap = 2.0**(empty - grid) - 2.0**(empty - own)
  occupied = padded[0] > 0
  np.testing.assert_allclose(gap[occupied], gap[occupied][0], rtol=1e-4)
  assert 1 <= gap[occupied][0] <= 2**7 and np.array_equal(own[~occupied], grid[~occupied])


@pytest.mark.parametrize('spread', [2, 12])
def test_its_length_is_what_the_adaptive_coder_spends(spread):
  """Within 3 % of erp.adaptive's block-adaptive code of the same values at its best alpha
  (the blocks update the model less often: a little more), for a compact and a wide group."""
  rng = np.random.default_rng(spread)
  values = np.round(rng.laplace(0, spread, 1000)).astype(np.int64)
  values[rng.random(1000) < 0.5] = 0
  symbols = values - values.min()
  num_symbols = int(symbols.max()) + 1
  alpha, _ = adaptive.best_alpha(symbols, num_symbols)
  coded_bits = 8 * len(adaptive.encode(symbols, num_symbols, alpha))
  estimate = adaptive_rate.integer_bits(values)
  assert 0.97 < estimate / coded_bits <= 1.0 + 64 / coded_bits


def test_training_bits_value_and_latents_gradient():
  """The value: the length at the rounded latents. The gradient: d/dx E L(x + u), u ~ U(-1/2,
  1/2), L the bits of each integer joined by lines, a latent's own integer counted without
  it (checked by quadrature)."""
  rng = np.random.default_rng(3)
  x = np.concatenate([np.round(rng.normal(0, 2, 300)) * (rng.random(300) < 0.4),
                      rng.normal(0, 2, 40), [7.5, -6.5, 0.25]]).astype(np.float32)
  latents = {'a': jnp.asarray(x), 'b': jnp.asarray(x[:60].reshape(6, 10) + 1.0)}
  half = 32
  value, grads = jax.value_and_grad(
      lambda l: sum(adaptive_rate.training_bits(l, half).values()))(latents)
  want = sum(adaptive_rate.integer_bits(np.round(np.asarray(v))) for v in latents.values())
  np.testing.assert_allclose(float(value), want, rtol=1e-5)
  counts = np.bincount(np.round(x).astype(int) + half, minlength=2 * half)
  _, grid, own = (np.asarray(g, np.float64) for g in adaptive_rate.code_bits(counts))
  u = (np.arange(20000) + 0.5) / 20000 - 0.5
  slope = []
  for y in x.astype(np.float64):
    line = grid.copy()
    line[int(np.round(y)) + half] = own[int(np.round(y)) + half]
    at = lambda z: np.interp(z + u, np.arange(-half, half), line).mean()
    slope.append((at(y + 1e-3) - at(y - 1e-3)) / 2e-3)
  np.testing.assert_allclose(np.asarray(grads['a']), slope, rtol=2e-3, atol=2e-3)
  # The more values an integer holds, the less it costs: lone latents at +-2.2 beside a
  # crowd at 0 and +-1 are pulled toward it (down the gradient).
  crowd = jnp.asarray([0.0] * 40 + [1.0, -1.0] * 5 + [2.2, -2.2])
  lone = jax.grad(lambda v: adaptive_rate.training_bits({'c': v}, half)['c'])(crowd)[-2:]
  assert float(lone[0]) > 0.5 and float(lone[1]) < -0.5


def test_state_rate_and_export_price_small_groups_by_their_code():
  """Groups of at most adaptive_max_latents latents: their adaptive code's length, in training
  (no gradient to their priors), without rng and in the export's estimate; larger groups as
  before."""
  rng = np.random.default_rng(5)
  params = {'small': {'kernel': rng.normal(0, 1, (10, 10)).astype(np.float32)},
            'large': {'kernel': rng.normal(0, 1, (40, 50)).astype(np.float32)}}
  state = state_lib.reparameterize(params, seed=1)
  small, large = 'small/kernel', 'large/kernel'
  rate = lambda s, **kw: state_lib.rate(s, jax.random.PRNGKey(0), per_group=True, **kw)
  plain = rate(state)
  priced = rate(state, adaptive_max_latents=100, adaptive_gradient='code')
  code = adaptive_rate.integer_bits(np.round(np.asarray(state.latents[small])))
  np.testing.assert_allclose(float(priced[small]), code, rtol=1e-5)
  np.testing.assert_allclose(float(priced[large]), float(plain[large]), rtol=1e-6)
  assert abs(float(plain[small]) - code) > 1.0  # The prior prices it otherwise.
  grads = jax.grad(lambda s: state_lib.rate(s, jax.random.PRNGKey(0), adaptive_max_latents=100,
                                            adaptive_gradient='code'))(state)
  assert not np.any(np.asarray(grads.priors[small].vector))
  assert np.any(np.asarray(grads.priors[large].vector))
  # gradient='prior': the same value; the prior's gradients (latents and priors) scaled by the
  # code's length over the prior's bits; larger groups untouched.
  shaped = lambda s: state_lib.rate(s, jax.random.PRNGKey(0), per_group=True,
                                    adaptive_max_latents=100)
  np.testing.assert_allclose(float(shaped(state)[small]), code, rtol=1e-5)
  ratio = code / float(plain[small])
  g_shaped = jax.grad(lambda s: shaped(s)[small])(state)
  g_prior = jax.grad(lambda s: rate(s)[small])(state)
  for part in ('latents', 'priors'):
    for a, b in zip(jax.tree.leaves(getattr(g_shaped, part)), jax.tree.leaves(getattr(g_prior, part))):
      np.testing.assert_allclose(np.asarray(a), ratio * np.asarray(b), rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(jax.grad(lambda s: shaped(s)[large])(state).latents[large]),
                                np.asarray(jax.grad(lambda s: rate(s)[large])(state).latents[large]))
  no_rng = state_lib.rate(state, per_group=True, adaptive_max_latents=100)
  np.testing.assert_allclose(float(no_rng[small]), code, rtol=1e-5)
  np.testing.assert_allclose(float(no_rng[large]), priors.integer_bits(
      state.priors[large], np.round(np.asarray(state.latents[large]))), rtol=1e-4)
  summary = export.rate_summary(state, adaptive_max_latents=100)['group_bits']
  np.testing.assert_allclose(summary[small], code, rtol=1e-6)
  np.testing.assert_allclose(summary[large], export.rate_summary(state)['group_bits'][large])
  assert rate_term.FIT_HALF_WIDTH > np.abs(np.asarray(state.latents[small])).max()


def test_a_kernel_the_file_codes_active_is_priced_by_that_code():
  """A kernel at its most frequent value (-1) but in a block of rows, as LeNet5-Caffe's fc2:
  priced by the cheapest of its codes, the ACTIVE one less that base, within 6 % of the
  stream the file's writer spends on it and far below its whole code; the traced price
  (training, erp.rate) equals the NumPy one (the export's), for 2 and 3 axes."""
  rng = np.random.default_rng(7)
  values = np.full((500, 10), -1, np.int64)
  values[rng.choice(500, 80, replace=False)] = rng.integers(-4, 3, (80, 10))
  whole = adaptive_rate.integer_bits(values)
  priced = adaptive_rate.integer_bits(values, values.shape)
  code = latent_code.write(container.Writer(), values)
  assert code['mode'] == latent_code.ACTIVE
  np.testing.assert_allclose(priced, 8 * len(code['stream']), rtol=0.06)
  assert priced < 0.8 * whole
  dft_like = np.zeros((5, 5, 3, 20), np.int64)  # A 'dft' kernel: the code sees [25, 3, 20].
  dft_like[:2, :, :2, rng.choice(20, 6, replace=False)] = rng.integers(-3, 4, (2, 5, 2, 6))
  for group, view in [(values, values.shape), (dft_like, (25, 3, 20)),
                      (np.zeros((30, 10), np.int64), (30, 10))]:
    traced = adaptive_rate.rounded_bits({'g': jnp.asarray(group, jnp.float32)},
                                        rate_term.FIT_HALF_WIDTH, {'g': view})['g']
    np.testing.assert_allclose(float(traced), adaptive_rate.integer_bits(group, view),
                               rtol=1e-5, atol=1e-3)
  assert adaptive_rate.integer_bits(dft_like, (25, 3, 20)) < adaptive_rate.integer_bits(dft_like)
  # Through erp.rate (with and without rng) and the export's estimate: that same price.
  state = state_lib.reparameterize({'fc': {'kernel': np.zeros((500, 10), np.float32)}}, seed=1)
  state = state.replace(latents={'fc/kernel': jnp.asarray(values, jnp.float32)})
  for rng_key in (jax.random.PRNGKey(0), None):
    bits = state_lib.rate(state, rng_key, per_group=True, adaptive_max_latents=5000)
    np.testing.assert_allclose(float(bits['fc/kernel']), priced, rtol=1e-5)
  np.testing.assert_allclose(export.rate_summary(state, adaptive_max_latents=5000)[
      'group_bits']['fc/kernel'], priced, rtol=1e-6)


def test_a_kernel_whose_input_mask_follows_the_previous_outputs_is_priced_given_them():
  """fc2's rows live exactly where fc1's columns do (a unit no input reaches is unused):
  erp.active.references hands fc2 fc1's output mask, fc1 conv's (repeated over a flattened
  4 x 4 map), and the price of fc2's masks given it drops to the heads; training's traced
  price, erp.rate's (with and without rng) and the export's agree."""
  rng = np.random.default_rng(3)
  conv = np.zeros((25, 2, 5), np.int64)
  conv[0, :, [1, 3]] = 2  # Output channels 1 and 3 live.
  fc1 = np.zeros((80, 40), np.int64)
  live = rng.choice(40, 9, replace=False)
  fc1[np.ix_(np.flatnonzero(np.arange(80) % 5 == 1)[:7], live)] = rng.integers(1, 4, (7, 9))
  fc2 = np.full((40, 10), -1, np.int64)
  fc2[live] = rng.integers(-4, 3, (9, 10))
  views = {'conv': (25, 2, 5), 'fc1': (80, 40), 'bias': (40,), 'fc2': (40, 10)}
  values = {'conv': conv, 'fc1': fc1, 'bias': np.zeros(40, np.int64), 'fc2': fc2}
  refs = active.references(views, {k: (v != 0).reshape(views[k]) for k, v in values.items()})
  assert refs['conv'] is None and 'bias' not in refs
  np.testing.assert_array_equal(refs['fc1'], np.arange(80) % 5 % 2 == 1)
  np.testing.assert_array_equal(refs['fc2'], (fc1 != 0).any(0))
  plain = adaptive_rate.integer_bits(fc2, (40, 10))
  given = adaptive_rate.integer_bits(fc2, (40, 10), refs['fc2'])
  assert given < plain - 20
  rows = latent_code.referenced_flags(latent_code.active_masks(fc2 + 1), refs['fc2'])
  assert not rows[1].any() and rows[2].all()  # The rows are their reference: two constants.
  traced = adaptive_rate.rounded_bits({'fc2': jnp.asarray(fc2, jnp.float32)},
                                      rate_term.FIT_HALF_WIDTH, views,
                                      {'fc2': jnp.asarray(refs['fc2'])})['fc2']
  np.testing.assert_allclose(float(traced), given, rtol=1e-5)
  params = {'a': {'kernel': np.zeros((5, 5, 2, 5), np.float32)},
            'b': {'kernel': np.zeros((80, 40), np.float32)},
            'c': {'bias': np.zeros(40, np.float32), 'kernel': np.zeros((40, 10), np.float32)}}
  state = state_lib.reparameterize(params, seed=1)
  assert [k for k, _ in state.kinds] == ['a/kernel', 'b/kernel', 'c/bias', 'c/kernel']
  state = state.replace(latents={'a/kernel': jnp.asarray(conv.reshape(5, 5, 2, 5), jnp.float32),
                                 'b/kernel': jnp.asarray(fc1, jnp.float32),
                                 'c/bias': jnp.zeros(40),
                                 'c/kernel': jnp.asarray(fc2, jnp.float32)})
  for rng_key in (jax.random.PRNGKey(0), None):
    bits = state_lib.rate(state, rng_key, per_group=True, adaptive_max_latents=500)
    np.testing.assert_allclose(float(bits['c/kernel']), given, rtol=1e-5)
  np.testing.assert_allclose(export.rate_summary(state, adaptive_max_latents=500)[
      'group_bits']['c/kernel'], given, rtol=1e-6)
