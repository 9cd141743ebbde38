"""Exporter: a trained EPR state -> one range-coded .erp file.

python -m erp.export --workdir DIR [--out FILE] [--table prior]   (also run by erp.train)

Each group's latents are rounded and range-coded with an integer table that
is stored in the file. config.export.table picks its probabilities:
'empirical' (default): the rounded latents' own histogram, which codes them in
the fewest bytes, table included; 'prior': the learned prior's mass at each
integer, as the paper codes them. Both choose the table precision (8..20 bits)
that gives the smallest group.
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


def prior_table(prior_params, values):
  """(lo, counts) of one group from its learned prior (the paper's coding model).

  The prior's mass at the integers of the values' range, clipped to the prior's
  central support (2**-22 tails), plus an escape symbol for the rest.
  """
  tail = 2.0**-22
  q_lo = np.floor(priors.quantile(prior_params, tail))
  q_hi = np.ceil(priors.quantile(prior_params, 1 - tail))
  lo = int(max(values.min(), q_lo)) if values.size else 0
  hi = int(min(values.max(), q_hi)) if values.size else 0
  if hi < lo:  # Every value lies in the prior's tail: a table of one symbol.
    lo = hi = int(np.round(np.median(values)))
  pmf = _pmf_on(prior_params, lo, hi)
  escape = max(1.0 - pmf.sum(), 0.0)
  return lo, coding.best_precision(np.append(pmf, escape), values, lo)


TABLES = ('empirical', 'prior')


def group_payload(values, decoder, lo, counts):
  """Payload bytes of one compressed group: decoder params, table, escapes, stream."""
  w = container.Writer()
  w.f32(np.ravel(decoder['log_step']))
  if 'shift' in decoder:
    w.f32([decoder['shift']])
  stream, escaped = coding.write_coded(w, values, lo, counts)
  payload = w.getvalue()
  stats = {
      'coded_bits': 8 * len(stream),
      'ideal_bits': coding.ideal_bits(values, lo, counts),
      'payload_bytes': len(payload),
      'table_size': len(counts),
      'table_precision': int(np.sum(counts)).bit_length() - 1,
      'escapes': len(escaped),
      'zero_fraction': float((values == 0).mean()) if values.size else 0.0,
  }
  return payload, stats


def coded_group(latent, decoder, prior_params, table):
  """(payload, stats) of one EPR group with the config's table source."""
  values = np.asarray(jnp.round(latent), np.int64).ravel()
  if table == 'empirical':
    lo, counts = coding.empirical_table(values)
  elif table == 'prior':
    lo, counts = prior_table(prior_params, values)
  else:
    raise ErpError(f'unknown export.table {table!r}; known: {TABLES}')
  return group_payload(values, decoder, lo, counts)


def build_file(config, kinds, trainable, batch_stats, est_group_bits=None):
  """(file bytes, per-group stats) of a trained EPR state."""
  dtype = container.FLOAT_DTYPES[config.export.float_dtype]
  rows, stats = [], {}
  for path in sorted(kinds):
    kind = kinds[path]
    if kind == 'float':
      value = np.asarray(trainable['floats'][path])
      rows.append((path, kind, value.shape, float_section(value, dtype)))
      continue
    value = trainable['latents'][path]
    payload, stats[path] = coded_group(value, trainable['decoders'][path],
                                       trainable['priors'][path], config.export.table)
    if est_group_bits is not None:
      stats[path]['est_bits'] = est_group_bits[path]
    rows.append((path, kind, value.shape, (container.GROUP, payload)))
  return assemble('epr', config, rows, batch_stats), stats


def float_section(value, dtype):
  """A FLOAT section: the leaf's raw little-endian values at the file's float dtype."""
  return container.FLOAT, np.asarray(value).astype(dtype).tobytes()


def assemble(method, config, param_rows, batch_stats):
  """File bytes from [(path, kind, shape, section)] of the params, sorted by path.

  Any method writes its file through here, so every .erp file has the same
  header and loads with the same loader; `method` names what produced it.
  """
  dtype = container.FLOAT_DTYPES[config.export.float_dtype]
  leaves = [['params', kind, path, list(shape)] for path, kind, shape, _ in param_rows]
  sections = [section for *_, section in param_rows]
  for path, value in sorted(traverse_util.flatten_dict(batch_stats, sep='/').items()):
    sections.append(float_section(value, dtype))
    leaves.append(['batch_stats', 'float', path, list(np.shape(value))])
  header = {
      'method': method,
      'model': config.model.name,
      'width': config.model.width,
      'dataset': config.data.name,
      'float_dtype': config.export.float_dtype,
      'erp_version': erp.__version__,
      'config': config_lib.diff_from_base(config),  # Compact: only non-default fields.
      'leaves': leaves,  # [collection, decoder kind, path, shape], in section order.
  }
  return container.write(header, sections)


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


def reexport(workdir, out=None, table=None):
  """Rebuilds a workdir's model.erp from its checkpoint, evaluates the file, updates result.json.

  table overrides config.export.table (e.g. 'prior' to code with the learned densities).
  """
  from erp import evaluate
  config, kinds, trainable, batch_stats = _load_workdir(workdir)
  if table:
    config.export.table = table
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
  record = reexport(flags.FLAGS.workdir, flags.FLAGS.out, flags.FLAGS.table)
  print(json.dumps(record))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoint).')
  flags.DEFINE_string('out', None, 'Output file; default WORKDIR/model.erp.')
  flags.DEFINE_enum('table', None, TABLES, 'Override config.export.table.')
  flags.mark_flag_as_required('workdir')
  from erp import train
  train.run_cli(main)
