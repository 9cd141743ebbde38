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
"""
import time

import numpy as np
from flax import traverse_util

from erp import data
from erp import evaluate
from erp import file as file_lib
from erp.codecs import surp as refinement
from erp.baselines import common
from erp.baselines import prune

METHOD = 'surp'


def beta_of(config, size):
  return config.surp.beta_scale * np.log(size)


def reconstruct(params, config, density):
  """{path: value} with every kernel replaced by its SuRP reconstruction at density."""
  out = {}
  for path, value in params.items():
    value = np.asarray(value, np.float32)
    if value.ndim >= 2:
      payload, _ = refinement.encode_tensor(value, 1 - density, beta_of(config, value.size))
      value = refinement.decode_tensor(payload, value.shape)
    out[path] = value
  return out


def with_params(variables, flat):
  """variables with params replaced by a flat {path: value} dict."""
  return dict(variables, params=traverse_util.unflatten_dict(flat, sep='/'))


def run(config, workdir):
  start = time.time()
  s = config.surp
  if not 0 <= s.sparsity < 1 or s.beta_scale <= 0 or s.rounds < 1 or s.refine < 0:
    raise ValueError('need 0 <= surp.sparsity < 1, surp.beta_scale > 0, surp.rounds >= 1, '
                     f'surp.refine >= 0; got {s.sparsity}, {s.beta_scale}, {s.rounds}, '
                     f'{s.refine}')
  model, ds, variables = common.float_start(config)
  train_x, train_y = data.load_split(config.data, 'train')
  for r in range(1, s.rounds + 1):
    print(f'surp round {r}/{s.rounds}: density {(1 - s.sparsity)**(r / s.rounds):.4f}',
          flush=True)
    flat = reconstruct(common.flat_params(variables), config, (1 - s.sparsity)**(r / s.rounds))
    masks = {path: (value != 0).astype(np.float32) if value.ndim >= 2 else np.ones_like(value)
             for path, value in flat.items()}
    variables = prune.finetune(config, model, ds, with_params(variables, flat),
                               prune.masked(masks), s.retrain_epochs, s.lr, train_x, train_y)
  retrained_error = evaluate.error_pct(evaluate.make_predict(model, ds), variables,
                                       data.source(config.data, 'test'))
  rows, coded = [], {}
  for path, value in common.flat_params(variables).items():
    value = np.asarray(value, np.float32)
    if value.ndim >= 2:
      payload, coded[path] = refinement.encode_tensor(value, s.sparsity,
                                                      beta_of(config, value.size), s.refine)
      rows.append(file_lib.coded_row(path, refinement.NAME, '', value.shape, payload))
    else:
      step = common.grid_step(value, s.bias_rel_step)
      rows.append(common.affine_row(path, np.round(value / step).astype(np.int64), step))
  nonzero = sum(c['nonzero'] for c in coded.values())
  size = sum(np.size(v) for p, v in common.flat_params(variables).items() if p in coded)
  return common.finish(config, workdir, METHOD, rows, variables.get('batch_stats', {}),
                       {'float_run': config.init_from, 'retrained_error_pct': retrained_error,
                        'kernel_zero_fraction': 1 - nonzero / size,
                        'groups': coded}, start)


if __name__ == '__main__':
  common.run_cli(run)
