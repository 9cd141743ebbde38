"""Retunes an EPR file's non-zero latents with its support frozen: what limits a small file?

python experiments/support_tune.py --model FILE.erp --mode float|grid [--epochs 20]
    [--step_div 1] [--lr_scale 1] [--teacher RUN [--distill_weight 0.5 --temperature 4]]
    [--out NEW.erp] [--json OUT.json]

At a given support (which latents are non-zero), a compressed model can lose accuracy to
the support itself or to the precision of its integer grid. This tool separates the two:
- float: the latents train unrounded (no rate term): how well the support does at any
  precision; they are then rounded to nearest, which is what --out writes.
- grid: the latents train rounded with a straight-through estimator (EPR sec. 2.2's
  rounding, without its rate term); --step_div d first refines the grid (the same weights:
  latents x d, steps / d, snapped to the file's step grid).
Zero latents stay zero, non-zero ones are kept off zero, and the decoders are the file's.
The loss is the labels' cross-entropy, mixed with a float teacher's soft targets where
--teacher names one (erp.distill.task_loss); the batch size, latent learning rate and
seed are the file's stored config's, else the defaults (128, 0.05, 0: an erp run's file
stores none unless export.run_config). The model runs in inference mode (batch-norm
statistics held). It prints the val error after each epoch and the test error once, at
the end; nothing here is chosen on the test set.
"""
import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import erp  # noqa: E402
from erp import codecs, data, distill, evaluate, reparam  # noqa: E402
from erp import file as file_lib  # noqa: E402
from erp.codecs import epr  # noqa: E402
from erp.errors import ErpError  # noqa: E402

MODES = ('float', 'grid')
KEEP_OFF_ZERO = 0.501  # |latent| floor of the support: rounds away from zero.


def read_groups(path, step_div=1):
  """(leaves, [(integer latents, decoder)], metadata) of a file's EPR leaves; step_div > 1
  refines each grid: latents x step_div and steps / step_div, snapped to the file's grid."""
  with open(path, 'rb') as f:
    found, payloads, metadata = file_lib.parse(f.read())
  other = [leaf.name for leaf in found if leaf.codec != epr.NAME]
  if other:  # --out rewrites EPR leaves only: a file with others would lose them.
    raise ErpError(f'{path}: retunes files whose every leaf is EPR-coded; not {other[:3]}')
  groups = [(values, decoder) for values, decoder, _ in epr.read_groups(payloads, found)]
  if step_div > 1:
    groups = [(values * step_div, reparam.file_decoder(
        {**decoder, 'log_step': np.asarray(decoder['log_step'], np.float64) - np.log(step_div)})[0])
              for values, decoder in groups]
  return found, groups, metadata


def encode(leaves, groups, metadata):
  """The bytes of a file holding these EPR leaves' integer latents and decoders."""
  ints = [(np.asarray(values, np.int64), decoder) for values, decoder in groups]
  rows = [(codecs.Leaf(leaf.collection, leaf.path, leaf.codec, leaf.variant, leaf.shape), payload)
          for leaf, (payload, _) in zip(leaves, file_lib.write_groups(leaves, ints))]
  return file_lib.to_bytes(rows, metadata)


def tune(path, *, mode, epochs, step_div=1, lr_scale=1.0, teacher='', distill_weight=0.5,
         temperature=4.0, num_steps=0, log=print):
  """(record dict, retuned bytes). num_steps > 0 stops after that many steps (tests)."""
  if mode not in MODES:
    raise ErpError(f'mode must be one of {MODES}, got {mode!r}')
  model, variables, config = erp.load(path)
  config.train.distill_from = teacher  # Named here, never taken from the file's config:
  config.train.distill_weight = distill_weight if teacher else 0.0  # labels alone without.
  config.train.distill_temperature = temperature
  leaves, groups, metadata = read_groups(path, step_div)
  ds = data.info(config.data.name)
  train, val, test = (data.source(config.data, split) for split in ('train', 'val', 'test'))
  teacher_fn = distill.teacher(config, model, ds)
  weight, temperature = float(config.train.distill_weight), float(config.train.distill_temperature)
  decoders = [jax.tree.map(jnp.asarray, decoder) for _, decoder in groups]
  support = [jnp.asarray(values != 0) for values, _ in groups]
  base = {k: jnp.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep='/').items()}

  def variables_of(latents, rounded):
    flat = dict(base)
    for leaf, latent, decoder in zip(leaves, latents, decoders):
      if rounded:
        latent = latent + jax.lax.stop_gradient(jnp.round(latent) - latent)
      flat[f'{leaf.collection}/{leaf.path}'] = reparam.decode_group(leaf.variant, latent, decoder)
    return traverse_util.unflatten_dict(flat, sep='/')

  batch_size = int(config.train.batch_size)
  steps_per_epoch = len(train) // batch_size
  total = num_steps or epochs * steps_per_epoch
  tx = optax.adam(optax.cosine_decay_schedule(float(config.rd.latent_lr) * lr_scale,
                                              max(total, 1)))
  rounded = mode == 'grid'

  @jax.jit
  def step(latents, opt_state, images, labels):
    x = data.preprocess(images, ds)
    targets = teacher_fn(x) if teacher_fn else None

    def loss(lat):
      logits = model.apply(variables_of(lat, rounded), x, train=False)
      return distill.task_loss(logits, labels, targets, weight, temperature)[0]

    grads = jax.grad(loss)(latents)
    updates, opt_state = tx.update(grads, opt_state, latents)
    new = optax.apply_updates(latents, updates)
    new = [jnp.where(keep, jnp.where(jnp.abs(a) < KEEP_OFF_ZERO,
                                     jnp.where(old < 0, -KEEP_OFF_ZERO, KEEP_OFF_ZERO), a), 0.0)
           for a, old, keep in zip(new, latents, support)]
    return new, opt_state

  predict = evaluate.make_predict(model, ds)
  error = lambda latents, split, r=rounded: evaluate.error_pct(
      predict, variables_of(latents, r), split)
  latents = [jnp.asarray(values, jnp.float32) for values, _ in groups]
  opt_state, done = tx.init(latents), 0
  record = {'model': path, 'mode': mode, 'step_div': step_div, 'lr_scale': lr_scale,
            'teacher': teacher, 'distill_weight': float(config.train.distill_weight),
            'start_val_error_pct': error(latents, val), 'val_error_pct': []}
  for epoch in range(epochs):
    start = time.time()
    order = data.epoch_permutation(config.seed, 1000 + epoch, len(train))
    for i in range(steps_per_epoch):
      if done == total:
        break
      images, labels = train.batch(order[i * batch_size:(i + 1) * batch_size])
      latents, opt_state = step(latents, opt_state, jnp.asarray(images), jnp.asarray(labels))
      done += 1
    record['val_error_pct'].append(error(latents, val))
    if log:
      log(f'epoch {epoch + 1}: val {record["val_error_pct"][-1]:.2f} % '
          f'({time.time() - start:.0f} s)')
  if mode == 'float':
    record['unrounded_test_error_pct'] = error(latents, test)
  ints = [np.asarray(jnp.round(latent)).astype(np.int64) for latent in latents]
  floats = [jnp.asarray(v, jnp.float32) for v in ints]
  record['rounded_val_error_pct'] = error(floats, val, True)
  record['rounded_test_error_pct'] = error(floats, test, True)
  blob = encode(leaves, [(v, d) for v, (_, d) in zip(ints, groups)], metadata)
  record['num_bytes'] = len(blob)
  return record, blob


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', required=True)
  parser.add_argument('--mode', required=True, choices=MODES)
  parser.add_argument('--epochs', type=int, default=20)
  parser.add_argument('--step_div', type=int, default=1)
  parser.add_argument('--lr_scale', type=float, default=1.0)
  parser.add_argument('--teacher', default='', help='float run(s) to distill from')
  parser.add_argument('--distill_weight', type=float, default=0.5)
  parser.add_argument('--temperature', type=float, default=4.0)
  parser.add_argument('--out', default='')
  parser.add_argument('--json', default='')
  args = parser.parse_args()
  numbers = (args.lr_scale, args.distill_weight, args.temperature)
  if args.step_div < 1 or args.epochs < 0 or not all(np.isfinite(numbers)) or \
      args.lr_scale <= 0 or not 0 <= args.distill_weight <= 1 or args.temperature <= 0:
    raise SystemExit('erp: error: needs --step_div >= 1, --epochs >= 0, --lr_scale > 0, '
                     '--distill_weight in [0, 1] and --temperature > 0, all finite')
  try:
    record, blob = tune(args.model, mode=args.mode, epochs=args.epochs,
                        step_div=args.step_div, lr_scale=args.lr_scale, teacher=args.teacher,
                        distill_weight=args.distill_weight, temperature=args.temperature)
  except ErpError as e:
    raise SystemExit(f'erp: error: {e}') from None
  if args.out:
    file_lib.write_atomic(args.out, blob)
  text = json.dumps(record, indent=1)
  if args.json:
    with open(args.json, 'w') as f:
      f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  main()
