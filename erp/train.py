"""Training: one optax loop on task loss + lambda * bits (EPR, Oktay et al. 2020, eq. 1).

python -m erp.train --config configs/mnist_lenet300.py --workdir DIR [--config.rd.lmbda=...]

The loss is the mean cross-entropy [nats/example] plus lmbda * (total bits of all
latents) / (number of training examples): the rate is amortized over the training set,
so lmbda does not depend on the batch size. rd.enabled=False: plain training.
"""
import os
import time

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from erp import cli
from erp import config as config_lib
from erp import data
from erp import distill
from erp import evaluate
from erp import export
from erp import pipeline
from erp import reparam
from erp import runs
from erp import train_step as step_lib
from erp import workdir as workdir_lib
from erp.errors import ErpError


def data_mesh(batch_size):
  """A 1-D mesh ('data') over every device of every host; the batch splits evenly across it."""
  devices = jax.devices()
  if batch_size % len(devices):
    raise ErpError(f'train.batch_size={batch_size} does not split over {len(devices)} devices')
  return jax.sharding.Mesh(np.array(devices), ('data',))


def replicate(tree, mesh):
  """tree's arrays on every device of mesh (the training state)."""
  return jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

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
  tx = step_lib.make_optimizer(config, total_steps, steps_per_epoch)
  state = step_lib.initial_state(config, trainable, batch_stats, tx,
                                 jax.random.PRNGKey(config.seed + 2))
  state = workdir_lib.restore_checkpoint(workdir, state)
  # A run checkpointed at its last step (num_steps may end mid-epoch) trains no more.
  first_epoch = (num_epochs if int(state.step) >= total_steps
                 else int(state.step) // steps_per_epoch)
  if first_epoch:
    print(f'resumed from the checkpoint at epoch {first_epoch}', flush=True)

  mesh = data_mesh(batch)
  state = replicate(state, mesh)
  train_step = step_lib.make_train_step(config, model, ds, tx, num_train)
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
      state, metrics = train_step(state, *next(batches), with_rate=step_lib.computes_rate(
          config, epoch * steps_per_epoch + s))
      pending.append(metrics)
      if t_loop is None:
        jax.block_until_ready(metrics)
        t_loop = time.time()
        first_step_s = t_loop - t_call
      else:
        steps_done += 1
      if len(pending) < config.train.log_every_steps and s + 1 < epoch_steps:
        continue
      # Each over the steps that report it (those without the rate report no loss or bits).
      metrics = {k: float(np.mean([m[k] for m in pending if k in m]))
                 for k in dict.fromkeys(k for m in pending for k in m)}
      pending = []
      rate = steps_done / max(time.time() - t_loop, 1e-9)
      step = int(state.step)
      loss = metrics.get('loss', metrics['ce'])
      if not np.isfinite(loss):  # Checkpoints keep the last finite state.
        raise ErpError(f'training diverged: the loss is {loss} by step {step} '
                       f'(epoch {epoch + 1}); the newest checkpoint in {workdir} is from before')
      print(f'step {step}/{total_steps} epoch {epoch + 1} loss {loss:.4f} '
            f'ce {metrics["ce"]:.4f} bits {metrics.get("bits", float("nan")):.0f} '
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
  recipes = {'init_from': config.init_from and workdir_lib.float_run_recipe(config.init_from)}
  if config.train.get('distill_weight'):  # How each float run used was trained.
    result['teacher_model'] = distill.teacher_model(config)
    recipes['distill_from'] = distill.teacher_recipe(config)
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
