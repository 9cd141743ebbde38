"""EPR groups: rounded latents range-coded with a stored integer table, and their decoder.

Payload of an 'epr' section: the decoder's float32 log steps (one, or one per
spatial frequency for 'dft' leaves [h, w, 1, 1]), a float32 shift for biases,
then the coded latents (erp.coding.write_coded: table, escapes, stream). The
table's probabilities are the rounded latents' own histogram ('empirical':
stored anyway, so it codes them in the fewest bytes) or the learned prior's
mass at each integer ('prior', as the paper codes them, EPR sec. 2.3).
"""
import numpy as np

from erp import coding
from erp import container
from erp import priors
from erp import reparam
from erp.errors import ErpError

NAME = 'epr'
SECTION = container.GROUP
TABLES = ('empirical', 'prior')
VARIANTS = ('affine', 'dft')

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
  pmf = priors.mass_at(prior_params, np.arange(lo, hi + 1))
  escape = max(1.0 - pmf.sum(), 0.0)
  return lo, coding.best_precision(np.append(pmf, escape), values, lo)


def table_of(values, prior_params=None, table='empirical'):
  """(lo, counts) coding int values [n] with the chosen table source."""
  if table == 'empirical':
    return coding.empirical_table(values)
  if table == 'prior':
    if prior_params is None:
      raise ErpError("table='prior' needs the group's prior")
    return prior_table(prior_params, values)
  raise ErpError(f'unknown table {table!r}; known: {TABLES}')


def write(values, decoder, lo, counts):
  """(payload, stats) of one group: int values [n], decoder params, table (lo, counts)."""
  values = np.asarray(values, np.int64).ravel()
  w = container.Writer()
  w.f32(np.ravel(decoder['log_step']))
  if 'shift' in decoder:
    w.f32([decoder['shift']])
  stream, escaped = coding.write_coded(w, values, lo, counts)
  payload = w.getvalue()
  return payload, {
      'coded_bits': 8 * len(stream),
      'ideal_bits': coding.ideal_bits(values, lo, counts),
      'payload_bytes': len(payload),
      'table_size': len(counts),
      'table_precision': int(np.sum(counts)).bit_length() - 1,
      'escapes': len(escaped),
      'zero_fraction': float((values == 0).mean()) if values.size else 0.0,
  }


def write_latent(latent, decoder, prior_params=None, table='empirical'):
  """(payload, stats) of one EPR group from its (unrounded) latent."""
  values = np.round(np.asarray(latent, np.float32)).astype(np.int64).ravel()
  lo, counts = table_of(values, prior_params, table)
  return write(values, decoder, lo, counts)


def read_group(payload, leaf):
  """(integer latents int64 [shape], decoder params, stream bytes) of one section."""
  if leaf.variant not in VARIANTS:
    raise ErpError(f'leaf {leaf.name}: unknown EPR decoder {leaf.variant!r}')
  shape = tuple(leaf.shape)
  what = f'group {leaf.path}'
  r = container.Reader(payload, what)
  step_shape = shape[:2] + (1,) * (len(shape) - 2) if leaf.variant == 'dft' else ()
  decoder = {'log_step': r.f32(int(np.prod(step_shape))).reshape(step_shape)}
  if reparam.has_shift(shape):
    decoder['shift'] = r.f32(1)[0]
  values, stream = coding.read_coded(r, int(np.prod(shape)), what)
  r.done()
  return values.reshape(shape), decoder, stream


def read(payload, leaf):
  values, decoder, _ = read_group(payload, leaf)
  return reparam.decode_exact(leaf.variant, values, decoder)


def describe(payload, leaf, value):
  """Stats of the coded latents (not of the decoded weights, value)."""
  del value
  values, _, stream = read_group(payload, leaf)
  return coding.code_stats(8 * len(stream), values)
