import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import erp
from erp import models
from erp import reparam
from erp import runs
from conftest import load_config


@pytest.mark.parametrize('n', [1, 2, 3, 4, 5, 7])
def test_real_dft_matrix_is_orthonormal(n):
  b = reparam.real_dft_matrix(n)
  np.testing.assert_allclose(b @ b.T, np.eye(n), atol=1e-6)


def test_dft_decoder_round_trip_on_random_kernels():
  kernel = jax.random.normal(jax.random.PRNGKey(0), (5, 5, 3, 8))
  coeffs = reparam.rdft2(kernel)
  assert coeffs.shape == kernel.shape
  np.testing.assert_allclose(reparam.irdft2(coeffs), kernel, atol=1e-5)
  # Parseval: an orthonormal transform keeps the energy.
  np.testing.assert_allclose(jnp.sum(coeffs**2), jnp.sum(kernel**2), rtol=1e-5)


def test_straight_through_gradient_reaches_latents():
  x = jnp.array([0.2, 1.7, -2.6])
  np.testing.assert_array_equal(reparam.round_ste(x), [0.0, 2.0, -3.0])
  grad = jax.grad(lambda v: jnp.sum(3.0 * reparam.round_ste(v)))(x)
  np.testing.assert_array_equal(grad, [3.0, 3.0, 3.0])


@pytest.mark.parametrize('name,shape', [('lenet300', (28, 28, 1)), ('lenet5', (28, 28, 1)),
                                        ('resnet20', (32, 32, 3)), ('vgg16', (32, 32, 3))])
def test_reparameterized_models_decode_to_same_params_and_outputs(name, shape):
  model = models.get_model(name, 10)
  x = jax.random.normal(jax.random.PRNGKey(1), (2,) + shape)
  variables = model.init(jax.random.PRNGKey(0), x)
  state = erp.reparameterize(variables['params'])
  exact = erp.decode(state, quantize=False)
  assert jax.tree.structure(exact) == jax.tree.structure(variables['params'])
  for a, b in zip(jax.tree.leaves(exact), jax.tree.leaves(variables['params'])):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)
  out = model.apply({**variables, 'params': exact}, x)
  np.testing.assert_allclose(out, model.apply(variables, x), atol=1e-4)
  # Rounded: the same shapes and outputs close to the float model's (a few levels per std).
  rounded = erp.decode(state)
  out_q = model.apply({**variables, 'params': rounded}, x)
  assert np.corrcoef(np.ravel(out_q), np.ravel(out))[0, 1] > 0.9
  kinds = dict(state.kinds)
  if name == 'lenet5':
    assert kinds['Conv_0/kernel'] == 'dft' and kinds['Dense_0/bias'] == 'affine'
  if name == 'resnet20':  # Norm layers stay float by role; every conv is compressed.
    assert all(kind == 'float' for path, kind in kinds.items() if 'BatchNorm' in path)
    shapes = {p: v.shape for p, v in zip(*erp.leaves.flatten(variables['params'])[:2])}
    for path, kind in kinds.items():
      if path.endswith('kernel') and len(shapes[path]) == 4:
        assert kind == ('dft' if shapes[path][0] > 1 else 'affine'), (path, kind)


def test_disabled_rd_keeps_every_leaf_float():
  c = load_config('mnist_lenet5')
  params = models.get_model('lenet5', 10).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
  state = runs.reparameterize(c, params['params'])
  assert {kind for _, kind in state.kinds} == {'float'} and not state.latents


def test_exact_maths_match_numpy_to_a_few_ulps():
  from erp import exact
  x = np.random.default_rng(0).uniform(-700, 700, 100000)
  np.testing.assert_allclose(exact.exp(x), np.exp(x), rtol=4 * 2.0**-52)
  y = np.exp(np.random.default_rng(1).uniform(-700, 700, 100000))
  np.testing.assert_allclose(exact.log(y), np.log(y), rtol=2 * 2.0**-52, atol=2.0**-52)
  assert exact.exp(np.array([-1e6, 0.0]))[1] == 1.0 and exact.exp(np.array([-1e6]))[0] == 0.0
  for bad in (np.nan, np.inf):
    with pytest.raises(erp.ErpError):
      exact.exp(np.array([bad]))
  with pytest.raises(erp.ErpError):
    exact.log(np.array([0.0]))
  # A scalar (a decoder's step) takes the Python-float path: the same bits as the arrays'.
  edges = np.array([0.0, 1e-300, 709.9, 710.0, -745.2, -800.0, 800.0, 0.5 * np.log(2)])
  x = np.concatenate([x[:5000], edges])
  assert np.array_equal(np.array([exact.exp(v) for v in x]), exact.exp(x))
  with pytest.raises(erp.ErpError):
    exact.exp(np.float64(np.nan))


@pytest.mark.parametrize('kind,shape', [('affine', (300, 100)), ('affine', (100,)),
                                        ('dft', (5, 5, 20, 50)), ('dft', (3, 3, 64, 64)),
                                        ('dft', (3, 1, 4, 4))])
def test_exact_decode_is_the_training_decode_within_float32_rounding(kind, shape):
  """decode_exact (the file's weights) and the JAX decode differ only in the last bits."""
  rng = np.random.default_rng(0)
  value = rng.normal(0, 0.05, shape).astype(np.float32)
  latent, decoder = reparam.init_group(value, kind)
  if 'shift' in decoder:
    decoder['shift'] = jnp.float32(0.01)
  rounded = np.round(np.asarray(latent))
  fast = np.asarray(reparam.decode_group(kind, jnp.asarray(rounded), decoder))
  exact = reparam.decode_exact(kind, rounded.astype(np.int64), decoder)
  assert exact.dtype == np.float32 and exact.shape == shape
  np.testing.assert_allclose(exact, fast, rtol=1e-5, atol=1e-6 * np.abs(fast).max())
  # And exactly the float64 reference, rounded once.
  step = np.exp(np.float64(np.asarray(decoder['log_step'])))
  ref = step * rounded
  if kind == 'dft':
    bh, bw = (reparam.real_dft_matrix(n).astype(np.float64) for n in shape[:2])
    ref = np.einsum('ih,jw,ij...->hw...', bh, bw, ref)
  if 'shift' in decoder:
    ref = ref + np.float64(decoder['shift'])
  np.testing.assert_allclose(exact, ref.astype(np.float32), rtol=2.0**-22, atol=1e-12)


@pytest.mark.parametrize('shift', [False, True])
@pytest.mark.parametrize('shape', [(40, 30), (3, 3, 16, 32), (300,)])
def test_one_pass_affine_decode_equals_rounding_then_decoding(shift, shape):
  """decode_affine_ste is decode_group('affine', round_ste(.)) in value and in every
  gradient (latents, log step, shift), and the weight a file decodes to; for small
  leaves and for large ones (whose weight is materialized and whose log step's
  gradient is a matrix-vector product)."""
  rng = np.random.default_rng(0)
  latent = jnp.asarray(rng.normal(0, 3, shape), jnp.float32)
  decoder = {'log_step': jnp.float32(-1.3)}
  if shift:
    decoder['shift'] = jnp.float32(0.4)
  g = jnp.asarray(rng.normal(size=shape), jnp.float32)
  fused = lambda l, d: (reparam.decode_affine_ste(l, d) * g).sum()
  plain = lambda l, d: (reparam.decode_group('affine', reparam.round_ste(l), d) * g).sum()
  np.testing.assert_array_equal(reparam.decode_affine_ste(latent, decoder),
                                reparam.decode_group('affine', jnp.round(latent), decoder))
  got = jax.jit(jax.grad(fused, argnums=(0, 1)))(latent, decoder)
  want = jax.grad(plain, argnums=(0, 1))(latent, decoder)
  assert set(got[1]) == set(decoder)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_state_optimizer_updates_each_part_as_its_own_adam():
  """One optax transformation over an EprState: each part takes its own learning rate (the
  decoders and priors flattened into one vector each), exactly as Adam on that part alone."""
  params = {'Dense_0': {'kernel': jnp.ones((6, 4)) * 0.3, 'bias': jnp.zeros(4)},
            'norm': {'scale': jnp.ones(4)}}
  state = erp.reparameterize(params, keep_float='norm')
  grads = jax.tree.map(lambda x: jnp.sin(jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
                                         + x.size), state)
  lrs = dict(latents=0.05, decoders=1e-3, priors=1e-2, floats=1e-3)
  tx = erp.optimizer(**lrs)
  opt_state = tx.init(state)
  for _ in range(2):
    updates, opt_state = tx.update(grads, opt_state, state)
  for part, lr in lrs.items():
    adam = optax.adam(lr)
    part_state = adam.init(getattr(state, part))
    for _ in range(2):
      want, part_state = adam.update(getattr(grads, part), part_state)
    for a, b in zip(jax.tree.leaves(getattr(updates, part)), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
  float_only = erp.reparameterize(params, keep_float=lambda path, value: True)
  empty = tx.init(float_only)  # Parts with no arrays (a float run) are no error.
  tx.update(jax.tree.map(jnp.ones_like, float_only), empty, float_only)


def test_a_non_finite_decoder_is_one_clear_error():
  for decoder in ({'log_step': jnp.float32(np.nan)},
                  {'log_step': jnp.float32(-2.0), 'shift': jnp.float32(np.inf)}):
    with pytest.raises(erp.ErpError, match='non-finite step or shift'):
      reparam.file_decoder(decoder)
