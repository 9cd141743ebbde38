"""MIRACLE: minimal random code learning (Havasi, Peharz, Hernandez-Lobato, ICLR 2019).

python -m erp.baselines.miracle --config configs/mnist_lenet300.py --workdir DIR \
    --config.init_from=FLOAT_RUN --config.miracle.block_size=30

1. Variational model. Every leaf (kernels and biases) of n weights is hashed to
   ceil(n / g) variables, g = ceil(n / miracle.max_vars) (erp.codecs.miracle),
   each with a Gaussian posterior q = N(mu, sigma^2); the leaf's encoding
   distribution is p = N(0, sigma_p^2) with a learned sigma_p. The variables
   are cut into blocks of miracle.block_size, each with a budget of
   miracle.bits bits.
2. Training. miracle.pretrain_epochs on the cross-entropy alone, then
   miracle.kl_epochs on cross-entropy [nats/example] + sum_b beta_b KL_b(q||p)
   [nats], one weight sample per step, Adam at miracle.lr. After each step a
   block's beta_b is multiplied by miracle.beta_step if its KL exceeds the
   budget, divided by it otherwise: the paper's adaptive penalty, which drives
   every block's KL to about `bits` bits.
3. Encoding. Blocks in a random order, miracle.blocks_per_round at a time, are
   each replaced by an importance sample of q among 2**bits candidates drawn
   from p with the shared seed (erp.codecs.miracle.choose) and frozen; between
   rounds the rest is retrained miracle.retrain_steps steps on the same loss,
   sigma_p fixed (the file stores it). A block costs exactly `bits` bits.

Choices where the paper or its code (github.com/cambridge-mlg/miracle) differ
from ours, with why:
- mu starts from the trained float run (each variable the mean of its
  sign-corrected weights), sigma at exp(miracle.init_log_sigma), sigma_p at
  the std of mu; the paper pretrains its hashed network from scratch.
- Hash buckets are a random balanced assignment with random signs (the
  paper's code shares consecutive weights); g follows one cap, max_vars,
  instead of hand-set groups per layer (its LeNet-5: 1, 2, 50, 1).
- Blocks are formed within each leaf, so a leaf's file section is
  self-contained; the paper's code permutes variables across layers.
- The default schedule is sized for a 2-core CPU: epochs instead of the
  paper's 2e5 pretraining and 2e5 KL iterations, several blocks per
  retraining round instead of one, and beta_step 1.002 so the penalties can
  adapt within ~10^4 steps (its 1.0001 over 2e5). The paper's shape, one
  block then its LeNet-5's 100 iterations, is miracle.blocks_per_round=1,
  miracle.retrain_steps=100.
- Candidates are pseudo-random normals from JAX's counter-based generator
  (the paper's code uses one Sobol quasi-random set for every block).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from erp import data
from erp import evaluate
from erp import file as file_lib
from erp.codecs import miracle as random_code
from erp import train_step
from erp.baselines import common

METHOD = 'miracle'


def layout(config, path, n):
  """{'num_vars', 'num_blocks', 'rank', 'sign'} of a leaf of n weights."""
  m = config.miracle
  group = -(-n // m.max_vars)
  num_vars = -(-n // group)
  rank, sign = random_code.hashing(config.seed, path, n, num_vars)
  return {'num_vars': num_vars, 'num_blocks': random_code.num_blocks(num_vars, m.block_size),
          'rank': rank, 'sign': sign}


def init_state(config, flat, layouts):
  """(trainable {mu, log_sigma, log_scale}, frozen {fixed, value, beta}) from float params."""
  m = config.miracle
  trainable = {'mu': {}, 'log_sigma': {}, 'log_scale': {}}
  frozen = {'fixed': {}, 'value': {}, 'beta': {}}
  for path, value in flat.items():
    lay = layouts[path]
    signed = np.asarray(value, np.float32).ravel() * lay['sign']
    bucket = lay['rank'] % lay['num_vars']
    sums = np.bincount(bucket, signed, lay['num_vars'])
    counts = np.bincount(bucket, None, lay['num_vars'])
    mu = np.zeros(lay['num_blocks'] * m.block_size, np.float32)
    mu[:lay['num_vars']] = sums / counts
    log_scale = np.log(max(float(np.std(mu[:lay['num_vars']])), 1e-3))
    log_sigma = np.full_like(mu, m.init_log_sigma)
    log_sigma[lay['num_vars']:] = log_scale  # Padding: q = p, zero KL.
    shape = (lay['num_blocks'], m.block_size)
    trainable['mu'][path] = jnp.asarray(mu.reshape(shape))
    trainable['log_sigma'][path] = jnp.asarray(log_sigma.reshape(shape))
    trainable['log_scale'][path] = jnp.float32(log_scale)
    frozen['fixed'][path] = jnp.zeros(lay['num_blocks'], bool)
    frozen['value'][path] = jnp.zeros(shape, jnp.float32)
    frozen['beta'][path] = jnp.full(lay['num_blocks'], m.beta_init, jnp.float32)
  return trainable, frozen


@jax.custom_vjp
def _permute(x, rank, inverse):
  return x[rank]


def _permute_fwd(x, rank, inverse):
  return x[rank], inverse


def _permute_bwd(inverse, g):
  return g[inverse], None, None  # rank is a permutation: a gather, not a scatter-add.


_permute.defvjp(_permute_fwd, _permute_bwd)


def leaf_weights(mu, value, fixed, static, shape):
  """A leaf's weights from its (sampled or mean) variables, frozen blocks at their values.

  Weight j is sign[j] * v[rank[j] % num_vars] (erp.codecs.miracle.weights): the
  variables tiled to n, then permuted by rank.
  """
  n, num_vars = static['rank'].shape[0], static['num_vars']
  v = jnp.where(fixed[:, None], value, mu).ravel()[:num_vars]
  tiled = jnp.tile(v, -(-n // num_vars))[:n]
  return (_permute(tiled, static['rank'], static['inverse']) * static['sign']).reshape(shape)


def block_kl(trainable, path):
  """KL(q||p) per block of a leaf, nats [num_blocks]."""
  kl = random_code.kl_nats(trainable['mu'][path], jnp.exp(trainable['log_sigma'][path]),
                           jnp.exp(trainable['log_scale'][path]))
  return kl.sum(-1)


def make_step(config, model, ds, statics, shapes, tx):
  """jit(trainable, opt_state, frozen, batch_stats, images, labels, idx, rng, kl_on,
  scale_on) -> (trainable, opt_state, frozen, batch_stats, metrics)."""
  m = config.miracle
  budget_nats = m.bits * np.log(2.0)

  def loss_fn(trainable, frozen, batch_stats, images, labels, rng, kl_on):
    params, kl_loss, kl_total = {}, 0.0, 0.0
    keys = jax.random.split(rng, len(shapes))
    for key, path in zip(keys, sorted(shapes)):
      sigma = jnp.exp(trainable['log_sigma'][path])
      sample = trainable['mu'][path] + sigma * jax.random.normal(key, sigma.shape)
      params[path] = leaf_weights(sample, frozen['value'][path], frozen['fixed'][path],
                                  statics[path], shapes[path])
      kl = block_kl(trainable, path) * (1 - frozen['fixed'][path])
      kl_loss += jnp.sum(frozen['beta'][path] * kl)
      kl_total += kl.sum()
    logits, batch_stats = train_step.apply_train(
        model, traverse_util.unflatten_dict(params, sep='/'), batch_stats, images, rng)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss = ce + kl_on * kl_loss
    return loss, (batch_stats, {'ce': ce, 'kl_bits': kl_total / np.log(2.0),
                                'accuracy': (jnp.argmax(logits, -1) == labels).mean()})

  @jax.jit
  def step(trainable, opt_state, frozen, batch_stats, images_all, labels_all, idx, rng, kl_on,
           scale_on):
    images = data.preprocess(images_all[idx], ds)
    grads, (batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(
        trainable, frozen, batch_stats, images, labels_all[idx], rng, kl_on)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    new = optax.apply_updates(trainable, updates)
    new['log_scale'] = jax.tree.map(lambda n, o: jnp.where(scale_on, n, o),
                                    new['log_scale'], trainable['log_scale'])
    beta = {}
    for path in shapes:  # The adaptive penalties, on the blocks still to be coded.
      over = block_kl(new, path) > budget_nats
      factor = jnp.where(over, m.beta_step, 1 / m.beta_step)
      beta[path] = jnp.where(frozen['fixed'][path] | (kl_on == 0), frozen['beta'][path],
                             frozen['beta'][path] * factor)
    return new, opt_state, dict(frozen, beta=beta), batch_stats, metrics

  return step


def mean_params(trainable, frozen, statics, shapes):
  """Params at the posterior means (frozen blocks at their coded values), for evaluation."""
  flat = {path: leaf_weights(trainable['mu'][path], frozen['value'][path], frozen['fixed'][path],
                             statics[path], shapes[path])
          for path in shapes}
  return traverse_util.unflatten_dict(flat, sep='/')


def run(config, workdir):
  start = time.time()
  m = config.miracle
  if not (1 <= m.bits <= 16 and m.block_size >= 1 and m.max_vars >= 1 and m.beta_step > 1
          and m.blocks_per_round >= 1 and m.retrain_steps >= 0):
    raise ValueError('need 1 <= miracle.bits <= 16, miracle.block_size >= 1, '
                     'miracle.max_vars >= 1, miracle.beta_step > 1, miracle.blocks_per_round '
                     f'>= 1, miracle.retrain_steps >= 0; got {m.to_dict()}')
  model, ds, variables = common.float_start(config)
  flat = common.flat_params(variables)
  shapes = {path: tuple(np.shape(v)) for path, v in flat.items()}
  layouts = {path: layout(config, path, int(np.prod(shapes[path]))) for path in flat}
  statics = {path: {'rank': jnp.asarray(l['rank']), 'sign': jnp.asarray(l['sign']),
                    'inverse': jnp.asarray(np.argsort(l['rank']).astype(np.int32)),
                    'num_vars': l['num_vars']}
             for path, l in layouts.items()}
  trainable, frozen = init_state(config, flat, layouts)
  batch_stats = dict(variables.get('batch_stats', {}))
  train_x, train_y = data.load_split(config.data, 'train')
  val = data.source(config.data, 'val')  # Progress is watched on val; test is the file's, once.
  images, labels = jnp.asarray(train_x), jnp.asarray(train_y)
  predict = evaluate.make_predict(model, ds)

  def val_error_at_means():
    v = {'params': mean_params(trainable, frozen, statics, shapes)}
    if batch_stats:
      v['batch_stats'] = batch_stats
    return evaluate.error_pct(predict, v, val)

  tx = optax.adam(m.lr)
  opt_state = tx.init(trainable)
  step = make_step(config, model, ds, statics, shapes, tx)
  batch = config.train.batch_size
  steps_per_epoch = len(train_y) // batch
  rng = jax.random.PRNGKey(config.seed + 7)
  batches = (idx for epoch in range(10**9) for idx in data.epoch_permutation(
      config.seed + 2000, epoch, len(train_y))[:steps_per_epoch * batch].reshape(-1, batch))
  log = []

  def train_steps(count, kl_on, scale_on):
    nonlocal trainable, opt_state, frozen, batch_stats, rng
    metrics = None
    for _ in range(count):
      rng, key = jax.random.split(rng)
      trainable, opt_state, frozen, batch_stats, metrics = step(
          trainable, opt_state, frozen, batch_stats, images, labels, jnp.asarray(next(batches)),
          key, jnp.float32(kl_on), jnp.bool_(scale_on))
    return metrics

  start_error = val_error_at_means()  # The hashed float weights, before any training.
  print(f'miracle start: val error at means {start_error:.2f}%', flush=True)
  for epoch in range(m.pretrain_epochs + m.kl_epochs):
    kl_on = epoch >= m.pretrain_epochs
    metrics = train_steps(steps_per_epoch, kl_on, True)
    record = {'epoch': epoch + 1, 'kl': kl_on, 'val_error_pct_at_means': val_error_at_means(),
              **{k: float(v) for k, v in metrics.items()}}
    log.append(record)
    print(f'miracle epoch {epoch + 1}: ce {record["ce"]:.4f} KL {record["kl_bits"]:.0f} bits, '
          f'val error at means {record["val_error_pct_at_means"]:.2f}% '
          f'({time.time() - start:.0f} s)', flush=True)
  trained_error = val_error_at_means()
  kl_bits_before = {p: float(block_kl(trainable, p).sum() / np.log(2.0)) for p in shapes}

  # Encoding: sigma_p fixed from here on, at the float32 value the file stores.
  log_scales = {p: np.float32(trainable['log_scale'][p]) for p in shapes}
  trainable['log_scale'] = {p: jnp.float32(v) for p, v in log_scales.items()}
  scales = {p: random_code.scale_of(v) for p, v in log_scales.items()}
  keys = {p: random_code.leaf_key(config.seed, p) for p in shapes}
  order_rng = np.random.default_rng(config.seed + 11)
  queue = [(p, b) for p in sorted(shapes) for b in range(layouts[p]['num_blocks'])]
  queue = [queue[i] for i in order_rng.permutation(len(queue))]
  indices = {p: np.zeros(layouts[p]['num_blocks'], np.int64) for p in shapes}
  g = m.blocks_per_round
  for r in range(0, len(queue), g):
    for path in sorted({p for p, _ in queue[r:r + g]}):
      blocks = np.array([b for p, b in queue[r:r + g] if p == path])
      rng, key = jax.random.split(rng)
      chosen = random_code.choose(
          keys[path], blocks, trainable['mu'][path][blocks],
          jnp.exp(trainable['log_sigma'][path][blocks]), scales[path], m.bits, key)
      indices[path][blocks] = chosen
      values = random_code.block_values(keys[path], blocks, chosen, m.block_size, scales[path])
      frozen['value'][path] = frozen['value'][path].at[blocks].set(values)
      frozen['fixed'][path] = frozen['fixed'][path].at[blocks].set(True)
    if r + g < len(queue):
      train_steps(m.retrain_steps, True, False)
    if (r // g) % 50 == 0:
      print(f'miracle encoding: {min(r + g, len(queue))}/{len(queue)} blocks '
            f'({time.time() - start:.0f} s)', flush=True)

  rows = []
  for path in sorted(shapes):
    lay = layouts[path]
    payload = random_code.encode_leaf(config.seed, lay['num_vars'], m.block_size, m.bits,
                                      log_scales[path], indices[path])
    rows.append(file_lib.coded_row(path, random_code.NAME, '', shapes[path], payload))
  blocks = sum(l['num_blocks'] for l in layouts.values())
  return common.finish(config, workdir, METHOD, rows, batch_stats, {
      'float_run': config.init_from, 'start_val_error_pct_at_means': start_error,
      'trained_val_error_pct_at_means': trained_error,
      'num_blocks': blocks, 'index_bits': blocks * m.bits,
      'num_variables': sum(l['num_vars'] for l in layouts.values()),
      'kl_bits_before_encoding': kl_bits_before, 'epochs': log}, start)


if __name__ == '__main__':
  common.run_cli(run)
