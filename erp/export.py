"""Exporter: a trained EPR state -> one range-coded .erp file.

python -m erp.export --workdir DIR [--out FILE]   (also run at the end of erp.train)

Each group's latents are rounded and range-coded with an integer table built
once from its learned prior: the prior's mass at each integer in the range the
latents use (clipped to the prior's central support), plus an escape symbol.
"""
import json
import os
import time

from absl import flags
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

import erp
from erp import coding
from erp import config as config_lib
from erp import container
from erp import priors
from erp.errors import ErpError

FILE_NAME = 'model.erp'



_probability_mass = jax.jit(priors.probability_mass)


def _pmf_on(prior_params, lo, hi):
  """Prior mass at lo..hi, evaluated on a power-of-two padded grid (few compilations)."""
  n = hi - lo + 1
  padded = lo + np.arange(1 << max(n - 1, 1).bit_length(), dtype=np.float32)
  return np.asarray(_probability_mass(prior_params, jnp.asarray(padded)), np.float64)[:n]


def table_for(prior_params, values, precision):
  """(lo, counts) of one group: prior mass on [lo, hi] from the data's range, + escape."""
  tail = 2.0**-(precision + 2)  # Mass below one table count's resolution.
  q_lo = np.floor(priors.quantile(prior_params, tail))
  q_hi = np.ceil(priors.quantile(prior_params, 1 - tail))
  lo = int(max(values.min(), q_lo)) if values.size else 0
  hi = int(min(values.max(), q_hi)) if values.size else 0
  if hi < lo:  # Every value lies in the prior's tail: a table of one symbol.
    lo = hi = int(np.round(np.median(values)))
  pmf = _pmf_on(prior_params, lo, hi)
  escape = max(1.0 - pmf.sum(), 0.0)
  return lo, coding.quantize_pmf(np.append(pmf, escape), precision)


def group_payload(kind, latent, decoder, prior_params, precision):
  """(payload bytes, stats) of one compressed group."""
  values = np.asarray(jnp.round(latent), np.int64).ravel()
  lo, counts = table_for(prior_params, values, precision)
  stream, escaped = coding.encode(values, lo, counts)
  w = container.Writer()
  w.f32(np.ravel(decoder['log_step']))
  if 'shift' in decoder:
    w.f32([decoder['shift']])
  w.sint(lo).varint(len(counts))
  for c in counts:
    w.varint(c)
  w.varint(len(escaped))
  for v in escaped:
    w.sint(v)
  w.blob(stream)
  payload = w.getvalue()
  stats = {
      'coded_bits': 8 * len(stream),
      'ideal_bits': coding.ideal_bits(values, lo, counts),
      'payload_bytes': len(payload),
      'table_size': len(counts),
      'escapes': len(escaped),
      'zero_fraction': float((values == 0).mean()) if values.size else 0.0,
  }
  return payload, stats


def build_file(config, kinds, trainable, batch_stats, est_group_bits=None):
  """(file bytes, per-group stats) of a trained state."""
  precision = config.export.table_precision
  dtype = container.FLOAT_DTYPES[config.export.float_dtype]
  leaves, sections, stats, est_bits = [], [], {}, []
  for path in sorted(kinds):
    kind = kinds[path]
    est = None
    if kind == 'float':
      value = np.asarray(trainable['floats'][path])
      sections.append((container.FLOAT, value.astype(dtype).tobytes()))
    else:
      value = trainable['latents'][path]
      payload, stats[path] = group_payload(kind, value, trainable['decoders'][path],
                                           trainable['priors'][path], precision)
      if est_group_bits is not None:
        est = stats[path]['est_bits'] = est_group_bits[path]
      sections.append((container.GROUP, payload))
    leaves.append(['params', kind, path, list(value.shape)])
    est_bits.append(None if est is None else round(est))
  for path, value in sorted(traverse_util.flatten_dict(batch_stats, sep='/').items()):
    value = np.asarray(value)
    sections.append((container.FLOAT, value.astype(dtype).tobytes()))
    leaves.append(['batch_stats', 'float', path, list(value.shape)])
    est_bits.append(None)
  header = {
      'method': 'epr',
      'model': config.model.name,
      'width': config.model.width,
      'dataset': config.data.name,
      'float_dtype': config.export.float_dtype,
      'erp_version': erp.__version__,
      'config': config_lib.diff_from_base(config),  # Compact: only non-default fields.
      'leaves': leaves,  # [collection, decoder kind, path, shape], in section order.
      'est_bits': est_bits,  # Training-time estimate per leaf (None: not coded).
  }
  return container.write(header, sections), stats


def write_file(path, config, kinds, trainable, batch_stats):
  """Writes the .erp file of a state; returns (estimated bits per group, per-group stats)."""
  from erp import train  # Deferred: train imports this module at the end of training.
  est = train.rate_summary(kinds, trainable, config.export.float_dtype)['group_bits']
  blob, stats = build_file(config, kinds, trainable, batch_stats, est)
  with open(path, 'wb') as f:
    f.write(blob)
  return est, stats


def export_and_check(config, workdir, model, ds, kinds, state, test_x, test_y, predict):
  """Writes DIR/model.erp, reloads it, checks params are bit-exact, evaluates from the file."""
  from erp import evaluate, loader, train  # Deferred: they import this module's users.
  path = os.path.join(workdir, FILE_NAME)
  est, stats = write_file(path, config, kinds, state.trainable, state.batch_stats)
  t0 = time.time()
  _, variables, _ = loader.load(path)
  decode_s = time.time() - t0
  expected = train.eval_variables(kinds, state)
  exact = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
      jax.tree.leaves(expected), jax.tree.leaves(variables)))
  if not exact:
    raise AssertionError('decoded params differ from the in-memory rounded params')
  error = evaluate.test_error(predict, variables, test_x, test_y)
  num_bytes = os.path.getsize(path)
  est_bits = sum(est.values())
  print(f'exported {path}: {num_bytes} bytes ({num_bytes / 1000:.2f} KB), '
        f'test error from file {error:.2f}%', flush=True)
  return {
      'path': path,
      'num_bytes': num_bytes,
      'error_pct': error,
      'bit_exact': exact,
      'decode_s': decode_s,
      'est_latent_bits': est_bits,
      'coded_latent_bits': sum(s['coded_bits'] for s in stats.values()),
      'groups': stats,
  }


def reexport(workdir, out=None):
  """Rebuilds a workdir's model.erp from its checkpoint, evaluates the file, updates result.json."""
  from erp import evaluate
  config, kinds, trainable, batch_stats = _load_workdir(workdir)
  out = out or os.path.join(workdir, FILE_NAME)
  _, stats = write_file(out, config, kinds, trainable, batch_stats)
  record = evaluate.evaluate_file(out)
  result_path = os.path.join(workdir, 'result.json')
  if out == os.path.join(workdir, FILE_NAME) and os.path.exists(result_path):
    with open(result_path) as f:
      result = json.load(f)
    result['export'].update(num_bytes=record['num_bytes'], error_pct=record['error_pct'],
                            decode_s=record['decode_seconds'], groups=stats,
                            coded_latent_bits=sum(s['coded_bits'] for s in stats.values()))
    with open(result_path, 'w') as f:
      json.dump(result, f, indent=1, sort_keys=True, default=list)
  return record


def _load_workdir(workdir):
  """(config, model, ds, kinds, state-like) rebuilt from a training workdir."""
  from erp import train
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise ErpError(f'{workdir} is not a training workdir (no config.json)')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model, ds, kinds, trainable, batch_stats = train.setup(config)
  ckpt = os.path.join(workdir, train.CHECKPOINT)
  if not os.path.exists(ckpt):
    raise ErpError(f'no checkpoint in {workdir}')
  with open(ckpt, 'rb') as f:
    raw = flax.serialization.msgpack_restore(f.read())
  trainable = flax.serialization.from_state_dict(trainable, raw['trainable'])
  batch_stats = flax.serialization.from_state_dict(batch_stats, raw.get('batch_stats', {}))
  return config, kinds, trainable, batch_stats


def main(argv):
  del argv
  record = reexport(flags.FLAGS.workdir, flags.FLAGS.out)
  print(json.dumps(record))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoint).')
  flags.DEFINE_string('out', None, 'Output file; default WORKDIR/model.erp.')
  flags.mark_flag_as_required('workdir')
  from erp import train
  train.run_cli(main)
