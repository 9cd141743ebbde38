"""EPR groups: range-coded integer latents and their decoder (EPR sec. 2).

Format 5 payload of an 'epr' leaf: the decoder on the file's grid
(erp.reparam.file_decoder: the log step as an integer; a bias's shift as an
integer), then the latents' code (erp.latent_code: block-adaptive, a stored
table, or the active block of a sparse kernel). A 'dft' leaf [h, w, in, out]
has one log step per spatial frequency: a bit mask (h * w bits, little-endian
bytes) of the frequencies with a nonzero latent, then their steps, each after
the first as its difference from the one before, and only their latents
[frequency, in, out] (the others are zeros: in trained LeNet5 files about half
the frequencies). With table='prior' the table is the learned prior's mass at
each integer, as the paper codes them (EPR sec. 2.3). Format 4 coded every
frequency's latents, flat; format 3 also stored every step; formats 1-2
(erp 0.1-0.2) float32 decoders and a table always; read_group reads them all.
"""
import numpy as np

from erp import coding
from erp import container
from erp import latent_code
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


def write(values, decoder, table=None):
  """(payload, stats) of one group: int values [shape], its decoder, and table None (the
  fewest bytes) or (lo, counts)."""
  _, ints = reparam.file_decoder(decoder)
  w = container.Writer()
  values = np.asarray(values, np.int64)
  steps, coded = np.ravel(ints['log_step']), values
  if np.ndim(ints['log_step']):  # 'dft': the frequencies in use, their steps and latents.
    used = _used_frequencies(values, np.shape(ints['log_step']))
    w.raw(np.packbits(used, bitorder='little').tobytes())
    steps, coded = steps[used], values.reshape((used.size,) + values.shape[2:])[used]
  for d in np.diff(steps, prepend=0):
    w.sint(d)
  if 'shift' in ints:
    w.sint(ints['shift'])
  code = latent_code.write(w, coded, table)
  payload = w.getvalue()
  mode = {latent_code.TABLE: 'table', latent_code.ACTIVE: 'active'}
  return payload, {
      'coded_bits': 8 * len(code['stream']),
      'iid_bits': coding.empirical_bits(values),
      'payload_bytes': len(payload),
      'mode': mode.get(code['mode'], f'adaptive{code["mode"]}'),
      'num_symbols': code['num_symbols'],
      'escapes': code['escapes'],
      'zero_fraction': float((values == 0).mean()) if values.size else 0.0,
  }


def _used_frequencies(values, step_shape):
  """bool [h * w]: the spatial frequencies of a 'dft' leaf with a nonzero latent."""
  return np.asarray(values).reshape(int(np.prod(step_shape)), -1).any(axis=1)


def write_latent(latent, decoder, prior_params=None, table='empirical'):
  """(payload, stats) of one EPR group from its (unrounded) latent.

  table: 'empirical' (the writer's choice: the fewest bytes) or 'prior'.
  """
  values = np.round(np.asarray(latent, np.float32)).astype(np.int64)
  if table not in TABLES:
    raise ErpError(f'unknown table {table!r}; known: {TABLES}')
  if table == 'prior' and prior_params is None:
    raise ErpError("table='prior' needs the group's prior")
  return write(values, decoder,
               prior_table(prior_params, values.ravel()) if table == 'prior' else None)


def read_group(payload, leaf):
  """(integer latents int64 [shape], float32 decoder, stream bytes) of one section."""
  if leaf.variant not in VARIANTS:
    raise ErpError(f'leaf {leaf.name}: unknown EPR decoder {leaf.variant!r}')
  shape = tuple(leaf.shape)
  what = f'group {leaf.path}'
  r = container.Reader(payload, what)
  step_shape = shape[:2] + (1,) * (len(shape) - 2) if leaf.variant == 'dft' else ()
  num_steps = int(np.prod(step_shape))
  if leaf.version >= 3:
    masked = leaf.version >= 4 and bool(step_shape)  # Steps of the frequencies in use only.
    used = np.ones(num_steps, bool)
    if masked:
      bits = np.unpackbits(np.frombuffer(r.raw(-(-num_steps // 8)), np.uint8),
                           bitorder='little')
      if bits[num_steps:].any():
        raise ErpError(f'{what}: malformed frequency mask')
      used = bits[:num_steps].astype(bool)
    steps = np.cumsum([r.sint(1 << 40) for _ in range(int(used.sum()))], dtype=np.int64)
    # An unused frequency's step multiplies only zeros: any will do (the last used one's).
    ints = {'log_step': steps[np.maximum(np.cumsum(used) - 1, 0)].reshape(step_shape)
            if steps.size else np.zeros(step_shape, np.int64)}
    if reparam.has_shift(shape):
      ints['shift'] = r.sint(1 << 40)
    decoder = reparam.decoder_of_ints(ints)
    if leaf.version >= 5 and masked:  # The latents of the frequencies in use only.
      coded, stream = latent_code.read(r, (int(used.sum()),) + shape[2:], what)
      values = np.zeros((num_steps,) + shape[2:], np.int64)
      values[used] = coded
    elif leaf.version >= 5:
      values, stream = latent_code.read(r, shape, what)
    else:  # Formats 3-4: Fortran order, no ACTIVE code.
      values, stream = latent_code.read(r, (int(np.prod(shape)),), what, active=False)
    values = values.reshape(shape, order='C' if leaf.version >= 5 else 'F')
    if masked and not np.array_equal(_used_frequencies(values, step_shape), used):
      raise ErpError(f'{what}: the frequencies with nonzero latents are not those whose '
                     'steps the file stores')
  else:
    decoder = {'log_step': r.f32(num_steps).reshape(step_shape)}
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
  return {**coding.code_stats(8 * len(stream), values),
          'iid_bits': coding.empirical_bits(values)}
