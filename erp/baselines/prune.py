"""Magnitude pruning + retraining + trained scalar quantization + entropy coding.

python -m erp.baselines.prune --config configs/mnist_lenet300.py --workdir DIR \
    --config.init_from=FLOAT_RUN --config.prune.sparsity=0.9

In the spirit of Deep Compression (Han, Mao, Dally, ICLR 2016), on erp's coder:
1. Prune (sec. 2): the fraction prune.sparsity of kernel weights (rank >= 2)
   with the smallest magnitude is set to zero, per kernel (prune.scope='layer')
   or under one threshold over all kernels ('global'); biases are kept. The
   paper tunes each layer's rate by its sensitivity (LeNet5: 66 % of conv1
   kept, 8 % of fc1); one global threshold gets a similar split without the
   per-model tuning, while per-kernel pruning at 98 % leaves conv1 10 weights.
2. Retrain (sec. 2) the surviving weights for prune.retrain_epochs with Adam
   (lr prune.lr, cosine decay), the pruned ones held at zero by a fixed mask.
3. Quantize (sec. 3): each tensor on a uniform grid, step = prune.rel_step *
   std of its surviving weights, then fine-tune prune.quant_epochs through the
   rounding (straight-through), the analogue of the paper's centroid
   fine-tuning. Choices where we depart: a uniform scalar grid instead of
   k-means centroids, because with an entropy coder after it a uniform grid is
   within ~0.25 bit/weight of the rate-distortion optimum at high rate, and it
   decodes with erp's affine decoder; one pruning round, not iterative.
4. Code (sec. 4): instead of Huffman codes of values and relative sparse
   indices, the whole integer tensor (zeros included) is range-coded with its
   own histogram, which prices the positions at the entropy of the mask.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from erp import data
from erp import pipeline
from erp import reparam
from erp import runs
from erp import state as state_lib
from erp import train_step
from erp.baselines import common

METHOD = 'prune'


def magnitude_masks(params, sparsity, scope='layer'):
  """{path: 0/1 float mask}: kernels lose their `sparsity` smallest-|w| fraction.

  scope 'layer': that fraction of each kernel; 'global': of all kernels
  together, under one magnitude threshold.
  """
  if scope not in ('layer', 'global'):
    raise ValueError(f"prune.scope must be 'layer' or 'global'; got {scope!r}")
  kernels = {p: np.abs(np.asarray(v)) for p, v in params.items() if np.ndim(v) >= 2}

  def threshold(magnitudes):
    k = int(round(sparsity * magnitudes.size))
    return np.sort(magnitudes.ravel())[k - 1] if k else -1.0

  if scope == 'global' and kernels:
    shared = threshold(np.concatenate([m.ravel() for m in kernels.values()]))
  masks = {}
  for path, value in params.items():
    if path not in kernels or sparsity <= 0:
      masks[path] = np.ones_like(np.asarray(value))
      continue
    t = shared if scope == 'global' else threshold(kernels[path])
    masks[path] = (kernels[path] > t).astype(np.float32)
  return masks


def quantization_steps(params, masks, rel_step):
  """{path: step} from the std of each tensor's surviving weights (float32-exact)."""
  return {path: common.grid_step(np.asarray(value)[np.asarray(masks[path]) > 0], rel_step)
          for path, value in params.items()}


def masked(masks, steps=None):
  """params -> params with the masks applied (and rounded onto the steps' grids, STE)."""
  def transform(params):
    flat = traverse_util.flatten_dict(params, sep='/')
    out = {}
    for path, value in flat.items():
      if steps is not None:
        value = reparam.round_ste(value / steps[path]) * steps[path]
      out[path] = value * masks[path]
    return traverse_util.unflatten_dict(out, sep='/')
  return transform


def finetune(config, model, ds, variables, transform, epochs, lr, train_x, train_y):
  """Adam (cosine decay from lr) on the float params seen through transform; returns them
  transformed (pruned weights exactly zero)."""
  if epochs <= 0:
    return variables
  variables = jax.tree.map(jnp.array, variables)  # A copy: the train step donates its state.
  c = config.copy_and_resolve_references()
  c.rd.enabled, c.optim.name, c.optim.lr, c.optim.schedule = False, 'adam', lr, 'cosine'
  trainable = runs.reparameterize(c, variables['params'])
  num_train, batch = len(train_y), c.train.batch_size
  steps_per_epoch = num_train // batch
  tx = train_step.make_optimizer(c, steps_per_epoch * epochs, steps_per_epoch)
  state = train_step.initial_state(c, trainable, dict(variables.get('batch_stats', {})), tx,
                                   jax.random.PRNGKey(c.seed + 3))
  step = train_step.make_train_step(c, model, ds, tx, num_train, transform)
  batches = pipeline.train_batches(data.ArraySource(train_x, train_y), batch_size=batch,
                                   seed=c.seed + 1000, start_step=0,
                                   num_steps=steps_per_epoch * epochs)
  for epoch in range(epochs):
    for _ in range(steps_per_epoch):
      state, metrics = step(state, *next(batches))
    print(f'fine-tune epoch {epoch + 1}/{epochs}: ce {float(metrics["ce"]):.4f} '
          f'train_acc {float(metrics["accuracy"]):.4f}', flush=True)
  out = {'params': transform(state_lib.decode(state.trainable))}
  if state.batch_stats:
    out['batch_stats'] = state.batch_stats
  return out


def run(config, workdir):
  start = time.time()
  p = config.prune
  if not 0 <= p.sparsity < 1 or p.rel_step <= 0:
    raise ValueError(f'need 0 <= prune.sparsity < 1 and prune.rel_step > 0; got '
                     f'{p.sparsity}, {p.rel_step}')
  model, ds, variables = common.float_start(config)
  train_x, train_y = data.load_split(config.data, 'train')
  masks = magnitude_masks(common.flat_params(variables), p.sparsity, p.scope)
  variables = finetune(config, model, ds, variables, masked(masks), p.retrain_epochs, p.lr,
                       train_x, train_y)
  flat = common.flat_params(variables)
  steps = quantization_steps(flat, masks, p.rel_step)
  variables = finetune(config, model, ds, variables, masked(masks, steps), p.quant_epochs,
                       p.lr, train_x, train_y)
  rows, zeros, size = [], 0, 0
  for path, value in common.flat_params(variables).items():
    q = np.round(np.asarray(value) / steps[path]).astype(np.int64) * masks[path].astype(np.int64)
    rows.append(common.affine_row(path, q, steps[path]))
    zeros, size = zeros + int((q == 0).sum()), size + q.size
  return common.finish(config, workdir, METHOD, rows, variables.get('batch_stats', {}),
                       {'float_run': config.init_from, 'zero_fraction': zeros / size}, start)


if __name__ == '__main__':
  common.run_cli(run)
