"""The code of one group's integers in a format-3+ file: their range, escapes and stream.

    head:varint = K << 5 | escape << 4 | mode    lo:sint
    [mode TABLE: K + 1 counts:varint]            [escape: count:varint, values:sint*]
    stream: the rest of the section

Values are coded in Fortran order (first axis fastest): a dense kernel [in, out]
unit by unit, a 'dft' kernel [frequency, in, out] frequencies fastest, so the
stream's statistics do not drift and adaptive coding needs no stored table
(measured on the 37 LeNet files of erp 0.3: 33 % less side information). Symbols 0..K-1 are the
values lo..lo+K-1; symbol K (always in a table, else only with escape) stands
for a value outside that range, stored raw. mode 0..7 codes the symbols
block-adaptively with alpha = 2**-mode (erp.adaptive, nothing stored); TABLE
with a stored integer table (erp.coding). The writer prices every central
range, alpha and the table, and keeps the fewest bytes: a table only pays
when the symbols change statistics along the tensor (measured: LeNet-300-100's
first layer, whose border pixels' rows are all zero). A group of one value
costs its head and lo, and no stream.

    mode BINARIZED + a (format 7; K = max |v|, no lo, no escape): stream

Format 7 adds modes 10..15, erp.binarized (zero flags, signs and magnitudes in
unary, each an adaptive binary context, alpha = 2**-a): it learns a few
probabilities where mode 0..7 learns a K-symbol histogram, which pays on the
sparse, wide groups of small files; and cuts every stream of at most
TRIM_MAX_VALUES values to its shortest decodable length (erp.coding.shortest_stream).

    mode ACTIVE (format 5; head = ACTIVE, no lo): blob(code of the masks), code of the block

Trained EPR kernels are sparse along whole rows and columns (a LeNet5 file at
1.2 KB: 131 of fc1's 800 inputs and 63 of its 500 units carry a nonzero). ACTIVE
stores, for every axis, the mask of the indices whose slice holds a nonzero
(the masks' 0/1 concatenated, coded as above), then the block those masks cut
out, coded as above; the zeros outside it cost nothing. The writer takes it
when it is the fewer bytes (measured: 10-11 % of the committed LeNet files).

    mode ACTIVE_BASE (format 8; head = ACTIVE | 1 << 4): base:sint (!= 0), ACTIVE code of
    values - base

The writer tries base = the most frequent value. A last layer's kernel drifts under the
rate as a whole (softmax ignores a constant added to every logit, so a row of equal
values is free to the task): the LeNet5-Caffe record files' fc2 holds -1 where 0 is
meant, in every row of the 414-422 fc1 units no input reaches and most of the others.
"""
import numpy as np

from erp import active
from erp import adaptive
from erp import binarized
from erp import coding
from erp import container
from erp.errors import ErpError

TABLE = 8
ACTIVE = 9
ACTIVE_BASE = ACTIVE | 1 << 4  # Format 8: base != 0, then the ACTIVE code of values - base.
BINARIZED = 10  # Modes 10..15: erp.binarized with alpha = 2**-(mode - 10); K = max |v|.
TRIM_MAX_VALUES = 1 << 18  # Streams of more values are not trimmed (each try decodes them).
TAILS = (0.0, 1e-4, 1e-3, 1e-2)  # Fractions of the values that may be escaped.


def _candidates(values, version=container.VERSION):
  """(bytes, lo, K, escaped, mode, counts) of every way considered to code values."""
  binary = _binarized_candidate(values) if version >= 7 else None
  if binary is not None:
    yield binary
  for tail in TAILS:
    lo = int(np.quantile(values, tail / 2, method='lower'))
    hi = int(np.quantile(values, 1 - tail / 2, method='higher'))
    if hi - lo + 2 > coding.MAX_TABLE:
      continue
    k = hi - lo + 1
    symbols, escaped = coding.to_indices(values, lo, k + 1)
    escape = len(escaped) > 0
    fixed = (coding.varint_bytes(k << 5).item() + coding.sint_bytes(lo).item()
             + (coding.varint_bytes(len(escaped)).item() + int(coding.sint_bytes(escaped).sum())
                if escape else 0))
    num_symbols = k + escape
    if num_symbols == 1:
      yield fixed, lo, k, escaped, 0, None
      continue
    mode, bits = adaptive.best_alpha(symbols, num_symbols)
    yield fixed + bits / 8, lo, k, escaped, mode, None
    hist = np.bincount(symbols, minlength=k + 1)  # A table always has the escape symbol.
    counts = coding.best_counts(hist.astype(np.float64), hist, lo, escaped)[1]
    bits = -(hist * np.log2(counts / counts.sum())).sum()
    yield fixed + int(coding.varint_bytes(counts).sum()) + bits / 8, lo, k, escaped, TABLE, counts


def _binarized_candidate(values):
  """(bytes, 0, K, [], mode, None) of the binarized code, or None (format 7)."""
  best = binarized.best_alpha(values)
  if best is None:
    return None
  k = int(np.abs(values).max())
  return coding.varint_bytes(k << 5).item() + best[1] / 8, 0, k, np.zeros(0, np.int64), \
      BINARIZED + best[0], None


def _best(flat, version):
  """The candidate of fewest bytes for flat values, or None if there are none."""
  return min(_candidates(flat, version), key=lambda c: c[0]) if flat.size else None


def _num_bytes(best):
  return best[0] if best is not None else 2  # An empty code's head: k = 0, lo = 0.


def active_masks(values):
  """[bool [n_axis]] per axis: the indices whose slice of values holds a nonzero."""
  return active.masks(np.asarray(values) != 0)


def referenced_flags(masks, reference):
  """The flags an ACTIVE_REF code stores (format 9), three bool arrays: the masks of every
  axis but the input axis (-2) concatenated; the input mask where reference (bool, its
  length; erp.active.references) is False; where it is True. Each is coded on its own, so
  an input mask equal to its reference costs two heads."""
  rest = [m for axis, m in enumerate(masks) if axis != len(masks) - 2]
  inputs, reference = np.asarray(masks[-2]), np.asarray(reference, bool)
  return [np.concatenate(rest), inputs[~reference], inputs[reference]]


def _bases(values, version):
  """What an ACTIVE code may subtract first: 0, and from format 8 the most frequent value
  (a trained kernel's rows drift together, e.g. to -1, where softmax ignores what they
  add to every logit)."""
  yield 0
  if version >= 8 and values.ndim >= 2:
    uniques, counts = np.unique(values, return_counts=True)
    base = int(uniques[np.argmax(counts)])
    if base:
      yield base


def write(writer, values, table=None, active=True, version=container.VERSION):
  """Appends the code of int values (any shape, Fortran order) to a container.Writer.

  table: None (the writer picks the fewest bytes) or (lo, counts), a stored
  table to use, escape symbol last (e.g. the learned prior's, erp.codecs.epr).
  active=False: never ACTIVE (what an ACTIVE code holds). version: the format
  whose code to write (before 8: no ACTIVE_BASE; before 7: no BINARIZED, untrimmed; for
  tests of old files). Returns {'stream': bytes after the head, 'mode': 0..7, TABLE,
  BINARIZED + a or ACTIVE (with a base or not), 'num_symbols', 'escapes'}.
  """
  values = np.asarray(values, np.int64)
  flat = values.ravel(order='F')
  best = _best(flat, version) if table is None else None
  if active and best is not None:
    plans = []
    for base in _bases(values, version):
      shifted = values - base
      masks = active_masks(shifted)
      block = shifted[np.ix_(*masks)].ravel(order='F')
      flags = np.concatenate(masks).astype(np.int64)
      flags_best, block_best = _best(flags, version), _best(block, version)
      num_bytes = _num_bytes(flags_best) + _num_bytes(block_best) + 3 \
          + (coding.sint_bytes(base).item() if base else 0)
      plans.append((num_bytes, base, flags, flags_best, block, block_best))
    num_bytes, base, flags, flags_best, block, block_best = min(plans, key=lambda p: p[0])
    if num_bytes < best[0]:
      start = len(writer.buf)
      writer.varint(ACTIVE_BASE if base else ACTIVE)
      if base:
        writer.sint(base)
      inner = container.Writer()
      _write_flat(inner, flags, flags_best, None, version)
      writer.blob(inner.getvalue())
      code = _write_flat(writer, block, block_best, None, version)
      return dict(code, stream=bytes(writer.buf[start + 1:]), mode=ACTIVE)
  return _write_flat(writer, flat, best, table, version)


def _write_flat(writer, flat, best, table, version):
  """Appends the code of flat values: the candidate best, else with table (lo, counts)."""
  if not flat.size:
    writer.varint(0).sint(0)
    return {'stream': b'', 'mode': 0, 'num_symbols': 0, 'escapes': 0}
  if table is None:
    _, lo, k, escaped, mode, counts = best
  else:
    lo, counts = int(table[0]), np.asarray(table[1], np.int64)
    k, mode = len(counts) - 1, TABLE
    escaped = coding.to_indices(flat, lo, len(counts))[1]
  escape = len(escaped) > 0
  writer.varint(k << 5 | escape << 4 | mode)
  if mode < BINARIZED:
    writer.sint(lo)
  if mode == TABLE:
    for c in counts:
      writer.varint(c)
  if escape:
    writer.varint(len(escaped))
    for v in escaped:
      writer.sint(v)
  stream = _encode(flat, lo, k, escape, mode, counts, escaped, version)
  writer.raw(stream)
  num_symbols = 2 * k + 1 if mode >= BINARIZED else k + (escape or mode == TABLE)
  return {'stream': stream, 'mode': mode, 'num_symbols': num_symbols, 'escapes': len(escaped)}


def _encode(values, lo, k, escape, mode, counts, escaped, version):
  """The stream of values (escaped: those stored raw); from format 7 cut to its shortest
  decodable length."""
  if mode == TABLE:
    stream = coding.encode(values, lo, counts)[0]
  elif mode >= BINARIZED:
    stream = binarized.encode(values, mode - BINARIZED)
  elif k + escape <= 1:
    return b''
  else:
    stream = adaptive.encode(coding.to_indices(values, lo, k + 1)[0], k + escape, mode)
  if version < 7 or values.size > TRIM_MAX_VALUES:
    return stream

  def decodes_same(candidate):
    try:
      return np.array_equal(
          _decode(candidate, values.size, lo, k, escape, mode, counts, escaped, 'trim'), values)
    except ErpError:
      return False
  return coding.shortest_stream(stream, decodes_same)


def read(reader, shape, what, active=True, version=container.VERSION):
  """(int64 values [shape], stream bytes): the rest of reader's section is the code.

  active=False refuses ACTIVE (inside an ACTIVE code, and in files before format 5).
  version: the file's format (before 7: no BINARIZED modes, untrimmed streams).
  """
  shape = tuple(int(d) for d in shape)
  num_values = int(np.prod(shape))
  start = reader.pos
  head = reader.varint(coding.MAX_TABLE << 5)
  if (head == ACTIVE or head == ACTIVE_BASE and version >= 8) and active and num_values:
    base = reader.sint() if head == ACTIVE_BASE else 0
    if head == ACTIVE_BASE and not base:
      raise ErpError(f'{what}: malformed code head {head} (base 0)')
    return _read_active(reader, shape, what, version) + base, reader.data[start + 1:]
  k, escape, mode = head >> 5, head >> 4 & 1, head & 15
  binary = mode >= BINARIZED
  lo = 0 if binary else reader.sint()
  bad_binary = binary and (version < 7 or escape or not 1 <= k <= binarized.MAX_LEVELS)
  if (mode == ACTIVE or bad_binary or (k == 0) != (num_values == 0)
      or (escape and not num_values)):
    raise ErpError(f'{what}: malformed code head {head}')
  counts = None
  if mode == TABLE:
    counts = np.array([reader.varint(1 << 24) for _ in range(k + 1)], np.int64)
    total = int(counts.sum())
    if counts.min() < 1 or total & (total - 1):
      raise ErpError(f'{what}: invalid probability table')
  escaped = np.zeros(0, np.int64)
  if escape:
    count = reader.varint(num_values)
    escaped = np.array([reader.sint() for _ in range(count)], np.int64)
  stream = reader.raw(len(reader.data) - reader.pos)
  values = _decode(stream, num_values, lo, k, escape, mode, counts, escaped, what)
  if binary and int(np.abs(values).max()) != k:
    raise ErpError(f'{what}: binarized code head says max |value| {k}, the values reach '
                   f'{int(np.abs(values).max())}')
  if _encode(values, lo, k, escape, mode, counts, escaped, version) != stream:  # Bytes <-> values.
    raise ErpError(f'{what}: the stream is not the coding of the values it decodes to '
                   '(trailing or altered bytes)')
  return values.reshape(shape, order='F'), stream


def _read_active(reader, shape, what, version):
  """The values of an ACTIVE code: the masks, then the block they cut out; zeros elsewhere."""
  inner = container.Reader(reader.blob(), f'{what} (masks)')
  flags, _ = read(inner, (sum(shape),), f'{what} (masks)', active=False, version=version)
  if flags.min(initial=0) < 0 or flags.max(initial=0) > 1:
    raise ErpError(f'{what}: active masks hold values other than 0 and 1')
  masks = np.split(flags.astype(bool), np.cumsum(shape)[:-1])
  block, _ = read(reader, tuple(int(m.sum()) for m in masks), what, active=False,
                  version=version)
  values = np.zeros(shape, np.int64)
  values[np.ix_(*masks)] = block
  if not all(np.array_equal(a, b) for a, b in zip(active_masks(values), masks)):
    raise ErpError(f'{what}: an active mask marks a slice with no nonzero value')
  return values


def _decode(stream, num_values, lo, k, escape, mode, counts, escaped, what):
  if mode == TABLE:
    return coding.decode(stream, num_values, lo, counts, escaped)
  if mode >= BINARIZED:
    try:
      return binarized.decode(stream, num_values, k, mode - BINARIZED)
    except Exception as e:  # constriction reports a malformed stream in its own terms.
      raise ErpError(f'{what}: corrupt range-coded stream: {e}') from None
  if k + escape <= 1:  # k == 1 (read refuses k == 0 with values): one value, no stream.
    return np.full(num_values, lo, np.int64)
  try:
    symbols = adaptive.decode(stream, num_values, k + escape, mode)
  except Exception as e:  # constriction reports a malformed stream in its own terms.
    raise ErpError(f'{what}: corrupt range-coded stream: {e}') from None
  is_escape = symbols == k
  if escape and int(is_escape.sum()) != len(escaped):
    raise ErpError(f'{what}: stream has {int(is_escape.sum())} escapes but the file stores '
                   f'{len(escaped)} escaped values')
  symbols += lo  # In place: the values (a model's worth of int64).
  if escape:
    symbols[is_escape] = escaped
  return symbols
