"""SuRP: successive-refinement pruning with retraining, entropy-coded (Isik, No, Weissman).

python -m erp.baselines.surp --config configs/mnist_lenet300.py --workdir DIR \
    --config.init_from=FLOAT_RUN --config.surp.sparsity=0.95

"An Information-Theoretic Justification for Model Pruning" (AISTATS 2022,
arXiv 2102.08329): rate-distortion theory says a good code of Laplacian-like
weights is a pruned one, and its successive-refinement algorithm (the code is
erp.codecs.surp) gives both the pruned model and its bit string. Pruning is
interleaved with retraining (our reading of the paper's experiments; the
schedule is ours):
1. For r = 1..surp.rounds, each kernel (rank >= 2) is replaced by its SuRP
   reconstruction at density (1 - sparsity)**(r / rounds); the network is
   retrained surp.retrain_epochs with Adam (cosine decay from surp.lr), the
   weights SuRP left at zero held there by a fixed mask.
2. The retrained kernels are coded by SuRP: iterations until every surviving
   weight is sent, then surp.refine times as many again to refine their values
   (the knob trading bits for precision, since the final values are not
   retrained; zeros of the retrained kernels cannot be sent, so these extra
   iterations only refine). Biases go on a uniform grid (surp.bias_rel_step *
   std) coded with their histogram, as in the other baselines.
Our choices where the paper is silent: the geometric density schedule, the
rounds and epochs, beta = surp.beta_scale * ln(n) per tensor (scale 1 gave
the smallest file and error of 1, 3, 10, 100 on LeNet-300-100/MNIST at
sparsity 0.95, refine 0), and those of erp.codecs.surp.

surp.scope='global' is SuRP as its authors' code runs it (erp.codecs.surp_global):
every parameter tensor, biases too, L2-normalized into one vector under one
threshold (surp.alpha), so the sparsity of all weights together is
surp.sparsity and the threshold spreads it over the layers. surp.rounds=0
takes the authors' stages (AUTHORS_STAGES, their recon.yaml), each a SuRP
reconstruction then masked retraining (biases stay free, as theirs), the
last at surp.sparsity; the retrained model is then coded, as above.
"""
import time

import numpy as np
from flax import traverse_util

from erp import data
from erp import evaluate
from erp import file as file_lib
from erp.codecs import surp as refinement
from erp.codecs import surp_global
from erp.baselines import common
from erp.baselines import prune

METHOD = 'surp'
# The authors' sparsity stages (github.com/BerivanIsik/SuRP, src/configs/*/recon.yaml).
AUTHORS_STAGES = tuple(1 - 0.8**k for k in range(1, 11)) + (
    0.92, 0.94, 0.96, 0.97, 0.98, 0.99, 0.992, 0.994, 0.996, 0.997, 0.998, 0.999)


def beta_of(config, size):
  return config.surp.beta_scale * np.log(size)


def stages(s):
  """The sparsities of the prune-and-retrain rounds, the last one s.sparsity."""
  if s.rounds:
    return [1 - (1 - s.sparsity)**(r / s.rounds) for r in range(1, s.rounds + 1)]
  return [v for v in AUTHORS_STAGES if v < s.sparsity] + [s.sparsity]


def code(params, config, sparsity, refine=0.0):
  """([(path, codec name, payload)], stats) of params coded to sparsity: every kernel on its
  own (scope 'layer'; other leaves None), or every leaf together ('global')."""
  s = config.surp
  if s.scope == 'global':
    paths = sorted(params)
    payloads, stats = surp_global.encode([params[p] for p in paths], sparsity, s.alpha, refine)
    return [(p, surp_global.NAME, b) for p, b in zip(paths, payloads)], stats
  rows, stats = [], {}
  for path, value in params.items():
    value = np.asarray(value, np.float32)
    if value.ndim >= 2:
      payload, stats[path] = refinement.encode_tensor(value, sparsity,
                                                      beta_of(config, value.size), refine)
      rows.append((path, refinement.NAME, payload))
  return rows, stats


def decode(rows, params):
  """{path: value}: params with the coded rows' values in place."""
  out = dict(params)
  joint = [(p, b) for p, name, b in rows if name == surp_global.NAME]
  if joint:
    out.update(zip([p for p, _ in joint], surp_global.decode(
        [b for _, b in joint], [np.shape(params[p]) for p, _ in joint])))
  for path, name, payload in rows:
    if name == refinement.NAME:
      out[path] = refinement.decode_tensor(payload, np.shape(params[path]))
  return {p: np.asarray(v, np.float32) for p, v in out.items()}


def with_params(variables, flat):
  """variables with params replaced by a flat {path: value} dict."""
  return dict(variables, params=traverse_util.unflatten_dict(flat, sep='/'))


def run(config, workdir):
  start = time.time()
  s = config.surp
  if (not 0 <= s.sparsity < 1 or s.beta_scale <= 0 or s.rounds < 0 or s.refine < 0
      or not s.alpha > 0 or s.scope not in ('layer', 'global')):
    raise ValueError('need 0 <= surp.sparsity < 1, surp.beta_scale > 0, surp.alpha > 0, '
                     "surp.rounds >= 0, surp.refine >= 0, surp.scope 'layer' or 'global'; got "
                     f'{s.sparsity}, {s.beta_scale}, {s.alpha}, {s.rounds}, {s.refine}, '
                     f'{s.scope!r}')
  model, ds, variables = common.float_start(config)
  train_x, train_y = data.load_split(config.data, 'train')
  schedule = stages(s)
  for r, sparsity in enumerate(schedule, 1):
    print(f'surp round {r}/{len(schedule)}: sparsity {sparsity:.4f}', flush=True)
    params = common.flat_params(variables)
    flat = decode(code(params, config, sparsity)[0], params)
    masks = {path: (value != 0).astype(np.float32) if value.ndim >= 2 else np.ones_like(value)
             for path, value in flat.items()}
    variables = prune.finetune(config, model, ds, with_params(variables, flat),
                               prune.masked(masks), s.retrain_epochs, s.lr, train_x, train_y)
  val = data.source(config.data, 'val')
  retrained_error = evaluate.error_pct(evaluate.make_predict(model, ds), variables, val)
  params = {p: np.asarray(v, np.float32) for p, v in common.flat_params(variables).items()}
  coded_rows, stats = code(params, config, s.sparsity, s.refine)
  rows = [file_lib.coded_row(path, name, '', params[path].shape, payload)
          for path, name, payload in coded_rows]
  coded = {path for path, _, _ in coded_rows}
  for path, value in params.items():
    if path not in coded:
      step = common.grid_step(value, s.bias_rel_step)
      rows.append(common.affine_row(path, np.round(value / step).astype(np.int64), step))
  decoded = decode(coded_rows, params)
  kernels = [p for p, v in params.items() if v.ndim >= 2]
  zeros = sum(int(np.sum(decoded[p] == 0)) for p in kernels)
  return common.finish(config, workdir, METHOD, rows, variables.get('batch_stats', {}),
                       {'float_run': config.init_from, 'retrained_val_error_pct': retrained_error,
                        'kernel_zero_fraction': zeros / sum(params[p].size for p in kernels),
                        'zero_fraction': sum(int(np.sum(v == 0)) for v in decoded.values())
                        / sum(v.size for v in params.values()),
                        'groups': stats}, start)


if __name__ == '__main__':
  common.run_cli(run)
