import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erp import models
from erp import reparam
from erp.errors import ErpError


# Counts derived by hand from the layer shapes: VGG-16 = 13 convs 14,710,464 + their
# BatchNorm 8,448 + fc 262,656 + BatchNorm 1,024 + fc 5,130; ResNet-20 with projection
# shortcuts; ResNet-18/50 equal torchvision's published counts.
@pytest.mark.parametrize('name,input_shape,num_params', [
    ('lenet300', (28, 28, 1), 266_610),
    ('lenet5', (28, 28, 1), 431_080),
    ('vgg16', (32, 32, 3), 14_987_722),
    ('resnet20', (32, 32, 3), 272_474),
    ('resnet56', (32, 32, 3), None),
    ('resnet18', (224, 224, 3), 11_689_512),
    ('resnet50', (224, 224, 3), 25_557_032),
])
def test_param_counts_and_output_shapes(name, input_shape, num_params):
  num_classes = 1000 if name.startswith(('resnet18', 'resnet50')) else 10
  model = models.get_model(name, num_classes)
  x = jnp.zeros((2,) + input_shape)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  logits = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert logits.shape == (2, num_classes)
  count = reparam.num_params(variables['params'])
  if num_params is not None:
    assert count == num_params, count


@pytest.mark.parametrize('name,shape', [('lenet300', (28, 28, 1)), ('lenet5', (28, 28, 1)),
                                        ('resnet20', (32, 32, 3))])
def test_forward_pass_runs_and_differs_per_input(name, shape):
  model = models.get_model(name, 10)
  x = jax.random.normal(jax.random.PRNGKey(1), (4,) + shape)
  variables = model.init(jax.random.PRNGKey(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (4, 10) and np.isfinite(np.asarray(logits)).all()
  assert not np.allclose(logits[0], logits[1])


def test_resnet20_width_multiplier():
  narrow = models.get_model('resnet20', 10)
  wide = models.get_model('resnet20', 10, width=4)
  x = jnp.zeros((1, 32, 32, 3))
  count = lambda m: reparam.num_params(
      jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), x))['params'])
  assert 14 * count(narrow) < count(wide) < 17 * count(narrow)


def test_unknown_model_is_an_error():
  with pytest.raises(ErpError, match='unknown model'):
    models.get_model('alexnet', 10)
