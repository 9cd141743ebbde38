"""An erp run's model, float variables and EprState, rebuilt from its config (harness)."""
import flax
import jax
import jax.numpy as jnp

from erp import data
from erp import models
from erp import state as state_lib
from erp import workdir as workdir_lib


def build_model(config):
  """(model, dataset info): a model of erp.models, or any 'package.module:Class'."""
  ds = data.info(config.data.name)
  kwargs = {'width': config.model.width} if config.model.width != 1 else {}
  return models.get_model(config.model.name, ds.num_classes, **kwargs), ds


def init_model(config, model, ds):
  """Initial float variables {'params', maybe 'batch_stats'}: random, or config.init_from's."""
  dummy = jnp.zeros((1,) + data.input_shape(config.data), jnp.float32)
  key = jax.random.PRNGKey(config.seed)
  if config.init_from:  # Only the structure: no compile (~2 s of a LeNet's start on CPU).
    template = jax.eval_shape(lambda k, x: model.init(k, x, train=False), key, dummy)
    return workdir_lib.pretrained_variables(config.init_from, flax.core.unfreeze(template))
  init = jax.jit(model.init, static_argnames='train')  # One compile, not one per op.
  return flax.core.unfreeze(init(key, dummy, train=False))


def reparameterize(config, params):
  """The EprState of params under config.rd (every leaf float when rd is off)."""
  rd = config.rd
  keep_float = (lambda path, value: True) if not rd.enabled else (rd.float_pattern or None)
  return state_lib.reparameterize(
      params, seed=config.seed + 1, keep_float=keep_float, conv_decoder=rd.conv_decoder,
      init_levels=rd.init_levels, min_init_step=rd.min_init_step,
      prior_filters=tuple(rd.prior_filters), prior_init_scale=rd.prior_init_scale,
      prior_spikes=rd.get('prior_spikes', 0))  # Absent from older runs' configs.


def setup(config):
  """Everything both training and export need: model, dataset info, state template, stats."""
  model, ds = build_model(config)
  variables = init_model(config, model, ds)
  return model, ds, reparameterize(config, variables['params']), dict(
      variables.get('batch_stats', {}))
