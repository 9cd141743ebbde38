"""SuRP's successive-refinement code of one weight tensor: encoder, decoder, payload.

Isik, No, Weissman, "An Information-Theoretic Justification for Model Pruning"
(AISTATS 2022; arXiv 2102.08329, first titled "Successive Pruning for Model
Compression via Rate Distortion Theory"), the successive-refinement algorithm
for Laplacian sources it builds on. The magnitudes x = |w| / ||w||_1 of a
tensor of n weights are modelled as exponential with rate lambda (= n at
start). Each iteration k has the threshold

    T_k = ln(n / beta) / lambda_k,   so P(x > T_k) = beta / n:

about beta magnitudes exceed it. The encoder sends one of them, i, the decoder
adds T_k to its reconstruction of x_i, the encoder subtracts T_k from x_i's
residual, and both shrink the threshold, lambda_{k+1} = lambda_k * n / (n -
ln(n / beta)), the rate of the residual after one such step. A weight never
sent stays exactly zero: the code is a pruned model, and sending more
iterations refines it.

Our choices where the paper leaves room (stated, not the authors' code):
* Which candidate is sent: the first index after the previously sent one
  (cyclically), so what is sent is the gap between them, ~geometric with mean
  n / beta, i.e. ~log2(n / beta) + 1.4 bits instead of log2(n).
* How gaps are coded: their bit length (0 marks a lambda refresh) is
  range-coded with its own histogram (erp.coding.empirical_table), the bits
  below the leading one are stored raw; within ~0.1 bit of the gaps' entropy.
* Signs: one raw bit per nonzero weight, in index order.
* When no residual exceeds the threshold. The lambda update shrinks T_k by a
  factor ~1 - ln(n/beta)/n per iteration, which brings ~beta ln(n/beta)^2 / n
  <= 4/e^2 < 1 new candidates per iteration for an exponential x, so the
  ~beta candidates run out and the residual is no longer the exponential the
  update assumes (it is cut off at T). Re-estimating lambda from the residual's
  mean gives about the same threshold back (nothing exceeds it again), so we
  match the tail the threshold rule assumes instead:
  the encoder sends the smallest integer j >= 1 with beta residuals above
  T * 2**(-j/8), and both continue from that threshold. The j are range-coded.
  The code starts with such a refresh (j of either sign) from ln(n/beta)/n,
  so a tensor that is already sparse (a retrained pruned one, whose mean
  magnitude says little about its surviving weights) starts at its tail too.

Payload of a 'surp' GROUP section: f32 ||w||_1, f32 beta, varint iterations,
coded bit lengths of the gaps (erp.coding.write_coded), their low bits, the
coded refresh steps j, the sign bits.
"""
import math

import numpy as np

from erp import coding
from erp import container
from erp.errors import ErpError

NAME = 'surp'
SECTION = container.GROUP
MAX_ITERATIONS_PER_WEIGHT = 16  # Writer and reader; committed files use <= 0.27 per weight.
REFRESH_STEPS = 8  # A refresh step j lowers the threshold by 2**(-j / REFRESH_STEPS).


def growth(n, beta):
  """lambda_{k+1} / lambda_k."""
  return n / (n - np.log(n / beta))


def _find_next(residual, pos, threshold, chunk):
  """First index after pos (cyclically) whose residual exceeds threshold, or -1."""
  n = residual.size
  scanned = 0
  while scanned < n:
    start = (pos + 1 + scanned) % n
    stop = min(start + chunk, n, start + n - scanned)
    hit = np.flatnonzero(residual[start:stop] > threshold)
    if hit.size:
      return start + int(hit[0])
    scanned += stop - start
  return -1


def encode_magnitudes(x, num_nonzero, beta, extra=0.0, alpha=None):
  """(gaps int64 [k], refresh steps int64 [r]) describing x (>= 0, summing to 1).

  Iterates until num_nonzero weights are nonzero, then extra * (iterations so
  far) more refinement iterations. gaps[k] = 0 marks a refresh. alpha None:
  a refresh matches the tail (above); else it lowers the threshold to alpha *
  the mean nonzero residual, alpha shrinking by 0.9 every 20 refreshes, at
  least one step after the first (the authors' reset, erp.codecs.surp_global).
  """
  n = x.size
  if not 0 < beta < n:
    raise ValueError(f'need 0 < beta < n = {n}, got {beta}')
  if alpha is not None and not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f'need alpha > 0, got {alpha}')
  residual = np.asarray(x, np.float64).copy()
  is_sent = np.zeros(n, bool)
  rank = min(int(np.ceil(beta)), n)
  chunk = max(256, int(4 * n / beta))
  gaps, refreshes = [], []
  refresh_total, steps, pos, sent, stop_at = 0, 0, -1, 0, None
  for _ in range(MAX_ITERATIONS_PER_WEIGHT * n):
    if stop_at is None and sent >= num_nonzero:
      stop_at = len(gaps) + int(round(extra * len(gaps)))
    if stop_at is not None and len(gaps) >= stop_at:
      break
    threshold = threshold_at(n, beta, refresh_total, steps)
    i = _find_next(residual, pos, threshold, chunk) if gaps else -1
    if i < 0:
      positive = residual[residual > 0]
      if not positive.size:
        break  # Nothing left to describe.
      if alpha is None:
        k = min(rank, positive.size)
        target = np.partition(positive, positive.size - k)[positive.size - k]
        j = int(np.floor(REFRESH_STEPS * np.log2(threshold / target))) + 1
      else:
        target = alpha * 0.9**(len(refreshes) // 20) * positive.mean()
        j = int(np.ceil(REFRESH_STEPS * np.log2(threshold / target)))
        j = max(j, 1) if refreshes else j
      gaps.append(0)
      refreshes.append(j)
      refresh_total, steps = refresh_total + j, 0
      continue
    gaps.append((i - pos) % n or n)
    residual[i] -= threshold
    sent += not is_sent[i]
    is_sent[i] = True
    pos, steps = i, steps + 1
  return np.asarray(gaps, np.int64), np.asarray(refreshes, np.int64)


def threshold_at(n, beta, refresh_total, steps):
  """T after refreshes summing to refresh_total and `steps` sends since the last one."""
  return np.log(n / beta) / (n * 2.0**(refresh_total / REFRESH_STEPS)
                             * growth(n, beta)**steps)


def decode_magnitudes(n, beta, gaps, refreshes):
  """The decoder's reconstruction of x [n] (float64) from the gaps and refresh steps."""
  gaps, refreshes = np.asarray(gaps, np.int64), np.asarray(refreshes, np.int64)
  is_refresh = gaps == 0
  if int(is_refresh.sum()) != len(refreshes):
    raise ErpError(f'surp code has {int(is_refresh.sum())} refreshes but {len(refreshes)} '
                   'refresh steps')
  if np.any(gaps < 0) or np.any(gaps > n) or np.any(refreshes[1:] < 1) or (
      len(gaps) and gaps[0] != 0):
    raise ErpError('surp code: gap or refresh step out of range')
  # Segment s (after s refreshes) starts at the threshold of the refresh total so
  # far; the j-th send in it uses threshold_at(.., total_s, j).
  segment = np.cumsum(is_refresh)
  total = np.concatenate([[0], np.cumsum(refreshes)])[segment]
  sends = ~is_refresh
  sends_before = np.cumsum(sends) - sends
  first_send = np.concatenate([[0], sends_before[is_refresh]])[segment]
  thresholds = threshold_at(n, beta, total, sends_before - first_send)
  positions = (np.cumsum(gaps) - 1) % n
  x = np.zeros(n)
  np.add.at(x, positions[sends], thresholds[sends])
  return x


def _pack_low_bits(gaps):
  """Bits below the leading one of every gap >= 2, MSB first, packed into bytes."""
  widths = np.maximum(_bit_length(gaps) - 1, 0)
  offsets = np.concatenate([[0], np.cumsum(widths)])
  bits = np.zeros(int(offsets[-1]), np.uint8)
  for t in range(int(widths.max(initial=0))):
    has = widths > t
    bits[offsets[:-1][has] + t] = (gaps[has] >> (widths[has] - 1 - t)) & 1
  return np.packbits(bits).tobytes()


def _unpack_low_bits(lengths, blob):
  """Gaps from their bit lengths and _pack_low_bits's bytes."""
  widths = np.maximum(lengths - 1, 0)
  offsets = np.concatenate([[0], np.cumsum(widths)])
  if len(blob) != (int(offsets[-1]) + 7) // 8:
    raise ErpError(f'surp code: {len(blob)} bytes of gap bits, expected '
                   f'{(int(offsets[-1]) + 7) // 8}')
  bits = np.unpackbits(np.frombuffer(blob, np.uint8)).astype(np.int64)
  gaps = np.where(lengths > 0, np.int64(1) << np.maximum(lengths - 1, 0), 0)
  for t in range(int(widths.max(initial=0))):
    has = widths > t
    gaps[has] |= bits[offsets[:-1][has] + t] << (widths[has] - 1 - t)
  return gaps


def _bit_length(v):
  v = np.asarray(v, np.int64)
  return np.where(v > 0, np.floor(np.log2(np.maximum(v, 1))).astype(np.int64) + 1, 0)


def write_magnitudes(out, l1, beta, gaps, refreshes):
  """Appends the magnitude code to a container.Writer: f32 l1 and beta, the gaps, the refreshes."""
  lengths = _bit_length(gaps)
  out.f32([l1, beta]).varint(len(gaps))
  coding.write_coded(out, lengths, *coding.empirical_table(lengths))
  out.blob(_pack_low_bits(gaps))
  out.varint(len(refreshes))
  coding.write_coded(out, refreshes, *coding.empirical_table(refreshes))


def read_magnitudes(r, n, what):
  """(l1, x float64 [n]) of write_magnitudes's code, read from a container.Reader."""
  l1, beta, num_gaps = read_head(r, n)
  lengths, _ = coding.read_coded(r, num_gaps, what)
  if np.any(lengths < 0) or np.any(lengths > n.bit_length()):
    raise ErpError(f'{what}: gap length out of range')
  gaps = _unpack_low_bits(lengths, r.blob())
  refreshes, _ = coding.read_coded(r, r.varint(num_gaps), what)
  if not (np.isfinite(l1) and l1 >= 0 and np.isfinite(beta) and 0 < beta < max(n, 1)):
    raise ErpError(f'{what}: invalid norm {l1} or beta {beta}')
  return l1, decode_magnitudes(n, beta, gaps, refreshes) if num_gaps else np.zeros(n)


def signs_blob(w, x):
  """One bit per nonzero of x (in index order): whether w is negative there."""
  return np.packbits(np.asarray(w)[np.flatnonzero(x)] < 0).tobytes()


def apply_signs(x, blob, what):
  """x with the signs of signs_blob applied (float64)."""
  nonzero = np.flatnonzero(x)
  if len(blob) != (len(nonzero) + 7) // 8:
    raise ErpError(f'{what}: {len(blob)} bytes of signs for {len(nonzero)} nonzero weights')
  negative = np.unpackbits(np.frombuffer(blob, np.uint8))[:len(nonzero)].astype(bool)
  out = np.zeros(x.size)
  out[nonzero] = np.where(negative, -x[nonzero], x[nonzero])
  return out


def encode_tensor(w, sparsity, beta, extra=0.0):
  """(payload bytes, stats) of a weight tensor coded to the given sparsity."""
  w = np.asarray(w, np.float32).ravel()
  l1 = np.float32(np.abs(w.astype(np.float64)).sum())
  beta = float(np.float32(beta))
  if l1 == 0:
    gaps, refreshes = np.zeros(0, np.int64), np.zeros(0, np.int64)
  else:
    num_nonzero = min(int(np.ceil((1 - sparsity) * w.size)), int(np.count_nonzero(w)))
    gaps, refreshes = encode_magnitudes(np.abs(w.astype(np.float64)) / float(l1), num_nonzero,
                                      beta, extra)
  x = decode_magnitudes(w.size, beta, gaps, refreshes)
  out = container.Writer()
  write_magnitudes(out, l1, beta, gaps, refreshes)
  out.blob(signs_blob(w, x))
  payload = out.getvalue()
  return payload, {'iterations': int((gaps > 0).sum()), 'refreshes': len(refreshes),
                   'nonzero': int(np.count_nonzero(x)), 'payload_bytes': len(payload)}


def decode_tensor(payload, shape, what='surp group'):
  """float32 [shape] from encode_tensor's payload."""
  n = int(np.prod(shape))
  r = container.Reader(payload, what)
  l1, x = read_magnitudes(r, n, what)
  signs = r.blob()
  r.done()
  return (apply_signs(x, signs, what) * l1).astype(np.float32).reshape(shape)


WORK_PER_ITERATION = 4  # Decoding holds ~80 bytes per iteration, four values' worth.


def read_head(r, n):
  """(||w||_1, beta, iterations) at the start of a section, iterations bounded per weight."""
  l1, beta = (float(v) for v in r.f32(2))
  return l1, beta, r.varint(MAX_ITERATIONS_PER_WEIGHT * max(n, 1))


def work(payload, leaf):
  """The iterations the section declares, in values (erp.file's budget), before decoding."""
  reader = container.Reader(payload, f'surp group {leaf.path}')
  return WORK_PER_ITERATION * read_head(reader, math.prod(leaf.shape))[2]


def read(payload, leaf):
  return decode_tensor(payload, tuple(leaf.shape), f'surp group {leaf.path}')


def describe(payload, leaf, value):
  """The whole section is the code; value: what read() decoded from it."""
  return coding.code_stats(8 * len(payload), value)
