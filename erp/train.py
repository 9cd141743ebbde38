"""Training: one optax loop on task loss + lambda * bits (EPR, Oktay et al. 2020, eq. 1).

python -m erp.train --config configs/mnist_lenet300.py --workdir DIR [--config.rd.lmbda=...]

The loss is the mean cross-entropy [nats/example] plus lmbda * (total bits of all
latents) / (number of training examples): the rate is amortized over the training set,
so lmbda does not depend on the batch size. rd.enabled=False: plain training.
"""
import functools
import os
import time

from absl import flags
import flax
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from erp import cli
from erp import config as config_lib
from erp import data
from erp import distill
from erp import evaluate
from erp import export
from erp import pipeline
from erp import reparam
from erp import runs
from erp import state as state_lib
from erp import workdir as workdir_lib
from erp.errors import ErpError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  trainable: state_lib.EprState  # What the optimizer updates (all float for a float run).
  batch_stats: dict  # Normalization statistics (not trained by gradient).
  opt_state: optax.OptState
  rng: jax.Array


def make_optimizer(config, total_steps, steps_per_epoch):
  """Adam (or SGD) with one learning rate per kind of trainable, one schedule shape.

  The priors always take constant-rate Adam: they must track the latents.
  """
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

  return state_lib.optimizer(latents=opt(config.rd.latent_lr), decoders=opt(config.rd.decoder_lr),
                             priors=optax.adam(config.rd.prior_lr),  # Constant, any optim.
                             floats=opt(config.optim.lr, config.optim.weight_decay))


def apply_train(model, params, batch_stats, images, rng):
  """(logits, updated batch_stats) of the model in training mode; rng drives dropout."""
  variables = {'params': params, **({'batch_stats': batch_stats} if batch_stats else {})}
  if not batch_stats:
    return model.apply(variables, images, train=True, rngs={'dropout': rng}), batch_stats
  logits, updated = model.apply(variables, images, train=True, rngs={'dropout': rng},
                                mutable=['batch_stats'])
  return logits, updated['batch_stats']


def data_mesh(batch_size):
  """A 1-D mesh ('data') over every device of every host; the batch splits evenly across it."""
  devices = jax.devices()
  if batch_size % len(devices):
    raise ErpError(f'train.batch_size={batch_size} does not split over {len(devices)} devices')
  return jax.sharding.Mesh(np.array(devices), ('data',))


def replicate(tree, mesh):
  """tree's arrays on every device of mesh (the training state)."""
  return jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def make_train_step(config, model, ds, tx, num_train, param_transform=None):
  """jit(state, uint8 images [batch, h, w, c], labels [batch]) -> (state, metrics).

  One step per call: on XLA:CPU a lax.scan over steps runs convolutions ~10x slower
  (LeNet5, 2 cores), and dispatch is asynchronous anyway. param_transform (params ->
  params) lets a baseline train through a mask or a quantizer (erp.baselines.prune).
  The batch comes split over the devices of the mesh (pipeline.to_device) and the state
  replicated: XLA partitions the step and sums the gradients across devices, so one
  code path serves 1 or N devices (batch statistics are those of the whole batch).
  """
  rd, lmbda = config.rd, float(config.rd.lmbda)
  # rd.lmbda_warmup_epochs: a ramp, as at first the rate term is hundreds of nats.
  warmup_steps = rd.get('lmbda_warmup_epochs', 0.0) * num_train / config.train.batch_size
  compute_dtype = jnp.dtype(config.train.get('compute_dtype', 'float32'))
  teacher = distill.teacher(config, model, ds)  # None unless train.distill_weight > 0.
  distill_weight = float(config.train.get('distill_weight', 0.0))
  temperature = float(config.train.get('distill_temperature', 1.0))

  def loss_fn(trainable, batch_stats, images, labels, rng, lmbda_now):
    k_noise, k_dropout = jax.random.split(rng)
    params = state_lib.decode(trainable)
    if param_transform is not None:
      params = param_transform(params)
    teacher_logits = teacher(images) if teacher else None
    if compute_dtype != jnp.float32:  # Forward and backward in it; the state stays float32.
      params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
      images = images.astype(compute_dtype)
    old_stats = batch_stats
    logits, batch_stats = apply_train(model, params, batch_stats, images, k_dropout)
    batch_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), batch_stats, old_stats)
    logits = logits.astype(jnp.float32)
    task, ce = distill.task_loss(logits, labels, teacher_logits, distill_weight, temperature)
    total_bits = state_lib.rate(trainable, k_noise, prior_samples=rd.prior_samples,
                                table_points=rd.rate_table_points, prior_fit=rd.prior_fit,
                                latent_gradient=rd.latent_gradient,
                                adaptive_max_latents=rd.adaptive_rate_max_latents,
                                adaptive_gradient=rd.adaptive_rate_gradient)
    loss = task + lmbda_now * total_bits / num_train
    accuracy = (jnp.argmax(logits, -1) == labels).mean()
    return loss, ({'loss': loss, 'ce': ce, 'bits': total_bits, 'accuracy': accuracy},
                  batch_stats)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def train_step(state, images, labels):
    rng, _, k_noise = jax.random.split(state.rng, 3)  # Three, as when augmentation was here.
    images = data.preprocess(images, ds)
    lmbda_now = lmbda if warmup_steps <= 0 else lmbda * jnp.minimum(
        1.0, (state.step + 1) / warmup_steps)
    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
        state.trainable, state.batch_stats, images, labels, k_noise, lmbda_now)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    return state.replace(step=state.step + 1, trainable=trainable,
                         batch_stats=batch_stats, opt_state=opt_state, rng=rng), metrics

  return train_step


def evaluation(config, state, predict, val):
  """{'error_pct': validation error, and for EPR 'estimate' (export.rate_summary) and
  'prior_fit' (export.fit_summary): how the priors price the file}."""
  record = {'error_pct': evaluate.split_error_pct(
      predict, export.variables_of(state.trainable, state.batch_stats), val, config.data)}
  if config.rd.enabled:
    summary = export.rate_summary(state.trainable, config.export.float_dtype,
                                  config.rd.prior_fit, config.rd.adaptive_rate_max_latents)
    record.update(estimate=summary, prior_fit=export.fit_summary(
        config, state.trainable, state.batch_stats, summary['group_bits']))
  return record


def _flat(record):
  """An evaluation as one metrics.jsonl line: its parts side by side."""
  estimate, fit = record.get('estimate', {}), record.get('prior_fit', {})
  extra = {'est_kb': estimate['est_num_bytes'] / 1000} if estimate else {}
  return {'error_pct': record['error_pct'], **extra, **estimate, **fit}


def _format_eta(seconds):
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def train_and_evaluate(config, workdir, overwrite=False):
  """Trains, evaluates, checkpoints, writes metrics.jsonl and result.json; returns the result.

  A workdir holding a run resumes it only if its config is this one; overwrite=True
  starts afresh instead.
  """
  t_call = time.time()
  config_lib.validate(config)
  workdir_lib.prepare(workdir, config, overwrite)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  writer = workdir_lib.Metrics(workdir, config.train.tensorboard)
  # Wall time counts every session of a resumed run: earlier ones from their records.
  start = time.time() - workdir_lib.logged_wall_s(metrics_path)

  train = data.source(config.data, 'train', augment=config.train.augment)
  val = data.source(config.data, 'val')  # Every epoch's evaluation (may be empty).
  test = data.source(config.data, 'test')  # Once, at the end.
  model, ds, trainable, batch_stats = runs.setup(config)

  num_train = len(train)
  batch = config.train.batch_size
  steps_per_epoch = num_train // batch
  total_steps = config.train.num_steps or steps_per_epoch * config.train.num_epochs
  num_epochs = -(-total_steps // steps_per_epoch)  # The last one may be partial.
  tx = make_optimizer(config, total_steps, steps_per_epoch)
  state = TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                     batch_stats=batch_stats, opt_state=tx.init(trainable),
                     rng=jax.random.PRNGKey(config.seed + 2))
  state = workdir_lib.restore_checkpoint(workdir, state)
  first_epoch = int(state.step) // steps_per_epoch
  if first_epoch:
    print(f'resumed from the checkpoint at epoch {first_epoch}', flush=True)

  mesh = data_mesh(batch)
  state = replicate(state, mesh)
  train_step = make_train_step(config, model, ds, tx, num_train)
  predict = evaluate.make_predict(model, ds)
  batches = pipeline.to_device(pipeline.train_batches(
      train, batch_size=batch, seed=config.seed, start_step=int(state.step),
      num_steps=total_steps, threads=config.data.threads, workers=config.data.workers),
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
  t_loop, steps_done, pending = None, 0, []  # Timed from the end of the first (compiling) step.
  first_step_s = None  # From this call to the end of the first step (setup and compile).
  record = {}

  for epoch in range(first_epoch, num_epochs):
    epoch_steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
    for s in range(epoch_steps):
      state, metrics = train_step(state, *next(batches))
      pending.append(metrics)
      if t_loop is None:
        jax.block_until_ready(metrics)
        t_loop = time.time()
        first_step_s = t_loop - t_call
      else:
        steps_done += 1
      if len(pending) < config.train.log_every_steps and s + 1 < epoch_steps:
        continue
      metrics = {k: float(np.mean([m[k] for m in pending])) for k in pending[0]}
      pending = []
      rate = steps_done / max(time.time() - t_loop, 1e-9)
      step = int(state.step)
      if not np.isfinite(metrics['loss']):  # Checkpoints keep the last finite state.
        raise ErpError(f'training diverged: the loss is {metrics["loss"]} by step {step} '
                       f'(epoch {epoch + 1}); the newest checkpoint in {workdir} is from before')
      print(f'step {step}/{total_steps} epoch {epoch + 1} loss {metrics["loss"]:.4f} '
            f'ce {metrics["ce"]:.4f} bits {metrics["bits"]:.0f} '
            f'train_acc {metrics["accuracy"]:.4f} | {rate:.1f} steps/s '
            f'ETA {_format_eta((total_steps - step) / rate) if steps_done else "-"}',
            flush=True)
      writer.write({'step': step, 'epoch': epoch + 1, 'split': 'train',
                    'wall_s': time.time() - start, **metrics})
    last = epoch + 1 == num_epochs
    if last or (epoch + 1) % config.train.eval_every_epochs == 0:
      record = evaluation(config, state, predict, val)
      line = _flat(record)
      writer.write({'step': int(state.step), 'epoch': epoch + 1, 'split': 'val',
                    'wall_s': time.time() - start, **line})
      print(f'eval epoch {epoch + 1}: ' + ', '.join(
          f'{k} {line[k]:.{d}f}' for k, d in (('error_pct', 2), ('num_bytes', 0),
                                              ('est_over_coded', 3), ('est_over_iid', 3))
          if line.get(k)),
            flush=True)
    if last or (epoch + 1) % config.train.checkpoint_every_epochs == 0:
      workdir_lib.save_checkpoint(workdir, state, config.train.keep_checkpoints)

  if not record:  # Resumed after the last epoch: evaluate the restored state.
    record = evaluation(config, state, predict, val)
  variables = export.variables_of(state.trainable, state.batch_stats)
  num_params = reparam.num_params([state.trainable.latents, state.trainable.floats])
  result = workdir_lib.result_record(config, 'epr' if config.rd.enabled else 'float', num_params)
  result.update(val_error_pct=record['error_pct'],
                test_error_pct=evaluate.split_error_pct(predict, variables, test, config.data),
                steps=int(state.step),
                train_wall_s=time.time() - start, first_step_s=first_step_s,
                num_devices=mesh.size, num_train=num_train)
  float_runs = {'init_from': config.init_from}  # How each float run used was trained.
  if config.train.get('distill_weight'):
    result['teacher_model'] = distill.teacher_model(config)
    float_runs['distill_from'] = config.train.distill_from
  recipes = {k: workdir_lib.float_run_recipe(path) for k, path in float_runs.items() if path}
  if any(recipes.values()):
    result['float_runs'] = {k: v for k, v in recipes.items() if v}
  if config.rd.enabled:  # The last evaluation's: the state has not changed since.
    result.update(estimate=record['estimate'], prior_fit=record['prior_fit'])
  if config.train.export and config.rd.enabled:
    result['export'] = export.export_and_check(config, workdir, state, val, test, predict)
  result['wall_s'] = time.time() - start
  workdir_lib.write_result(workdir, result)
  return result


def main(argv):
  del argv
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.overwrite)


if __name__ == '__main__':
  # Flags live here so that importing erp.train (tests, export) defines none.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
  flags.DEFINE_bool('overwrite', False, 'Start afresh in a workdir that holds another run.')
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main)
