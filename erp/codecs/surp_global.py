"""SuRP as its authors run it: one successive-refinement code of all of a model's tensors.

Isik, Weissman, No (AISTATS 2022), as their public code runs it
(github.com/BerivanIsik/SuRP, src/trainers/reconstruct.py and
recon_from_file.py): every parameter tensor is divided by its L2 norm and all
the magnitudes go into one vector under one threshold, so the threshold alone
decides how sparse each layer ends up. The threshold starts at alpha * the mean
nonzero magnitude (their ResNet-20 config: alpha = 10; VGG-16: 13), shrinks by
(n - 1) / n with every weight sent, and when no residual exceeds it, it is reset
to alpha * the mean nonzero residual, alpha shrinking by 0.9 every 20 resets.

What is erp.codecs.surp's, not theirs (the decoder must follow): the weight sent
is the next candidate after the previous one, so the code is the gap, coded
(they pick a random candidate and estimate the rate from a geometric model);
a reset is sent as j >= 1 steps of 2**(-1/8), the nearest step at or below
their value. In erp.codecs.surp's terms the decay is that of beta = n / e.

Sections, one per leaf in file order, each a GROUP: varint 1 for the first leaf,
which then carries the magnitude code of all leaves together
(erp.codecs.surp.write_magnitudes), 0 for the others; f32 the leaf's L2 norm;
the sign bits of its nonzero weights.
"""
import math

import numpy as np

from erp import coding
from erp import container
from erp.codecs import surp
from erp.errors import ErpError

NAME = 'surp_global'
SECTION = container.GROUP


def beta_of(n):
  """The beta whose decay n / (n - ln(n / beta)) is the authors' n / (n - 1)."""
  return float(np.float32(n / math.e))


def encode(tensors, sparsity, alpha, extra=0.0):
  """([payload bytes] one per tensor, stats): the tensors coded together to `sparsity` of
  all their weights, then extra * (iterations so far) refinement iterations."""
  flat = [np.asarray(w, np.float32).ravel() for w in tensors]
  norms = [np.float32(np.sqrt(np.sum(w.astype(np.float64)**2))) for w in flat]
  x = np.concatenate([np.abs(w.astype(np.float64)) / float(norm) if norm else np.zeros(w.size)
                      for w, norm in zip(flat, norms)])
  n = x.size
  total = np.float32(x.sum())
  beta = beta_of(n)
  if total == 0:
    gaps, refreshes = np.zeros(0, np.int64), np.zeros(0, np.int64)
  else:
    num_nonzero = min(int(np.ceil((1 - sparsity) * n)), int(np.count_nonzero(x)))
    gaps, refreshes = surp.encode_magnitudes(x / float(total), num_nonzero, beta, extra, alpha)
  decoded = surp.decode_magnitudes(n, beta, gaps, refreshes)
  head = container.Writer().varint(1)
  surp.write_magnitudes(head, total, beta, gaps, refreshes)
  payloads, start = [], 0
  for i, (w, norm) in enumerate(zip(flat, norms)):
    part = decoded[start:start + w.size]
    out = head if i == 0 else container.Writer().varint(0)
    out.f32([norm]).blob(surp.signs_blob(w, part))
    payloads.append(out.getvalue())
    start += w.size
  return payloads, {'iterations': int((gaps > 0).sum()), 'refreshes': len(refreshes),
                    'nonzero': [int(np.count_nonzero(decoded[s:s + w.size])) for s, w in
                                zip(np.cumsum([0] + [w.size for w in flat]), flat)],
                    'payload_bytes': [len(p) for p in payloads]}


def decode(payloads, shapes, what='surp_global'):
  """[float32 arrays] of encode's payloads, in the same order."""
  sizes = [math.prod(shape) for shape in shapes]
  readers = [container.Reader(p, f'{what} leaf {i}') for i, p in enumerate(payloads)]
  if not readers:
    return []
  carries = [r.varint(1) for r in readers]
  if carries != [1] + [0] * (len(readers) - 1):
    raise ErpError(f'{what}: the first leaf, and it alone, must carry the code; got {carries}')
  total, x = surp.read_magnitudes(readers[0], sum(sizes), what)
  out, start = [], 0
  for r, size, shape in zip(readers, sizes, shapes):
    norm = float(r.f32(1)[0])
    if not (np.isfinite(norm) and norm >= 0):
      raise ErpError(f'{r.what}: invalid norm {norm}')
    value = surp.apply_signs(x[start:start + size], r.blob(), r.what) * total * norm
    r.done()
    out.append(value.astype(np.float32).reshape(shape))
    start += size
  return out


def read_joint(payloads, leaves):
  return decode(payloads, [tuple(leaf.shape) for leaf in leaves],
                f'surp_global group {leaves[0].path}')


def work_joint(payloads, leaves):
  """The iterations the first leaf declares, in values (erp.file's budget, before decoding)."""
  reader = container.Reader(payloads[0], f'surp_global group {leaves[0].path}')
  if reader.varint(1) != 1:
    return 0  # decode refuses it.
  n = sum(math.prod(leaf.shape) for leaf in leaves)
  return surp.WORK_PER_ITERATION * surp.read_head(reader, n)[2]


def describe(payload, leaf, value):
  """The first leaf's section holds the code of all of them: its bits are theirs."""
  return coding.code_stats(8 * len(payload), value)
