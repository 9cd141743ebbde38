"""One training step of EPR (Oktay et al. 2020, eq. 1): its state, optimizer and jitted update.

erp.train runs the loop; the baselines (erp.baselines.prune) and the benchmarks
(benchmarks/step_time.py, step_ops.py) build the same step from here.
"""
import functools

import flax
import jax
import jax.numpy as jnp
import optax

from erp import config as config_lib
from erp import data
from erp import distill
from erp import state as state_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  trainable: state_lib.EprState  # What the optimizer updates (all float for a float run).
  batch_stats: dict  # Normalization statistics (not trained by gradient).
  opt_state: optax.OptState
  rng: jax.Array
  rate_grads: dict | None = None  # rd.rate_every > 1: the latents' rate gradient of the
  # last step that computed the rate (computes_rate), which the steps between reuse.


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


def computes_rate(config, step):
  """Whether training step `step` (0-based) computes the rate term: every rd.rate_every-th.

  The rate's fit and gradient are most of the EPR step's XLA operations (LeNet-300-100 on
  a CPU: 262 a step, 123 without them, the float step 77), while the latents it prices
  move by at most ~1/20 of an integer a step (rd.latent_lr): so the steps between reuse
  the latents' rate gradient of the last step that computed it and leave the priors, as
  StyleGAN2 computes its regularizers every 16th minibatch only (Karras et al. 2020,
  sec. 3.1). That gradient must be the expected one (rd.latent_gradient='interpolated'):
  one noise draw held for 4 steps made LeNet-300-100's files 38 % larger.
  """
  return not config.rd.enabled or step % config.rd.get('rate_every', 1) == 0


def holds_rate_grads(config):
  """Whether the steps hold the latents' rate gradient between steps (rd.rate_every > 1)."""
  return bool(config.rd.enabled) and config.rd.get('rate_every', 1) > 1


def initial_state(config, trainable, batch_stats, tx, rng):
  """The TrainState before the first step; rate_grads zeros where holds_rate_grads."""
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                    batch_stats=batch_stats, opt_state=tx.init(trainable), rng=rng,
                    rate_grads=(jax.tree.map(jnp.zeros_like, trainable.latents)
                                if holds_rate_grads(config) else None))


def make_train_step(config, model, ds, tx, num_train, param_transform=None):
  """jit(state, uint8 images [batch, h, w, c], labels [batch], with_rate=True) ->
  (state, metrics).

  with_rate=False (rd.rate_every, computes_rate): the latents take their task gradient
  plus state.rate_grads, the priors and their optimizer's state stay as they are, and the
  metrics hold no loss or bits. One step per call: on XLA:CPU a lax.scan over steps runs
  convolutions ~10x slower (LeNet5, 2 cores), and dispatch is asynchronous anyway.
  param_transform (params -> params) lets a baseline train through a mask or a quantizer
  (erp.baselines.prune). The batch comes split over the devices of the mesh
  (pipeline.to_device) and the state replicated: XLA partitions the step and sums the
  gradients across devices, so one code path serves 1 or N devices (batch statistics are
  those of the whole batch).
  """
  rd, lmbda = config.rd, float(config.rd.lmbda)
  # rd.lmbda_warmup_epochs: a ramp, as at first the rate term is hundreds of nats.
  warmup_steps = rd.get('lmbda_warmup_epochs', 0.0) * num_train / config.train.batch_size
  compute_dtype = jnp.dtype(config.train.get('compute_dtype', 'float32'))
  teacher = distill.teacher(config, model, ds)  # None unless train.distill_weight > 0.
  distill_weight = float(config.train.get('distill_weight', 0.0))
  temperature = float(config.train.get('distill_temperature', 1.0))
  keeps_rate_grads = holds_rate_grads(config)

  def loss_fn(trainable, rate_latents, batch_stats, images, labels, rng, lmbda_now, with_rate):
    """The rate prices rate_latents (trainable.latents' values): its latents' gradient
    comes out on its own, for the steps without the rate."""
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
    accuracy = (jnp.argmax(logits, -1) == labels).mean()
    if not with_rate:
      return task, ({'ce': ce, 'accuracy': accuracy}, batch_stats)
    bits = state_lib.rate(trainable.replace(latents=rate_latents), k_noise, per_group=True,
                          prior_samples=rd.prior_samples,
                          table_points=rd.rate_table_points, prior_fit=rd.prior_fit,
                          latent_gradient=rd.latent_gradient,
                          adaptive_max_latents=rd.adaptive_rate_max_latents,
                          adaptive_gradient=rd.adaptive_rate_gradient)
    total_bits = priced_bits = sum(bits.values()) if bits else jnp.zeros((), jnp.float32)
    if rd.get('group_lmbda'):  # Per-layer lambda: each group's bits count its scale times.
      scales = config_lib.group_lmbda_scales(rd.group_lmbda, bits)
      priced_bits = sum(scales[g] * b for g, b in bits.items())
    loss = task + lmbda_now * priced_bits / num_train
    return loss, ({'loss': loss, 'ce': ce, 'bits': total_bits, 'accuracy': accuracy},
                  batch_stats)

  @functools.partial(jax.jit, donate_argnums=(0,), static_argnames=('with_rate',))
  def train_step(state, images, labels, with_rate=True):
    rng, _, k_noise = jax.random.split(state.rng, 3)  # Three, as when augmentation was here.
    images = data.preprocess(images, ds)
    lmbda_now = lmbda if warmup_steps <= 0 else lmbda * jnp.minimum(
        1.0, (state.step + 1) / warmup_steps)
    (grads, rate_grads), (metrics, batch_stats) = jax.grad(loss_fn, (0, 1), has_aux=True)(
        state.trainable, state.trainable.latents, state.batch_stats, images, labels, k_noise,
        lmbda_now, with_rate)
    if not with_rate:
      rate_grads = state.rate_grads
    latent_grads = jax.tree.map(jnp.add, grads.latents, rate_grads)
    updates, opt_state = tx.update(grads.replace(latents=latent_grads), state.opt_state,
                                   state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    if not with_rate:  # The priors and their optimizer's state wait for the rate's next step.
      trainable = trainable.replace(priors=state.trainable.priors)
      opt_state = {**opt_state, 'priors': state.opt_state['priors']}
    return state.replace(step=state.step + 1, trainable=trainable, batch_stats=batch_stats,
                         opt_state=opt_state, rng=rng,
                         rate_grads=rate_grads if keeps_rate_grads else None), metrics

  return train_step
