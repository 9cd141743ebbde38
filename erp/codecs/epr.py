"""EPR groups: range-coded integer latents and their decoder (EPR sec. 2).

Format 6 payload of an 'epr' leaf: the decoder on the file's grid
(erp.reparam.file_decoder: the log step as an integer; a bias's shift as an
integer), then the latents' code (erp.latent_code: block-adaptive, a stored
table, or the active block of a sparse kernel). A 'dft' leaf [h, w, in, out]
has one log step per spatial frequency: the mask of the frequencies with a
nonzero latent and their steps in one bit block (_write_dft_steps), then only
their latents [frequency, in, out] (the others are zeros: in trained LeNet5
files up to half the frequencies). With table='prior' the table is the learned
prior's mass at each integer, as the paper codes them (EPR sec. 2.3). Format 5
stored the mask as bytes and each step as its difference from the one before;
format 4 also coded every frequency's latents, flat; format 3 stored every
step; formats 1-2 (erp 0.1-0.2) float32 decoders and a table always;
read_group reads them all. Format 9: a kernel's ACTIVE code may give its input mask
relative to the output mask of the kernel before it (erp.latent_code's ACTIVE_REF,
erp.active.references), so a file's groups are read in order (read_groups).
"""
import numpy as np

from erp import active
from erp import coding
from erp import container
from erp import flat_code
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


def write(values, decoder, table=None, reference=None):
  """(payload, stats) of one group: int values [shape], its decoder, table None (the
  fewest bytes) or (lo, counts), and reference (erp.active.references: what its ACTIVE code
  may give the input mask relative to; the reader must be handed the same)."""
  _, ints = reparam.file_decoder(decoder)
  w = container.Writer()
  values = np.asarray(values, np.int64)
  steps, coded = np.ravel(ints['log_step']), values
  if np.ndim(ints['log_step']):  # 'dft': the frequencies in use, their steps and latents.
    used = _used_frequencies(values, np.shape(ints['log_step']))
    _write_dft_steps(w, used, steps[used])
    coded = values.reshape((used.size,) + values.shape[2:])[used]
  else:
    w.sint(steps[0])
  if 'shift' in ints:
    w.sint(ints['shift'])
  code = latent_code.write(w, coded, table, reference=reference)
  payload = w.getvalue()
  mode = {flat_code.TABLE: 'table', latent_code.ACTIVE: 'active'}
  return payload, {
      'coded_bits': 8 * len(code['stream']),
      'iid_bits': coding.empirical_bits(values),
      'payload_bytes': len(payload),
      'mode': mode.get(code['mode'], f'adaptive{code["mode"]}'),
      'num_symbols': code['num_symbols'],
      'escapes': code['escapes'],
      'zero_fraction': float((values == 0).mean()) if values.size else 0.0,
  }


MAX_RICE_K = 15  # The Rice parameter takes 4 bits.
MAX_RICE_QUOTIENT = 1 << 12  # Unary part of one step's code: bounds a hostile file's reading.


def _rice_k(offsets):
  """The Rice parameter that codes zigzagged offsets in the fewest bits."""
  fits = [k for k in range(MAX_RICE_K + 1) if not offsets.size
          or offsets.max() >> k <= MAX_RICE_QUOTIENT]
  if not fits:
    raise ErpError('DFT log steps too far apart to store')
  return min(fits, key=lambda k: int(np.sum(offsets >> k)) + offsets.size * (1 + k))


def _write_dft_steps(w, used, steps):
  """Format 6: median:sint, then one bit block (little-endian): the mask of the frequencies
  in use (h * w bits), k (4 bits), each used step's zigzagged offset from the median as a
  Rice code (quotient in unary, ones ended by a zero; then k bits).

  Steps of a trained kernel sit within a few tens of grid units (1/128 in log) of each
  other; the format-5 deltas as byte varints spent 31-60 bytes on LeNet5's two kernels
  where this spends 29-51 (measured on the 28 committed LeNet5-Caffe EPR files).
  """
  center = int(np.median(steps)) if steps.size else 0
  offsets = container.zigzag(steps.astype(np.int64) - center)
  k = _rice_k(offsets)
  bits = [used.astype(np.uint8), (k >> np.arange(4)) & 1]
  for offset in offsets:
    bits += [np.ones(offset >> k, np.uint8), [0], (offset >> np.arange(k)) & 1]
  w.sint(center)
  w.raw(np.packbits(np.concatenate(bits).astype(np.uint8), bitorder='little').tobytes())


def _read_dft_steps(r, num_steps, what):
  """(used bool [num_steps], steps int64 [used.sum()]) of what _write_dft_steps wrote."""
  center = r.sint(1 << 40)
  most_bits = num_steps + 4 + num_steps * (1 + MAX_RICE_QUOTIENT + MAX_RICE_K)
  bits = np.unpackbits(np.frombuffer(r.data[r.pos:r.pos + -(-most_bits // 8)], np.uint8),
                       bitorder='little')
  if bits.size < num_steps + 4:
    raise ErpError(f'{what}: truncated DFT steps')
  used = bits[:num_steps].astype(bool)
  k = int(bits[num_steps:num_steps + 4] @ (1 << np.arange(4)))
  pos, steps = num_steps + 4, []
  zeros = np.flatnonzero(bits == 0)
  for _ in range(int(used.sum())):
    end = zeros[np.searchsorted(zeros, pos)] if zeros.size and zeros[-1] >= pos else bits.size
    if end - pos > MAX_RICE_QUOTIENT or end + 1 + k > bits.size:
      raise ErpError(f'{what}: malformed or truncated DFT steps')
    low = int(bits[end + 1:end + 1 + k] @ (1 << np.arange(k)))
    offset = ((end - pos) << k) | low
    steps.append(center + container.unzigzag(offset))
    pos = end + 1 + k
  if bits[pos:-(-pos // 8) * 8].any():
    raise ErpError(f'{what}: malformed DFT steps (stray padding bits)')
  r.raw(-(-pos // 8))
  return used, np.asarray(steps, np.int64)


def _used_frequencies(values, step_shape):
  """bool [h * w]: the spatial frequencies of a 'dft' leaf with a nonzero latent."""
  return np.asarray(values).reshape(int(np.prod(step_shape)), -1).any(axis=1)


def write_latent(latent, decoder, prior_params=None, table='empirical', reference=None):
  """(payload, stats) of one EPR group from its (unrounded) latent.

  table: 'empirical' (the writer's choice: the fewest bytes) or 'prior'. reference: as
  write's.
  """
  values = np.round(np.asarray(latent, np.float32)).astype(np.int64)
  if table not in TABLES:
    raise ErpError(f'unknown table {table!r}; known: {TABLES}')
  if table == 'prior' and prior_params is None:
    raise ErpError("table='prior' needs the group's prior")
  return write(values, decoder,
               prior_table(prior_params, values.ravel()) if table == 'prior' else None,
               reference)


def read_group(payload, leaf, reference=None):
  """(integer latents int64 [shape], float32 decoder, stream bytes) of one section;
  reference: what its code's input mask is given relative to (read_groups)."""
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
    if masked and leaf.version >= 6:
      used, steps = _read_dft_steps(r, num_steps, what)
    else:
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
      coded, stream = _read_code(r, (int(used.sum()),) + shape[2:], what, leaf.version,
                                 reference)
      values = np.zeros((num_steps,) + shape[2:], np.int64)
      values[used] = coded
    elif leaf.version >= 5:
      values, stream = _read_code(r, shape, what, leaf.version, reference)
    else:  # Formats 3-4: Fortran order, no ACTIVE code.
      values, stream = latent_code.read(r, (int(np.prod(shape)),), what, active=False,
                                        version=leaf.version)
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


def _read_code(r, shape, what, version, reference):
  return latent_code.read(r, shape, what, version=version,
                          reference=reference if version >= 9 else None)


def read_groups(payloads, leaves):
  """[read_group of each] of a file's EPR leaves, in file order: each handed the reference
  its code may use (erp.active.references: the output mask of the kernel before it)."""
  out, previous = [], None
  for payload, leaf in zip(payloads, leaves):
    view = active.coded_view(leaf.variant, leaf.shape)
    reference = active.reference(previous, view)
    out.append(read_group(payload, leaf, reference))
    if len(view) >= 2:
      previous = active.output_mask(out[-1][0].reshape(view) != 0)
  return out


def read_joint(payloads, leaves):
  """The decoded weights of a file's EPR leaves (read_groups)."""
  return [reparam.decode_exact(leaf.variant, values, decoder)
          for leaf, (values, decoder, _) in zip(leaves, read_groups(payloads, leaves))]


def describe_joint(payloads, leaves, values):
  """Stats of each leaf's coded latents (not of the decoded weights, values)."""
  del values
  return [{**coding.code_stats(8 * len(stream), ints), 'iid_bits': coding.empirical_bits(ints)}
          for ints, _, stream in read_groups(payloads, leaves)]
