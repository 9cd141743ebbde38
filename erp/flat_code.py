"""The flat code of a group's integers (erp.latent_code): their range, escapes and stream.

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
"""
import numpy as np

from erp import adaptive
from erp import binarized
from erp import coding
from erp import container
from erp.errors import ErpError

TABLE = 8
ACTIVE = 9  # Not a flat code's mode: erp.latent_code's ACTIVE head.
BINARIZED = 10  # Modes 10..15: erp.binarized with alpha = 2**-(mode - 10); K = max |v|.
TRIM_MAX_VALUES = 1 << 18  # Streams of more values are not trimmed (each try decodes them).
TAILS = (0.0, 1e-4, 1e-3, 1e-2)  # Fractions of the values that may be escaped.
EXACT_MARGIN_BYTES = 2  # Candidates priced this close to the cheapest are written and measured.


def candidates(values, version=container.VERSION):
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
  fit = binarized.best_alpha(values)
  if fit is None:
    return None
  k = int(np.abs(values).max())
  return coding.varint_bytes(k << 5).item() + fit[1] / 8, 0, k, np.zeros(0, np.int64), \
      BINARIZED + fit[0], None


def best(flat, version):
  """The candidate of fewest bytes for flat values, or None if there are none: priced by
  their entropy, and those within EXACT_MARGIN_BYTES of the cheapest written out and
  measured (a coder's stream may run a byte or two past its bits / 8). A measured winner
  carries its code, so write() appends it without encoding it again."""
  if not flat.size:
    return None
  priced = sorted(candidates(flat, version), key=lambda c: c[0])
  near = list({(c[1], c[2], len(c[3]), c[4]): c for c in reversed(priced)  # Tails may agree.
               if c[0] <= priced[0][0] + EXACT_MARGIN_BYTES}.values())
  if len(near) == 1:
    return near[0]
  measured = [(written(flat, c, version), c) for c in near]
  (code, info), c = min(measured, key=lambda m: (len(m[0][0]), m[1][0]))
  return (len(code),) + c[1:6] + ((code, info),)  # write() appends these bytes as they are.


def written(flat, chosen, version):
  """(the bytes write() appends for flat values coded as chosen, write's info)."""
  writer = container.Writer()
  info = write(writer, flat, chosen, None, version)
  return writer.getvalue(), info


def num_bytes(chosen):
  """The bytes of a best() candidate (2 for none: an empty code's head, k = 0, lo = 0)."""
  return chosen[0] if chosen is not None else 2


def write(writer, flat, chosen, table, version):
  """Appends the code of flat values: the candidate chosen (best's), else with table
  (lo, counts)."""
  if not flat.size:
    writer.varint(0).sint(0)
    return {'stream': b'', 'mode': 0, 'num_symbols': 0, 'escapes': 0}
  if table is None and len(chosen) > 6:  # Measured by best(): its bytes, written once.
    writer.raw(chosen[6][0])
    return chosen[6][1]
  if table is None:
    _, lo, k, escaped, mode, counts = chosen[:6]
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


def read(reader, head, num_values, what, version):
  """(int64 values [num_values], stream bytes) of the flat code whose head was read; the
  rest of reader's section is the code."""
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
  return values, stream




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
