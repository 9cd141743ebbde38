"""Training: one optax loop on task loss + lambda * bits (EPR, Oktay et al. 2020, eq. 1).

python -m erp.train --config configs/mnist_lenet300.py --workdir DIR [--config.rd.lmbda=...]

The loss is the mean cross-entropy [nats/example] plus lmbda * (total bits of
all latents) / (number of training examples): the rate is amortized over the
training set, so lmbda does not depend on the batch size. With
rd.enabled=False every leaf is a float group and this is plain training.
"""
import functools
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
import flax
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from erp import data
from erp import evaluate
from erp import models
from erp import priors
from erp import reparam
from erp.config import config_hash, to_json
from erp.errors import ErpError
from flax import traverse_util

CHECKPOINT = 'checkpoint.msgpack'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  trainable: dict  # {'latents', 'decoders', 'priors', 'floats'}: what the optimizer updates.
  batch_stats: dict  # Normalization statistics (not trained by gradient).
  opt_state: optax.OptState
  rng: jax.Array


def build_model(config):
  ds = data.info(config.data.name)
  kwargs = {'width': config.model.width} if config.model.width != 1 else {}
  return models.get_model(config.model.name, ds.num_classes, **kwargs), ds


def init_model(config, model, ds):
  """Initial float variables {'params', maybe 'batch_stats'}: random, or config.init_from's."""
  dummy = jnp.zeros((1,) + ds.image_shape, jnp.float32)
  variables = model.init(jax.random.PRNGKey(config.seed), dummy, train=False)
  if config.init_from:
    variables = _pretrained_variables(config.init_from, variables)
  return variables


def _pretrained_variables(path, template):
  """Float variables from a float run's checkpoint (a file, or the workdir holding it)."""
  if os.path.isdir(path):
    path = os.path.join(path, CHECKPOINT)
  if not os.path.exists(path):
    raise ErpError(f'init_from: no checkpoint at {path}')
  with open(path, 'rb') as f:
    raw = flax.serialization.msgpack_restore(f.read())
  floats = raw['trainable']['floats']
  flat = traverse_util.flatten_dict(template['params'], sep='/')
  if set(floats) != set(flat):
    raise ErpError(f'init_from: {path} is not a float checkpoint of this model '
                   f'(leaves differ: {sorted(set(floats) ^ set(flat))[:3]})')
  out = {'params': traverse_util.unflatten_dict(
      {k: jnp.asarray(floats[k]) for k in flat}, sep='/')}
  if 'batch_stats' in template:
    out['batch_stats'] = flax.serialization.from_state_dict(template['batch_stats'],
                                                            raw['batch_stats'])
  return out


def init_trainable(config, params):
  """(kinds, trainable): latents/decoders/floats from params, plus one prior per group."""
  kinds, trainable = reparam.init(params, config.rd)
  keys = jax.random.split(jax.random.PRNGKey(config.seed + 1), max(len(kinds), 1))
  trainable['priors'] = {
      path: priors.init(key, tuple(config.rd.prior_filters), config.rd.prior_init_scale)
      for key, path in zip(keys, sorted(trainable['latents']))
  }
  return kinds, trainable


def make_optimizer(config, total_steps, steps_per_epoch):
  """Adam (or SGD) with one learning rate per kind of trainable, one schedule shape."""
  warmup = int(config.optim.warmup_epochs * steps_per_epoch)
  if config.optim.schedule == 'cosine':
    shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(total_steps, warmup + 1))
  elif config.optim.schedule == 'constant':
    shape = optax.linear_schedule(0.0, 1.0, warmup) if warmup else (lambda _: 1.0)
  else:
    raise ValueError(f'unknown optim.schedule {config.optim.schedule!r}')

  def opt(lr, weight_decay=0.0):
    schedule = lambda step: lr * shape(step)
    if config.optim.name == 'adam':
      return optax.adamw(schedule, weight_decay=weight_decay) if weight_decay else optax.adam(schedule)
    if config.optim.name == 'sgd':
      return optax.chain(optax.add_decayed_weights(weight_decay),
                         optax.sgd(schedule, config.optim.momentum, nesterov=True))
    raise ValueError(f'unknown optim.name {config.optim.name!r}')

  return optax.multi_transform(
      {
          'floats': opt(config.optim.lr, config.optim.weight_decay),
          'latents': opt(config.rd.latent_lr),
          'decoders': opt(config.rd.decoder_lr),
          'priors': opt(config.rd.prior_lr),
      }, lambda tree: {k: jax.tree.map(lambda _: k, v) for k, v in tree.items()})


def apply_train(model, params, batch_stats, images):
  """(logits, updated batch_stats) of the model in training mode."""
  if not batch_stats:
    return model.apply({'params': params}, images, train=True), batch_stats
  logits, updated = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                train=True, mutable=['batch_stats'])
  return logits, updated['batch_stats']


def make_train_step(config, model, ds, kinds, tx, num_train, param_transform=None):
  """jit(state, images_all, labels_all, batch_idx [batch]) -> (state, metrics).

  One step per call: on XLA:CPU a lax.scan over steps runs convolutions about
  10x slower (measured on LeNet5, 2 cores), and dispatch is asynchronous anyway.
  param_transform (params -> params) lets a baseline train through a mask or
  a quantizer (erp.baselines.prune).
  """
  lmbda = float(config.rd.lmbda)

  def loss_fn(trainable, batch_stats, images, labels, rng):
    params = reparam.decode(kinds, trainable)
    if param_transform is not None:
      params = param_transform(params)
    logits, batch_stats = apply_train(model, params, batch_stats, images)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    bits = priors.training_bits(trainable['latents'], trainable['priors'], rng,
                                config.rd.prior_samples, config.rd.rate_table_points)
    total_bits = sum(bits.values()) if bits else jnp.zeros(())
    loss = ce + lmbda * total_bits / num_train
    accuracy = (jnp.argmax(logits, -1) == labels).mean()
    return loss, ({'loss': loss, 'ce': ce, 'bits': total_bits, 'accuracy': accuracy},
                  batch_stats)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def train_step(state, images_all, labels_all, batch_idx):
    rng, k_aug, k_noise = jax.random.split(state.rng, 3)
    images = data.preprocess(images_all[batch_idx], ds, k_aug, config.train.augment)
    labels = labels_all[batch_idx]
    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
        state.trainable, state.batch_stats, images, labels, k_noise)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    return state.replace(step=state.step + 1, trainable=trainable,
                         batch_stats=batch_stats, opt_state=opt_state, rng=rng), metrics

  return train_step


def rate_summary(kinds, trainable, float_dtype='float32'):
  """Estimated bits per group at the rounded latents, total bytes, zero fraction."""
  rounded = {k: jnp.round(v) for k, v in trainable['latents'].items()}
  bits = {k: float(v) for k, v in priors.group_bits(rounded, trainable['priors']).items()}
  float_bytes = sum(int(np.prod(trainable['floats'][p].shape)) * np.dtype(float_dtype).itemsize
                    for p, kind in kinds.items() if kind == 'float')
  num_latents = sum(int(v.size) for v in rounded.values())
  zeros = sum(int((v == 0).sum()) for v in rounded.values())
  total_bits = sum(bits.values())
  return {
      'group_bits': bits,
      'latent_bits': total_bits,
      'float_leaf_bytes': float_bytes,
      'est_num_bytes': total_bits / 8 + float_bytes,
      'zero_fraction': zeros / num_latents if num_latents else 0.0,
  }


def result_record(config, method, num_params):
  """The fields every run's result.json starts with (training runs and baselines)."""
  return {
      'model': config.model.name,
      'dataset': config.data.name,
      'method': method,
      'config_hash': config_hash(config),
      'config': config.to_dict(),
      'num_params': num_params,
      'float32_num_bytes': 4 * num_params,
      'jax_version': jax.__version__,
      'device': str(jax.devices()[0].device_kind),
      'platform': platform.platform(),
  }


def eval_variables(kinds, state):
  variables = {'params': reparam.decode(kinds, state.trainable)}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  return variables


def _save_checkpoint(workdir, state):
  path = os.path.join(workdir, CHECKPOINT)
  with open(path + '.tmp', 'wb') as f:
    f.write(flax.serialization.to_bytes(jax.device_get(state)))
  os.replace(path + '.tmp', path)


def _restore_checkpoint(workdir, state):
  path = os.path.join(workdir, CHECKPOINT)
  if not os.path.exists(path):
    return state
  with open(path, 'rb') as f:
    return flax.serialization.from_bytes(state, f.read())


def _format_eta(seconds):
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def _logged_wall_s(metrics_path):
  """The largest wall_s in an existing metrics.jsonl (0 if none): time already spent."""
  if not os.path.exists(metrics_path):
    return 0.0
  with open(metrics_path) as f:
    return max((json.loads(line).get('wall_s', 0.0) for line in f if line.strip()),
               default=0.0)


def _append_jsonl(path, record):
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


def setup(config):
  """Everything both training and export need: model, dataset info, kinds, state template."""
  model, ds = build_model(config)
  variables = init_model(config, model, ds)
  kinds, trainable = init_trainable(config, variables['params'])
  return model, ds, kinds, trainable, dict(variables.get('batch_stats', {}))


def train_and_evaluate(config, workdir):
  """Trains, evaluates, checkpoints, writes metrics.jsonl and result.json; returns the result."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(to_json(config))
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  # Wall time counts every session of a resumed run: earlier ones from their records.
  start = time.time() - _logged_wall_s(metrics_path)

  train_x, train_y = data.load(config.data.name, 'train', config.data.dir or None)
  test_x, test_y = data.load(config.data.name, 'test', config.data.dir or None)
  model, ds, kinds, trainable, batch_stats = setup(config)

  num_train = len(train_y)
  batch = config.train.batch_size
  steps_per_epoch = num_train // batch
  total_steps = steps_per_epoch * config.train.num_epochs
  tx = make_optimizer(config, total_steps, steps_per_epoch)
  state = TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                     batch_stats=batch_stats, opt_state=tx.init(trainable),
                     rng=jax.random.PRNGKey(config.seed + 2))
  state = _restore_checkpoint(workdir, state)
  first_epoch = int(state.step) // steps_per_epoch
  if first_epoch:
    print(f'resumed from {CHECKPOINT} at epoch {first_epoch}', flush=True)

  train_step = make_train_step(config, model, ds, kinds, tx, num_train)
  predict = evaluate.make_predict(model, ds)
  images_dev, labels_dev = jnp.asarray(train_x), jnp.asarray(train_y)
  t_loop, steps_done, pending = time.time(), 0, []
  record = {}

  for epoch in range(first_epoch, config.train.num_epochs):
    order = data.epoch_permutation(config.seed, epoch, num_train)
    idx = jnp.asarray(order[:steps_per_epoch * batch].reshape(steps_per_epoch, batch))
    for s in range(steps_per_epoch):
      state, metrics = train_step(state, images_dev, labels_dev, idx[s])
      pending.append(metrics)
      steps_done += 1
      if len(pending) < config.train.log_every_steps and s + 1 < steps_per_epoch:
        continue
      metrics = {k: float(np.mean([m[k] for m in pending])) for k in pending[0]}
      pending = []
      rate = steps_done / (time.time() - t_loop)
      step = int(state.step)
      print(f'step {step}/{total_steps} epoch {epoch + 1} loss {metrics["loss"]:.4f} '
            f'ce {metrics["ce"]:.4f} bits {metrics["bits"]:.0f} '
            f'train_acc {metrics["accuracy"]:.4f} | {rate:.1f} steps/s '
            f'ETA {_format_eta((total_steps - step) / rate)}', flush=True)
      _append_jsonl(metrics_path, {'step': step, 'epoch': epoch + 1, 'split': 'train',
                                   'wall_s': time.time() - start, **metrics})
    last = epoch + 1 == config.train.num_epochs
    if last or (epoch + 1) % config.train.eval_every_epochs == 0:
      error = evaluate.test_error(predict, eval_variables(kinds, state), test_x, test_y)
      record = {'step': int(state.step), 'epoch': epoch + 1, 'split': 'test',
                'error_pct': error, 'wall_s': time.time() - start}
      if config.rd.enabled:
        summary = rate_summary(kinds, state.trainable, config.export.float_dtype)
        record.update(est_kb=summary['est_num_bytes'] / 1000, **summary)
      _append_jsonl(metrics_path, record)
      extra = f' est {record["est_kb"]:.2f} KB' if 'est_kb' in record else ''
      print(f'eval epoch {epoch + 1}: test error {error:.2f}%{extra}', flush=True)
    if last or (epoch + 1) % config.train.checkpoint_every_epochs == 0:
      _save_checkpoint(workdir, state)

  if not record:  # Resumed after the last epoch: evaluate the restored state.
    record = {'error_pct': evaluate.test_error(predict, eval_variables(kinds, state),
                                               test_x, test_y)}
  result = result_record(config, 'epr' if config.rd.enabled else 'float',
                         reparam.num_params(reparam.decode(kinds, state.trainable)))
  result.update(test_error_pct=record['error_pct'], steps=int(state.step),
                train_wall_s=time.time() - start)
  if config.rd.enabled:
    result['estimate'] = rate_summary(kinds, state.trainable, config.export.float_dtype)
  if config.train.export and config.rd.enabled:
    from erp import export  # Deferred: export is only needed at the end.
    result['export'] = export.export_and_check(config, workdir, model, ds, kinds, state,
                                               test_x, test_y, predict)
  result['wall_s'] = time.time() - start
  with open(os.path.join(workdir, 'result.json'), 'w') as f:
    json.dump(result, f, indent=1, sort_keys=True, default=list)
  return result


def main(argv):
  del argv
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def run_cli(main_fn):
  """app.run(main_fn), turning config override errors into one clear line.

  config_flags raises a bare AttributeError/KeyError while parsing
  `--config.unknown=...`; it happens before main runs, so it is a config error.
  """
  started = []
  try:
    def wrapped(argv):
      started.append(True)
      main_fn(argv)

    app.run(wrapped)
  except (AttributeError, KeyError) as e:
    if started:
      raise
    bad = [a for a in sys.argv[1:] if a.startswith('--config.')]
    key = str(e).strip('"\'')
    print(f"erp: error: unknown config key '{key}' (overrides given: {' '.join(bad)})",
          file=sys.stderr)
    sys.exit(2)
  except ErpError as e:
    print(f'erp: error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  # Flags live here so that importing erp.train (tests, export) defines none.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
  flags.mark_flags_as_required(['config', 'workdir'])
  run_cli(main)
