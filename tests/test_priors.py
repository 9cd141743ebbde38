import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from erp import active
from erp import noise
from erp import packed
from erp import priors
from erp import rate_table
from erp import rate_term


def _seed(i):
  return jax.random.bits(jax.random.PRNGKey(i), (2,), jnp.uint32)


def _fit(samples, steps=1500, seed=0):
  params = priors.init(jax.random.PRNGKey(seed))
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  x = jnp.asarray(samples, jnp.float32)

  @jax.jit
  def step(params, opt_state, key):
    loss_fn = lambda p: rate_term.group_bits({'g': x}, {'g': p}, key)['g'] / x.size
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  for i in range(steps):
    params, opt_state, _ = step(params, opt_state, jax.random.PRNGKey(i))
  return params


def _entropy_bits(samples):
  _, counts = np.unique(samples, return_counts=True)
  p = counts / counts.sum()
  return float(-(counts * np.log2(p)).sum())


def test_probability_mass_sums_to_one_over_integers():
  params = priors.init(jax.random.PRNGKey(0))
  mass = priors.probability_mass(params, jnp.arange(-2000, 2001, dtype=jnp.float32))
  np.testing.assert_allclose(float(mass.sum()), 1.0, atol=1e-4)
  assert float(mass.min()) >= 0


def test_fitted_prior_bits_within_2_percent_of_empirical_entropy():
  rng = np.random.default_rng(0)
  samples = np.round(rng.laplace(0.0, 3.0, 20000))  # Peaked, like trained latents.
  params = _fit(samples)
  bits = float(rate_term.group_bits({'g': jnp.asarray(samples)}, {'g': params})['g'])
  entropy = _entropy_bits(samples)
  assert abs(bits - entropy) / entropy < 0.02, (bits, entropy)


def test_quantile_inverts_the_cumulative():
  params = priors.init(jax.random.PRNGKey(3))
  for q in (1e-4, 0.5, 0.999):
    x = priors.quantile(params, q)
    c = priors.cumulative(params, jnp.float32(x))
    np.testing.assert_allclose(float(c), q, rtol=1e-3)
    # The mixture's cumulative: its masses at the integers sum to its differences.
  masses = priors.mass_at(params, np.arange(-40, 41))
  span = priors.cumulative(params, jnp.float32(40.5)) - priors.cumulative(params, jnp.float32(-40.5))
  np.testing.assert_allclose(masses.sum(), float(span), rtol=1e-4)


def test_tabulated_bits_match_the_density_in_value_and_slope():
  rng = np.random.default_rng(1)
  params = _fit(np.round(rng.laplace(0.0, 3.0, 20000)), steps=300)
  x = jnp.asarray(rng.laplace(0.0, 3.0, 50000), jnp.float32).at[0].set(3000.0)  # An outlier:
  # a table over [min, max] was 8 % off in value and 26 % in slope with it.
  exact_bits, exact_slope = jax.value_and_grad(lambda x: priors.bits_of(params, x).sum())(x)
  table_bits, table_slope = jax.value_and_grad(
      lambda x: rate_table.tabulated_bits(params, x, 16384).sum())(x)
  np.testing.assert_allclose(float(table_bits), float(exact_bits), rtol=1e-4)
  # Slopes are ~0.1-1 bit per latent step; the interpolant's is within 0.01 of them.
  assert float(jnp.abs(table_slope - exact_slope).max()) < 1e-2
  assert float(jnp.abs(exact_slope).mean()) > 0.1


def test_training_bits_with_table_keep_the_gradients():
  rng = np.random.default_rng(2)
  latents = {'big': jnp.asarray(rng.laplace(0.0, 4.0, (300, 200)), jnp.float32),
             'small': jnp.asarray(rng.laplace(0.0, 4.0, (50,)), jnp.float32)}
  prior_params = {k: priors.init(jax.random.PRNGKey(i)) for i, k in enumerate(latents)}
  total = lambda table: lambda l, p: sum(
      rate_term.training_bits(l, p, jax.random.PRNGKey(5), 1000, table).values())
  exact = jax.value_and_grad(total(0), argnums=(0, 1))(latents, prior_params)
  tabled = jax.value_and_grad(total(4096), argnums=(0, 1))(latents, prior_params)
  np.testing.assert_allclose(float(tabled[0]), float(exact[0]), rtol=1e-4)
  # The latents' slopes (~0.1-1 bit per step) within 0.01: a 4096-point table has 64
  # points an octave, so its slope is the density's within ~1 % of |x| of each latent.
  for name in latents:
    np.testing.assert_allclose(np.asarray(tabled[1][0][name]), np.asarray(exact[1][0][name]),
                               atol=1e-2)
  for a, b in zip(jax.tree.leaves(tabled[1][1]), jax.tree.leaves(exact[1][1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=2e-3)


def test_batched_training_bits_equal_each_group_on_its_own():
  """Groups of very different sizes, padded and masked together, give each group's own
  bits and gradients: the density at latents + the one U(-1/2, 1/2) draw."""
  rng = np.random.default_rng(3)
  shapes = {'a': (700,), 'b': (3,), 'c': (40, 5), 'd': (1,)}
  latents = {k: jnp.asarray(rng.laplace(0.0, 3.0, s), jnp.float32) for k, s in shapes.items()}
  prior_params = {k: priors.init(jax.random.PRNGKey(i), init_scale=2.0 + i)
                  for i, k in enumerate(sorted(shapes))}
  key = jax.random.PRNGKey(7)
  batched = lambda l, p: rate_term.training_bits(l, p, key, 0, fit='noisy')
  seed = jax.random.bits(key, (len(shapes) + 1, 2), jnp.uint32)[0]  # The noise's words.
  dither = noise.uniform_noise(seed, (sum(int(np.prod(s)) for s in shapes.values()),))

  def each(l, p):
    out, start = {}, 0
    for name in sorted(l):
      size = l[name].size
      x = l[name] + dither[start:start + size].reshape(l[name].shape)
      out[name], start = priors.bits_of(p[name], x).sum(), start + size
    return out

  got, want = batched(latents, prior_params), each(latents, prior_params)
  for name in shapes:
    np.testing.assert_allclose(float(got[name]), float(want[name]), rtol=1e-6)
  total = lambda f: lambda l, p: sum(f(l, p).values())
  g_got = jax.grad(total(batched), argnums=(0, 1))(latents, prior_params)
  g_want = jax.grad(total(each), argnums=(0, 1))(latents, prior_params)
  for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_rounded_fit_prices_the_integers_the_file_codes():
  """fit='rounded': the latents' gradient as with 'noisy' (the density at latents + noise);
  the value and the priors' gradient are those of the bits of round(latents), the integers
  a file codes (outliers included, counted at the histogram's edge)."""
  rng = np.random.default_rng(4)
  latents = {'big': jnp.asarray(rng.laplace(0.0, 4.0, (300, 200)), jnp.float32).at[0, 0].set(
                 3000.0), 'small': jnp.asarray(rng.laplace(0.0, 2.0, (50,)), jnp.float32)}
  prior_params = {k: priors.init(jax.random.PRNGKey(i)) for i, k in enumerate(latents)}
  key = jax.random.PRNGKey(9)
  total = lambda fit: lambda l, p: sum(rate_term.training_bits(l, p, key, 0, 0, fit).values())
  (v_r, (gl_r, gp_r)) = jax.value_and_grad(total('rounded'), argnums=(0, 1))(
      latents, prior_params)
  (v_n, (gl_n, _)) = jax.value_and_grad(total('noisy'), argnums=(0, 1))(latents, prior_params)
  for a, b in zip(jax.tree.leaves(gl_r), jax.tree.leaves(gl_n)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  clipped = {k: jnp.clip(jnp.round(v), -rate_term.FIT_HALF_WIDTH, rate_term.FIT_HALF_WIDTH - 1)
             for k, v in latents.items()}
  fit = lambda p: sum(priors.bits_of(p[k], clipped[k]).sum() for k in p)
  want_value, want = jax.value_and_grad(fit)(prior_params)
  np.testing.assert_allclose(float(v_r), float(want_value), rtol=1e-5)
  assert abs(float(v_r) - float(v_n)) > 1.0  # Not the noisy latents' bits.
  for a, b in zip(jax.tree.leaves(gp_r), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-3)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(gp_r)) > 1.0


def test_sampled_rounded_fit_is_unbiased():
  """Groups larger than `samples` histogram that many elements (evenly spaced from a
  random start) and scale them: one draw differs from the full count, the mean over
  draws converges to it."""
  rng = np.random.default_rng(5)
  latents = {'g': jnp.asarray(np.round(rng.laplace(0.0, 3.0, 50000)), jnp.float32)}
  params = {'g': priors.init(jax.random.PRNGKey(0))}
  exact = float(rate_term.rounded_bits(latents, params, ['g'])[0])
  draws = jax.vmap(lambda k: rate_term.rounded_bits(
      latents, params, ['g'], jax.random.bits(k, (1, 2), jnp.uint32), 2000)[0])(
      jax.random.split(jax.random.PRNGKey(1), 400))
  draws = np.asarray(draws, np.float64)
  assert np.abs(draws - exact).max() > 1e-3 * exact
  assert abs(draws.mean() - exact) < 4 * draws.std() / np.sqrt(len(draws))
  index = np.asarray(rate_term.sample_indices(_seed(2), 100000, 7))
  assert index.min() == 0 and index.max() == 6
  np.testing.assert_allclose(np.bincount(index) / 1e5, 1 / 7, atol=0.01)


def test_mass_is_positive_at_a_tie_and_tails_are_heavy():
  """A symmetric density (all biases 0: f is odd, so lower + upper == 0 at x = 0) gives
  x = 0 its mass, not 0; and the Cauchy part keeps far latents at tens of bits, not the
  clamp (-log2 MIN_PROBABILITY ~ 30 bits) that sigmoid tails hit within a few dozen."""
  params = jax.tree.map(jnp.asarray, priors.init(jax.random.PRNGKey(0), init_scale=2.0))
  params = {k: jnp.zeros_like(v) if k.startswith('bias_') else v for k, v in params.items()}
  assert float(priors.logits_cumulative(params, jnp.float32(-0.5))) == \
      -float(priors.logits_cumulative(params, jnp.float32(0.5)))
  no_tail = dict(params, tail_logit=jnp.float32(-100.0))
  assert float(priors.probability_mass(no_tail, jnp.float32(0.0))) > 0.1
  bits = priors.bits_of(params, jnp.asarray([0.0, 50.0, 1000.0]))
  assert float(bits[0]) < 4 and 8 < float(bits[1]) < float(bits[2]) < 29
  assert float(priors.bits_of(no_tail, jnp.float32(50.0))) > 29


def test_training_noise_is_uniform_uncorrelated_and_seeded():
  n = 1 << 18
  a = np.asarray(noise.uniform_noise(_seed(0), (n,)), np.float64)
  b = np.asarray(noise.uniform_noise(_seed(1), (n,)), np.float64)
  np.testing.assert_array_equal(a, noise.uniform_noise(_seed(0), (n,)))
  assert -0.5 < a.min() and a.max() < 0.5
  assert abs(a.mean()) < 5 * np.sqrt(1 / 12 / n)
  assert abs(a.var() - 1 / 12) < 0.002
  counts = np.histogram(a, bins=64, range=(-0.5, 0.5))[0]
  expected = n / 64
  assert ((counts - expected) ** 2 / expected).sum() < 130  # chi2(63): p ~ 1e-6.
  for x, y in ((a[:-1], a[1:]), (a, b)):  # Neighbours and other keys: uncorrelated.
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(n)
  shaped = noise.uniform_noise(_seed(0), (4, n // 4))
  np.testing.assert_array_equal(np.asarray(shaped).ravel(), a)


def test_spikes_price_a_few_level_histogram_that_a_deep_factorized_density_cannot():
  """Trained latents can settle on a few integers (LeNet-300-100's Dense_1: 0, -5, 4, with
  ~0 mass at +-1..3); fit to that histogram, the deep factorized mixture stays ~1.6x its
  entropy, with a categorical over -8..8 mixed in it comes within 3 %."""
  import optax
  values = jnp.asarray([-9, -5, -1, 0, 1, 4, 7, 12], jnp.float32)
  counts = jnp.asarray([30, 2544, 47, 23584, 77, 3353, 46, 10], jnp.float32)
  p = np.asarray(counts) / float(counts.sum())
  entropy = -(np.asarray(counts) * np.log2(p)).sum()
  ratios = {}
  for spikes in (0, 8):
    params = priors.init(jax.random.PRNGKey(0), spikes=spikes)
    tx = optax.adam(1e-2)
    opt = tx.init(params)
    loss = lambda q: (priors.bits_of(q, values) * counts).sum()

    @jax.jit
    def step(q, o):
      updates, o = tx.update(jax.grad(loss)(q), o, q)
      return optax.apply_updates(q, updates), o

    for _ in range(1500):
      params, opt = step(params, opt)
    ratios[spikes] = float(loss(params)) / entropy
    # The mass of [x - 1/2, x + 1/2] is the cumulative's difference, off the integers too.
    x = jnp.linspace(-20.0, 20.0, 97)
    np.testing.assert_allclose(priors.probability_mass(params, x),
                               priors.cumulative(params, x + 0.5) -
                               priors.cumulative(params, x - 0.5), atol=2e-6)
  assert ratios[0] > 1.3 and ratios[8] < 1.03, ratios


def test_packed_params_are_the_same_density_and_restore_from_either_checkpoint_form():
  """A state holds each prior as one vector (packed.Packed): the density, its bits and
  gradients are those of the dict it packs; flax state dicts restore it from its own form
  and from the named arrays checkpoints held before packing; a damaged one is refused."""
  params = priors.init(jax.random.PRNGKey(3), spikes=2)
  one = packed.Packed.of(params)
  assert one.vector.shape == (sum(np.size(v) for v in params.values()),)
  assert set(one) == set(params) and 'spike_logits' in one and 'nope' not in one
  for key, value in one.unpacked().items():
    np.testing.assert_array_equal(value, params[key])
    np.testing.assert_array_equal(one[key], params[key])
  x = jnp.linspace(-30.0, 30.0, 301)
  np.testing.assert_array_equal(priors.bits_of(one, x), priors.bits_of(params, x))
  grad = jax.grad(lambda p: priors.bits_of(p, x).sum())
  np.testing.assert_allclose(packed.Packed.of(grad(params)).vector, grad(one).vector,
                             rtol=1e-6)
  stacked = jax.tree.map(lambda *v: jnp.stack(v), one, one)  # Batched, as the rate is.
  np.testing.assert_array_equal(jax.vmap(priors.bits_of, (0, None))(stacked, x)[1],
                                priors.bits_of(params, x))
  template = packed.Packed.of(priors.init(jax.random.PRNGKey(0), spikes=2))
  for state in (flax.serialization.to_state_dict(one), jax.tree.map(np.asarray, params)):
    restored = flax.serialization.from_state_dict(template, state)
    np.testing.assert_array_equal(restored.vector, one.vector)
  with pytest.raises(ValueError, match='missing from the checkpoint'):
    flax.serialization.from_state_dict(template, {'matrix_0': params['matrix_0']})


def test_a_cauchy_part_narrowed_onto_zero_keeps_finite_gradients():
  """A prior may narrow its Cauchy part to its least scale (1/2) to price a spike of zero
  latents: with tail_log_scale = -17, scale**2 - 1/4 rounds to 0 in float32 and the bits'
  gradient was NaN (a LeNet5 run diverged after 18k steps); written without that
  cancellation it stays finite, and the bits are unchanged."""
  params = dict(priors.init(jax.random.PRNGKey(0)), tail_log_scale=jnp.float32(-17.0),
                tail_logit=jnp.float32(2.7))
  hist = jnp.asarray(np.random.default_rng(0).integers(0, 50, 256), jnp.float32)
  fit = lambda p: (priors.integer_grid_bits(p, -128, 256) * hist).sum()
  value, grad = jax.value_and_grad(fit)(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
  x = jnp.arange(-128.0, 128.0)
  np.testing.assert_allclose(priors.integer_grid_bits(params, -128, 256),
                             priors.bits_of(params, x), rtol=1e-5)
  # A Cauchy of scale 1/2 holds half its mass on [-1/2, 1/2]; it has weight sigmoid(2.7).
  assert float(priors.bits_of(params, jnp.float32(0.0))) < 1.2


def _sparse(rng, shape, num_nonzero):
  values = np.zeros(int(np.prod(shape)))
  values[rng.choice(values.size, num_nonzero, replace=False)] = rng.choice(
      [-4, -3, -2, 2, 3, 5], num_nonzero)
  return values.reshape(shape)


@pytest.mark.parametrize('shape,kind', [((60, 40), 'affine'), ((5, 5, 6, 8), 'dft'),
                                        ((3, 3, 16, 20), 'affine')])
def test_active_block_is_the_block_the_file_codes(shape, kind):
  """fit='active' prices the block of the coder's ACTIVE code (erp.latent_code): the slices
  along each axis of the coded view (a 'dft' kernel's two frequency axes as one) that hold
  a nonzero; the masks cost their binary entropy."""
  from erp import latent_code
  values = _sparse(np.random.default_rng(len(shape)), shape, 25)
  view = active.coded_view(kind, shape)
  assert view == ((25,) + shape[2:] if kind == 'dft' else shape)
  block, mask_bits = rate_term.active_block(jnp.asarray(values.ravel(), jnp.float32), view)
  masks = latent_code.active_masks(values.reshape(view))
  want = np.ix_(*masks)
  inside = np.zeros(view, bool)
  inside[want] = True
  np.testing.assert_array_equal(np.asarray(block) > 0, inside.ravel())
  live, total = sum(m.sum() for m in masks), sum(view)
  p = live / total
  np.testing.assert_allclose(float(mask_bits), -total * (p * np.log2(p) + (1 - p) * np.log2(1 - p)),
                             rtol=1e-5)
  ones, no_bits = rate_term.active_block(jnp.asarray(values.ravel()[:7], jnp.float32), (7,))
  assert np.asarray(ones).min() == 1 and float(no_bits) == 0
  empty, zero_bits = rate_term.active_block(jnp.zeros(12), (3, 4))
  assert np.asarray(empty).max() == 0 and float(zero_bits) == 0


def test_active_fit_prices_the_block_and_masks_and_matches_the_reported_estimate():
  """training_bits(fit='active'): the value is the prior's bits of the block's integers plus
  the masks' bits (what erp.export.rate_summary reports for such a run), below 'rounded''s,
  which also prices the zeros outside; the latents' gradient is the same; the priors'
  gradient fits the block's histogram."""
  from erp import export
  from erp import state as state_lib
  rng = np.random.default_rng(7)
  params = {'dense': {'kernel': jnp.asarray(_sparse(rng, (300, 100), 120) * 0.1, jnp.float32),
                      'bias': jnp.asarray(rng.normal(size=100), jnp.float32)},
            'conv': {'kernel': jnp.asarray(rng.normal(size=(5, 5, 3, 8)), jnp.float32)}}
  state = state_lib.reparameterize(params)
  state = state.replace(latents={k: jnp.asarray(_sparse(rng, v.shape, min(40, v.size // 3)),
                                                jnp.float32) + 0.2
                                 for k, v in state.latents.items()})
  key = jax.random.PRNGKey(3)
  value = lambda fit: lambda s: state_lib.rate(s, key, per_group=True, prior_samples=0,
                                               prior_fit=fit)
  active, rounded = value('active')(state), value('rounded')(state)
  reported = export.rate_summary(state, prior_fit='active')['group_bits']
  plain = export.rate_summary(state)['group_bits']
  for k in state.latents:
    np.testing.assert_allclose(float(active[k]), reported[k], rtol=1e-4)
    np.testing.assert_allclose(float(rounded[k]), plain[k], rtol=1e-4)
  big = [k for k in state.latents if k.endswith('dense/kernel')][0]
  assert reported[big] < 0.5 * plain[big]
  grad = lambda fit: jax.grad(lambda s: sum(value(fit)(s).values()))(state)
  g_active, g_rounded = grad('active'), grad('rounded')
  for k in state.latents:
    np.testing.assert_allclose(np.asarray(g_active.latents[k]), np.asarray(g_rounded.latents[k]),
                               rtol=1e-5, atol=1e-6)
  assert any(float(jnp.abs(a - b).max()) > 1e-3 for a, b in zip(
      jax.tree.leaves(g_active.priors), jax.tree.leaves(g_rounded.priors)))
  with pytest.raises(ValueError, match='coded view'):
    rate_term.training_bits(state.latents, state.priors, key, 0, 0, 'active')


def test_active_fit_prices_a_drifted_kernel_less_its_most_frequent_value():
  """Format 8 codes a kernel whose rows drifted to one value (LeNet5 fc2's -1) as its ACTIVE
  code of values - base (erp.latent_code); fit='active_base' prices it so: a kernel shifted
  by a whole number costs what it did, value and every gradient, in training and in the
  reported estimate ('active' prices it higher); a vector (one axis, coded whole) is priced
  as it is."""
  from erp import export
  from erp import state as state_lib
  rng = np.random.default_rng(11)
  params = {'dense': {'kernel': jnp.asarray(rng.normal(size=(60, 10)), jnp.float32),
                      'bias': jnp.asarray(rng.normal(size=10), jnp.float32)}}
  state = state_lib.reparameterize(params)
  state = state.replace(latents={
      k: jnp.asarray(_sparse(rng, v.shape, min(25, v.size // 3)), jnp.float32) + 0.2
      for k, v in state.latents.items()})
  shifted = state.replace(latents={k: v - 1.0 if v.ndim == 2 else v + 3.0
                                   for k, v in state.latents.items()})
  kernel = [k for k in state.latents if k.endswith('kernel')][0]
  bias = [k for k in state.latents if k.endswith('bias')][0]
  views = {kernel: (60, 10), bias: (10,)}
  np.testing.assert_array_equal(np.asarray(rate_term.modes(shifted.latents, [bias, kernel], views)),
                                [0, -1])
  key = jax.random.PRNGKey(5)
  value = lambda s, fit='active_base': state_lib.rate(s, key, per_group=True, prior_samples=64,
                                                     prior_fit=fit)
  before, after = value(state), value(shifted)
  assert float(value(shifted, 'active')[kernel]) > float(after[kernel]) + 100
  np.testing.assert_allclose(float(after[kernel]), float(before[kernel]), rtol=1e-5)
  np.testing.assert_allclose(float(after[bias]), priors.integer_bits(
      shifted.priors[bias], np.round(np.asarray(shifted.latents[bias]))), rtol=1e-5)
  reported = export.rate_summary(shifted, prior_fit='active_base')['group_bits'][kernel]
  exact = state_lib.rate(shifted, key, per_group=True, prior_samples=0, prior_fit='active_base')
  np.testing.assert_allclose(reported, float(exact[kernel]), rtol=1e-4)
  unshifted = export.rate_summary(state, prior_fit='active_base')['group_bits'][kernel]
  np.testing.assert_allclose(reported, unshifted, rtol=1e-5)
  grad = lambda s: jax.grad(lambda s: value(s)[kernel])(s)
  g_before, g_after = grad(state), grad(shifted)
  np.testing.assert_allclose(np.asarray(g_after.latents[kernel]),
                             np.asarray(g_before.latents[kernel]), rtol=1e-5, atol=1e-6)
  for a, b in zip(*(jax.tree.leaves(g.priors[kernel]) for g in (g_after, g_before))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  ties = {'t': jnp.asarray([[0.0, 1.0], [1.0, 0.0]])}
  assert float(rate_term.modes(ties, ['t'], {'t': (2, 2)})[0]) == 0


@pytest.mark.parametrize('fit', ['rounded', 'active_base'])
def test_interpolated_latent_gradient_is_the_noise_averaged_slope_of_the_integers_bits(fit):
  """rd.latent_gradient='interpolated': the latents' rate gradient is d/dx E L(x + u), u ~
  U(-1/2, 1/2), L the bits of the integers (under each prior) joined by straight lines,
  at x = latents (less the base that 'active_base' takes off a kernel), checked against a
  quadrature of that expectation, also at integers, half-integers and past the grid's
  edge; no noise in it; the value and the priors' gradient are the fit's, as with 'noisy'."""
  rng = np.random.default_rng(21)
  x = np.concatenate([rng.normal(0.0, 3.0, 480), np.arange(-6, 7), np.arange(-6, 6) + 0.5,
                      [-140.3, 131.7, 126.9]]).astype(np.float32)
  latents = {'kernel': jnp.asarray(x.reshape(-1, 1) * np.ones((1, 2), np.float32)) - 2.0}
  params = {'kernel': priors.init(jax.random.PRNGKey(3), init_scale=4.0)}
  views = {'kernel': latents['kernel'].shape}
  key = jax.random.PRNGKey(7)
  total = lambda gradient: lambda l, p: rate_term.training_bits(
      l, p, key, 0, 2048, fit, views, gradient)['kernel']
  v_i, (gl_i, gp_i) = jax.value_and_grad(total('interpolated'), (0, 1))(latents, params)
  v_n, (gl_n, gp_n) = jax.value_and_grad(total('noisy'), (0, 1))(latents, params)
  np.testing.assert_allclose(float(v_i), float(v_n), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(gp_i), jax.tree.leaves(gp_n)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  base = -2.0 if fit == 'active_base' else 0.0
  half = rate_term.FIT_HALF_WIDTH
  grid = np.asarray(priors.integer_grid_bits(params['kernel'], -half, 2 * half), np.float64)
  inner = np.arange(-half + 1, half - 1)  # The outer lines continue past the edges.
  line = lambda y: np.interp(np.clip(y, inner[0] - 1, inner[-1] + 1), np.arange(-half, half),
                             grid) + np.where(y > inner[-1] + 1, (y - inner[-1] - 1) * (
                                 grid[-1] - grid[-2]), 0) + np.where(y < inner[0] - 1, (
                                     y - inner[0] + 1) * (grid[1] - grid[0]), 0)
  u = (np.arange(20000) + 0.5) / 20000 - 0.5
  expected = lambda y: line(y[:, None] + u[None, :]).mean(-1)
  y = np.asarray(latents['kernel'], np.float64).ravel() - base
  want = (expected(y + 1e-3) - expected(y - 1e-3)) / 2e-3
  np.testing.assert_allclose(np.asarray(gl_i['kernel']).ravel(), want, rtol=2e-3, atol=2e-3)
  other = lambda gradient: jax.grad(lambda l: rate_term.training_bits(  # Another noise draw.
      l, params, jax.random.PRNGKey(8), 0, 2048, fit, views, gradient)['kernel'])(latents)
  np.testing.assert_array_equal(np.asarray(other('interpolated')['kernel']),
                                np.asarray(gl_i['kernel']))  # No noise in it.
  noisy_change = np.asarray(other('noisy')['kernel']) - np.asarray(gl_n['kernel'])
  assert float(np.abs(noisy_change).max()) > 0.01
  with pytest.raises(ValueError, match='latent gradient'):
    rate_term.training_bits(latents, params, key, 0, 2048, 'noisy', views, 'interpolated')
