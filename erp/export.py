"""Export of an erp run: its EprState -> one .erp file, checked by decoding it (harness).

python -m erp.export --workdir DIR [--out FILE] [--table prior]   (also run by erp.train)

The file is written by the library (erp.file.save); the harness adds the
metadata that lets erp.load rebuild its model and config (model name, width,
dataset, method, the config fields that differ from erp.config.base_config()
minus local paths). config.export.table picks the tables: 'empirical' (the
rounded latents' own histogram, the fewest bytes) or 'prior' (the learned
densities, as the paper codes them); config.export.float_dtype the precision
of uncompressed leaves.
"""
import json
import os
import time

from absl import flags
import flax
import jax
import ml_collections
import numpy as np

import erp
from erp import active
from erp import adaptive_rate
from erp import cli
from erp import config as config_lib
from erp import data
from erp import evaluate
from erp import priors
from erp import rate_term
from erp import file as file_lib
from erp import runs
from erp import state as state_lib
from erp import workdir as workdir_lib
from erp.codecs import epr
from erp.errors import ErpError

# Never stored: paths of this machine.
LOCAL_KEYS = ('data.dir', 'data.tfds_dir', 'init_from', 'train.distill_from')


def metadata(config, method):
  """What erp.load needs to rebuild an erp run's model; no local paths.

  With export.run_config, also the config fields that differ from the base and
  the erp version (~100 bytes more for a LeNet file; result.json holds them anyway).
  """
  out = {'method': method, 'model': config.model.name, 'width': config.model.width,
         'dataset': config.data.name}
  if config.data.get('image_size', 0):  # Evaluation crops the test images to it.
    out['image_size'] = config.data.image_size
  if config.export.get('run_config', False):
    out['config'] = {k: v for k, v in config_lib.diff_from_base(config).items()
                     if k not in LOCAL_KEYS}
    out['erp_version'] = erp.__version__
  return out


def rate_summary(trainable, float_dtype='float32', prior_fit='rounded', adaptive_max_latents=0):
  """Estimated bits per group at the rounded latents, total bytes, zero fraction, as
  training priced them: with prior_fit='active', of each group's ACTIVE block and masks
  (erp.rate_term.active_block), with 'active_base' less its most frequent value
  (erp.rate_term.modes); a group of at most adaptive_max_latents latents by its adaptive
  code (erp.adaptive_rate; ACTIVE_REF ones too, given erp.active.references)."""
  views = {k: active.coded_view(kind, trainable.latents[k].shape)
           for k, kind in trainable.kinds if kind != 'float'}
  references = active.latent_references(views, trainable.latents)
  bits = {k: _group_bits(trainable, k, prior_fit, adaptive_max_latents, views[k],
                         references.get(k)) for k in trainable.latents}
  float_bytes = sum(int(np.prod(v.shape)) * np.dtype(float_dtype).itemsize
                    for v in trainable.floats.values())
  num_latents = sum(int(v.size) for v in trainable.latents.values())
  zeros = sum(int((np.abs(np.asarray(v)) < 0.5).sum()) for v in trainable.latents.values())
  total_bits = sum(bits.values())
  return {
      'group_bits': bits,
      'latent_bits': total_bits,
      'float_leaf_bytes': float_bytes,
      'est_num_bytes': total_bits / 8 + float_bytes,
      'zero_fraction': zeros / num_latents if num_latents else 0.0,
  }


def _group_bits(trainable, group, prior_fit, max_adaptive, view, reference):
  latent = np.round(np.asarray(trainable.latents[group], np.float32))
  if latent.size <= max_adaptive:
    return adaptive_rate.integer_bits(latent, view, reference)
  if prior_fit not in rate_term.ACTIVE_FITS:
    return priors.integer_bits(trainable.priors[group], latent)
  if prior_fit == 'active_base' and len(view) >= 2:  # Less the mode (ties to 0).
    latent = latent - active.base(latent)
  block, mask_bits = rate_term.active_block(latent.ravel(), view)
  inside = latent.ravel()[np.asarray(block) > 0]
  return priors.integer_bits(trainable.priors[group], inside) + float(mask_bits)


def variables_of(trainable, batch_stats):
  """The variables a model applies: decoded (rounded) params, and batch_stats if any."""
  variables = {'params': state_lib.decode(trainable, exact=True)}
  if batch_stats:
    variables['batch_stats'] = batch_stats
  return variables


def run_file(config, trainable, batch_stats, est=None):
  """(bytes, per-group stats) of an EPR run's file, each group's estimated bits beside the
  bits its range code spends (est_bits, coded_bits). est: rate_summary's group_bits, if
  the caller has them."""
  if est is None:
    est = rate_summary(trainable, config.export.float_dtype, config.rd.get('prior_fit', 'rounded'),
                       config.rd.get('adaptive_rate_max_latents', 0))['group_bits']
  blob, info = file_lib.encode(trainable,
                               extra={'batch_stats': batch_stats} if batch_stats else None,
                               metadata=metadata(config, 'epr'), table=config.export.table,
                               float_dtype=config.export.float_dtype)
  for group, stats in info['groups'].items():
    stats['est_bits'] = est[group]
  return blob, info['groups']


def fit_summary(config, trainable, batch_stats, est=None):
  """How well the priors price the file a run would write now (logged at every evaluation).

  Per group and in total: the priors' bits for the rounded latents (est, or
  rate_summary's group_bits if given) and the bits the exporter's range coder
  spends on them (coded); and the file's bytes.
  """
  blob, groups = run_file(config, trainable, batch_stats, est)
  return _fit_of(len(blob), groups)


def _fit_of(num_bytes, groups):
  """fit_summary's record of a file of num_bytes and its per-group stats (run_file's).

  est / coded splits into est / iid (the priors' excess over the latents' own
  histogram, erp.coding.empirical_bits: how well they are fitted) times iid /
  coded (what the coder gains from structure no factorized prior prices).
  """
  est, iid, coded = (sum(g[k] for g in groups.values())
                     for k in ('est_bits', 'iid_bits', 'coded_bits'))
  return {'num_bytes': num_bytes, 'est_latent_bits': est, 'iid_latent_bits': iid,
          'coded_latent_bits': coded,
          'est_over_coded': est / coded if coded else None,
          'est_over_iid': est / iid if iid else None,
          'iid_over_coded': iid / coded if coded else None,
          'groups': {k: {b: g[b] for b in ('est_bits', 'iid_bits', 'coded_bits')}
                     for k, g in groups.items()}}


def write_run_file(path, config, trainable, batch_stats):
  """Writes an EPR run's file; returns (estimated bits per group, per-group stats)."""
  blob, groups = run_file(config, trainable, batch_stats)
  file_lib.write_atomic(path, blob)
  return {k: g['est_bits'] for k, g in groups.items()}, groups


def export_and_check(config, workdir, state, val, test, predict):
  """Writes DIR/model.erp, reloads it, checks params are bit-exact, evaluates from the file.

  val, test: data.source splits; val may be empty.
  """
  path = os.path.join(workdir, workdir_lib.FILE_NAME)
  t0 = time.time()
  est, stats = write_run_file(path, config, state.trainable, state.batch_stats)
  write_s = time.time() - t0
  t0 = time.time()
  try:
    variables = file_lib.load_variables(path)
  except ErpError:
    os.remove(path)  # Never leave a file that does not load.
    raise
  decode_s = time.time() - t0
  expected = variables_of(state.trainable, state.batch_stats)
  exact = jax.tree.structure(expected) == jax.tree.structure(variables) and all(
      np.array_equal(np.asarray(a), np.asarray(b))
      for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(variables)))
  if not exact:
    raise AssertionError('decoded params differ from the in-memory rounded params')
  error = evaluate.split_error_pct(predict, variables, test, config.data)
  val_error = evaluate.split_error_pct(predict, variables, val, config.data)
  num_bytes = os.path.getsize(path)
  print(f'exported {path}: {num_bytes} bytes ({num_bytes / 1000:.2f} KB), '
        f'test error from file {error:.2f}%', flush=True)
  return {
      'path': path,
      'num_bytes': num_bytes,
      'error_pct': error,
      'val_error_pct': val_error,
      'bit_exact': exact,
      'write_s': write_s,  # Building the tables, coding, writing.
      'decode_s': decode_s,
      'est_latent_bits': sum(est.values()),
      **_latent_bits(stats),
      'groups': stats,
  }


def _latent_bits(stats):
  """The file's coded bits and its latents' own histograms' bits, summed over the groups."""
  return {f'{k}_latent_bits': sum(s[f'{k}_bits'] for s in stats.values())
          for k in ('coded', 'iid')}


def load_workdir(workdir):
  """(config, trainable EprState, batch_stats) rebuilt from a training workdir."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise ErpError(f'{workdir} is not a training workdir (no config.json)')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  _, _, trainable, batch_stats = runs.setup(config)
  raw = workdir_lib.read_checkpoint(workdir)
  trainable = flax.serialization.from_state_dict(trainable, raw['trainable'])
  batch_stats = flax.serialization.from_state_dict(batch_stats, raw.get('batch_stats', {}))
  return config, trainable, batch_stats


def reexport(workdir, out=None, table=None):
  """Rebuilds a workdir's model.erp from its checkpoint, evaluates the file, updates result.json.

  table overrides config.export.table (e.g. 'prior' to code with the learned densities).
  """
  config, trainable, batch_stats = load_workdir(workdir)
  if table:
    config.export.table = table
  out = out or os.path.join(workdir, workdir_lib.FILE_NAME)
  _, stats = write_run_file(out, config, trainable, batch_stats)
  record = evaluate.evaluate_file(out, config.data.dir or None,
                                  val=data.source(config.data, 'val'))
  result_path = os.path.join(workdir, 'result.json')
  if out == os.path.join(workdir, workdir_lib.FILE_NAME) and os.path.exists(result_path):
    with open(result_path) as f:
      result = json.load(f)
    result['export'].update(num_bytes=record['num_bytes'], error_pct=record['error_pct'],
                            val_error_pct=record['val_error_pct'],
                            decode_s=record['decode_seconds'], groups=stats,
                            **_latent_bits(stats))
    if 'prior_fit' in result:  # From the file just written, not a second encoding.
      result['prior_fit'] = _fit_of(record['num_bytes'], stats)
    workdir_lib.write_result(workdir, result)
  return record


def main(argv):
  del argv
  record = reexport(flags.FLAGS.workdir, flags.FLAGS.out, flags.FLAGS.table)
  print(json.dumps(record))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoint).')
  flags.DEFINE_string('out', None, 'Output file; default WORKDIR/model.erp.')
  flags.DEFINE_enum('table', None, epr.TABLES, 'Override config.export.table.')
  flags.mark_flag_as_required('workdir')
  cli.run(main)
