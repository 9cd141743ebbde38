"""Range coding of integer arrays with stored integer probability tables.

A table covers the integers [lo, lo + len(counts) - 2] plus one escape symbol
(the last entry) for values outside it; escaped values are stored raw by the
container. Counts are positive integers summing to 2**precision. The coder
(constriction's RangeEncoder/Decoder with a Categorical model) sees only these
integers, converted to float64 exactly, so encoding and decoding use the same
model on any machine.
"""
import constriction
import numpy as np

from erp import container
from erp.errors import ErpError

MAX_TABLE = 1 << 20  # Symbols a stored table may have (its precision is at most 20 bits).


def quantize_pmf(pmf, precision):
  """Float probabilities [n] (escape last) -> int counts [n], each >= 1, sum 2**precision."""
  pmf = np.asarray(pmf, np.float64)
  if pmf.ndim != 1 or len(pmf) < 1 or not np.all(np.isfinite(pmf)) or np.any(pmf < 0):
    raise ValueError('pmf must be a non-empty 1-D array of finite non-negative values')
  total = 1 << precision
  if len(pmf) > total:
    raise ValueError(f'{len(pmf)} symbols do not fit a {precision}-bit table')
  pmf = pmf / max(pmf.sum(), 1e-300)
  counts = np.maximum(np.round(pmf * total).astype(np.int64), 1)
  # Fix the sum by moving mass to/from the largest entries (least relative change).
  excess = int(counts.sum()) - total
  order = np.argsort(-counts, kind='stable')
  i = 0
  while excess != 0:
    j = order[i % len(order)]
    change = min(excess, counts[j] - 1) if excess > 0 else excess
    counts[j] -= change
    excess -= change
    i += 1
  return counts


def model_of(counts):
  """constriction's model of an integer table (exact float64 inputs, so the same anywhere)."""
  return constriction.stream.model.Categorical(np.asarray(counts, np.float64), perfect=False)


def to_indices(values, lo, num_symbols):
  """Values -> symbol indices in [0, num_symbols); out-of-range -> escape (the last)."""
  values = np.asarray(values, np.int64).ravel()
  escape = num_symbols - 1
  idx = values - lo
  out_of_range = (idx < 0) | (idx >= escape)
  escaped = values[out_of_range]
  idx[out_of_range] = escape
  return idx.astype(np.int32), escaped


CHUNK = 1 << 20  # Values converted at a time: bounds the coder's temporaries.


def stream_bytes(encoder):
  """The bytes of a constriction RangeEncoder's words, big-endian, trailing zeros dropped
  (stream_decoder reads missing bytes as zeros)."""
  return encoder.get_compressed().astype('>u4').tobytes().rstrip(b'\0')


def stream_decoder(stream):
  """A constriction RangeDecoder of stream bytes (zero-padded to whole 32-bit words)."""
  padded = stream + b'\0' * (-len(stream) % 4)
  return constriction.stream.queue.RangeDecoder(np.frombuffer(padded, '>u4').astype(np.uint32))


TRIM_BUMPS = (0, 1, 2)  # What may be added to a shortened stream's last byte.
MAX_TRIM = 8  # Bytes: the flush writes at most two 32-bit words.


def shortest_stream(stream, decodes_same):
  """The stream with its tail cut as far as the decoder still reads the same symbols.

  Format 7: a range coder's flush writes the whole final interval (measured: about
  2 bytes per stream more than the code's ideal length on LeNet5 files), where any
  number in the interval decodes the same; the decoder reads missing bytes as zeros.
  For cut = 1, 2, ... bytes, the first of stream[:-cut] with TRIM_BUMPS added to its
  last byte that decodes_same(candidate) accepts is kept; the search stops at the
  first cut none passes. Deterministic, so a reader re-encoding the values gets the
  same bytes (the check that binds a file's bytes to its values).
  """
  best = stream
  for cut in range(1, min(len(stream), MAX_TRIM) + 1):
    head = stream[:-cut]
    found = None
    for bump in TRIM_BUMPS:
      if bump and (not head or head[-1] + bump > 255):
        break
      candidate = head[:-1] + bytes([head[-1] + bump]) if bump else head
      if decodes_same(candidate):
        found = candidate
        break
    if found is None:
      break
    best = found
  return best


def encode(values, lo, counts):
  """(stream bytes, escaped values int64 [k]) for int values of any shape."""
  counts = np.asarray(counts)
  values = np.asarray(values).ravel()
  encoder = constriction.stream.queue.RangeEncoder()
  model, escaped = model_of(counts), []
  for start in range(0, values.size, CHUNK):  # One stream, as if coded at once.
    idx, out = to_indices(values[start:start + CHUNK], lo, len(counts))
    encoder.encode(idx, model)
    escaped.append(out)
  return stream_bytes(encoder), np.concatenate(escaped) if escaped else np.zeros(0, np.int64)


def decode(stream, num_values, lo, counts, escaped):
  """Inverse of encode: int64 [num_values]."""
  counts = np.asarray(counts)
  if num_values == 0:
    return np.zeros((0,), np.int64)
  try:
    decoder, model = stream_decoder(stream), model_of(counts)
    idx = np.empty(num_values, np.int64)
    for start in range(0, num_values, CHUNK):
      idx[start:start + CHUNK] = decoder.decode(model, min(CHUNK, num_values - start))
  except Exception as e:  # constriction reports a malformed stream in its own terms.
    raise ErpError(f'corrupt range-coded stream: {e}') from None
  escape = len(counts) - 1
  is_escape = idx == escape
  if int(is_escape.sum()) != len(escaped):
    raise ErpError(f'stream has {int(is_escape.sum())} escapes but the file stores '
                   f'{len(escaped)} escaped values')
  values = idx + lo
  values[is_escape] = escaped
  return values


def ideal_bits(values, lo, counts):
  """Sum of -log2 p(value) under the integer table (escapes at the escape symbol's cost)."""
  counts = np.asarray(counts, np.float64)
  idx, _ = to_indices(values, lo, len(counts))
  return float(-np.log2(counts[idx] / counts.sum()).sum())


# Table precisions tried when building a table: the one giving the smallest
# stored table + coded values wins (the loader accepts any power-of-two total).
PRECISIONS = tuple(range(8, 21))


def varint_bytes(n):
  """Bytes of unsigned LEB128 varints (container.Writer.varint), elementwise."""
  n = np.asarray(n, np.int64)
  return np.maximum(1, (np.floor(np.log2(np.maximum(n, 1))).astype(np.int64) + 7) // 7)


def sint_bytes(v):
  """Bytes of zigzag varints (container.Writer.sint), elementwise."""
  return varint_bytes(container.zigzag(np.asarray(v, np.int64)))


def stored_bytes(symbol_hist, lo, counts, escaped):
  """Bytes a group's table, escapes and coded symbols take (symbols at their ideal length).

  symbol_hist [len(counts)]: how often each symbol index (escape last) occurs.
  """
  counts = np.asarray(counts, np.float64)
  code_bits = float(-(symbol_hist * np.log2(counts / counts.sum())).sum())
  table = int(sint_bytes(lo)) + int(varint_bytes(len(counts))) + int(varint_bytes(counts).sum())
  escapes = int(varint_bytes(len(escaped))) + int(sint_bytes(escaped).sum())
  return code_bits / 8 + table + escapes


def _symbol_hist(values, lo, num_symbols):
  idx, escaped = to_indices(values, lo, num_symbols)
  return np.bincount(idx, minlength=num_symbols), escaped


def best_precision(pmf, values, lo):
  """Counts of pmf (escape last) at the precision in PRECISIONS that stores values smallest."""
  hist, escaped = _symbol_hist(values, lo, len(pmf))
  return best_counts(pmf, hist, lo, escaped)[1]


def best_counts(pmf, hist, lo, escaped):
  """(stored bytes, counts) of pmf at its best precision, for symbols with histogram hist."""
  best = None
  for precision in PRECISIONS:
    if len(pmf) > 1 << precision:
      continue
    counts = quantize_pmf(pmf, precision)
    cost = stored_bytes(hist, lo, counts, escaped)
    if best is None or cost < best[0]:
      best = (cost, counts)
  if best is None:
    raise ValueError(f'{len(pmf)} symbols do not fit a {PRECISIONS[-1]}-bit table')
  return best


def empirical_table(values, tail_fractions=(0.0, 1e-4, 1e-3, 1e-2)):
  """(lo, counts): the values' own histogram as the table, plus an escape symbol.

  The table is stored in the file, so the best pmf for it is the values' own
  frequencies. It covers a central range of the values (values outside are
  escaped and stored raw) and a precision, both chosen for the fewest bytes.
  """
  values = np.asarray(values, np.int64).ravel()
  if not values.size:
    return 0, quantize_pmf([1.0, 0.0], PRECISIONS[0])
  best = None
  for tail in tail_fractions:
    lo = int(np.quantile(values, tail / 2, method='lower'))
    hi = int(np.quantile(values, 1 - tail / 2, method='higher'))
    if hi - lo + 2 > MAX_TABLE:
      continue
    hist, escaped = _symbol_hist(values, lo, hi - lo + 2)
    cost, counts = best_counts(hist.astype(np.float64), hist, lo, escaped)
    if best is None or cost < best[0]:
      best = (cost, lo, counts)
  if best is None:
    raise ValueError(f'values span {values.min()}..{values.max()}: too wide for a table')
  return best[1], best[2]


def write_coded(writer, values, lo, counts):
  """Appends values coded with the table (lo, counts): the table, escapes, stream.

  Returns (stream bytes, escaped values). read_coded reads it back.
  """
  stream, escaped = encode(values, lo, counts)
  writer.sint(lo).varint(len(counts))
  for c in counts:
    writer.varint(c)
  writer.varint(len(escaped))
  for v in escaped:
    writer.sint(v)
  writer.blob(stream)
  return stream, escaped


def read_coded(reader, num_values, what, precision_limit=24):
  """(values int64 [num_values], stream bytes) that write_coded appended.

  A malformed table or stream is an ErpError naming `what`.
  """
  lo = reader.sint()
  num_symbols = reader.varint(MAX_TABLE)
  counts = np.array([reader.varint(1 << precision_limit) for _ in range(num_symbols)], np.int64)
  if num_symbols < 1 or counts.min() < 1:
    raise ErpError(f'{what}: invalid probability table')
  total = int(counts.sum())
  if total & (total - 1):
    raise ErpError(f'{what}: table counts sum to {total}, not a power of 2')
  escaped = np.array([reader.sint() for _ in range(reader.varint(num_values))], np.int64)
  stream = reader.blob()
  values = decode(stream, num_values, lo, counts, escaped)
  if encode(values, lo, counts)[0] != stream:  # Binds the bytes to what they decode to.
    raise ErpError(f'{what}: the stream is not the coding of the values it decodes to '
                   '(trailing or altered bytes)')
  return values, stream


def empirical_bits(values):
  """Total bits of values under their own histogram (n times its zeroth-order entropy).

  The least a code spends that prices each value alone from one fixed table,
  the table itself not counted: what a factorized prior, fitted perfectly,
  would estimate. A code that sees structure the histogram does not (the
  ACTIVE block, block-adaptive statistics: erp.latent_code) can spend less.
  """
  counts = np.unique(np.asarray(values), return_counts=True)[1]
  if counts.size < 2:
    return 0.0
  return float(-(counts * np.log2(counts / counts.sum())).sum())


def code_stats(coded_bits, values):
  """{coded_bits, bits_per_value, zero_fraction} of a leaf's code and its values."""
  values = np.asarray(values)
  return {'coded_bits': int(coded_bits), 'bits_per_value': coded_bits / max(values.size, 1),
          'zero_fraction': float((values == 0).mean()) if values.size else 0.0}
