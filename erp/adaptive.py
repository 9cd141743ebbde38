"""Block-adaptive range coding of integer symbols: the file stores no table.

Symbols in [0, K) are coded in blocks of growing size (1, 2, 3, 5, 8, ...:
each 1.5x the last), block j with the frequencies of every symbol before it
plus alpha (an additive, Krichevsky-Trofimov-style estimator; KT is alpha =
1/2). For exchangeable symbols this costs about (K - 1)/2 * log2(n) bits more
than their empirical entropy, with no side information: on the LeNet5 files
of erp 0.2 that is 102 bytes in all where their stored tables took 216. The
model changes only between blocks, so each block is one vectorized call to
the coder (constriction), and about log1.5(n) tables are built in all.

Each block's table is quantize_pmf(counts + alpha) at TABLE_PRECISION: integer
arithmetic from exact float64 inputs, so encoder and decoder build the same
tables on any machine and with any constriction version.
"""
import numpy as np

from erp import coding

ALPHA_EXPONENTS = tuple(range(8))  # alpha = 2**-a.
TABLE_PRECISION = 20  # Every block's table sums to 2**20.


def block_bounds(n):
  """[(start, end)] of the blocks of n symbols: sizes 1, 2, 3, 5, 8, 12, ..."""
  out, start, size = [], 0, 1
  while start < n:
    out.append((start, min(n, start + size)))
    start, size = start + size, size + (size + 1) // 2
  return out


def tables(block_hists, alpha_exponent):
  """int counts [num_blocks, K]: the table each block is coded with."""
  alpha = 2.0**-alpha_exponent
  seen = np.cumsum(block_hists, axis=0) - block_hists  # Frequencies before each block.
  return np.stack([coding.quantize_pmf(row + alpha, TABLE_PRECISION) for row in seen])


def block_histograms(symbols, num_symbols):
  """int64 [num_blocks, K]: how often each symbol occurs in each block."""
  return np.stack([np.bincount(symbols[start:end], minlength=num_symbols)
                   for start, end in block_bounds(len(symbols))])


def best_alpha(symbols, num_symbols):
  """(alpha exponent, bits): the ALPHA_EXPONENTS entry coding symbols in the fewest bits."""
  hists = block_histograms(symbols, num_symbols)
  best = None
  for a in ALPHA_EXPONENTS:
    counts = tables(hists, a)
    bits = float(-(hists * (np.log2(counts) - TABLE_PRECISION)).sum())
    if best is None or bits < best[1]:
      best = (a, bits)
  return best


def encode_into(encoder, symbols, num_symbols, alpha_exponent):
  """Appends the code of int symbols [n] in [0, num_symbols) to a constriction RangeEncoder."""
  symbols = np.asarray(symbols, np.int32)
  counts = tables(block_histograms(symbols, num_symbols), alpha_exponent)
  for (start, end), row in zip(block_bounds(len(symbols)), counts):
    encoder.encode(symbols[start:end], coding.model_of(row))


def decode_from(decoder, num_values, num_symbols, alpha_exponent):
  """int64 symbols [num_values] that encode_into appended, read from a RangeDecoder."""
  alpha = 2.0**-alpha_exponent
  seen = np.zeros(num_symbols, np.int64)
  out = np.empty(num_values, np.int64)
  for start, end in block_bounds(num_values):
    counts = coding.quantize_pmf(seen + alpha, TABLE_PRECISION)
    block = decoder.decode(coding.model_of(counts), end - start)
    out[start:end] = block
    seen += np.bincount(block, minlength=num_symbols)[:num_symbols]
  return out


def encode(symbols, num_symbols, alpha_exponent):
  """Stream bytes of int symbols [n] in [0, num_symbols)."""
  import constriction
  encoder = constriction.stream.queue.RangeEncoder()
  encode_into(encoder, symbols, num_symbols, alpha_exponent)
  return coding.stream_bytes(encoder)


def decode(stream, num_values, num_symbols, alpha_exponent):
  """int64 symbols [num_values] of a stream encode wrote; raises what constriction raises."""
  return decode_from(coding.stream_decoder(stream), num_values, num_symbols, alpha_exponent)
