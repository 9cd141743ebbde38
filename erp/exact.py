"""exp and log of float64 arrays from IEEE float64 operations alone: the same bits everywhere.

libm and NumPy pick vectorized variants of exp/log/cos by the CPU's ISA, and
XLA's differ again by backend, in the last bit. A file's weights must not, so
the decoders (erp.reparam.decode_exact, erp.codecs.miracle) use these: range
reduction and a fixed polynomial, every step one correctly rounded +, -, *, /
or sqrt, in a fixed order. Accurate to a few float64 ulps; results are then
rounded to float32 once.
"""
import math

import numpy as np

from erp.errors import ErpError

# ln 2 split so that k * LN2_HI is exact for |k| < 2**21 (Cephes' constants).
LN2_HI, LN2_LO = 0.693145751953125, 1.4286068203094173e-06


def exp(x):
  """e**x; x = k ln2 + r, |r| <= ln2 / 2, Taylor series of e**r to r**17 / 17!."""
  x = np.asarray(x, np.float64)
  if not np.all(np.isfinite(x)):
    raise ErpError('exp of a non-finite value')
  if x.ndim == 0:  # A decoder's one step: the same IEEE operations on Python floats, ~20x faster.
    return np.float64(_exp_scalar(float(x)))
  x = np.clip(x, -800.0, 800.0)  # Beyond float64's range: saturates to 0 or inf.
  k = np.round(x / (LN2_HI + LN2_LO))
  r = (x - k * LN2_HI) - k * LN2_LO
  term, total = np.ones_like(r), np.ones_like(r)
  for i in range(1, 18):
    term = term * r / i
    total = total + term
  with np.errstate(over='ignore'):
    return np.ldexp(total, k.astype(np.int64))


def _exp_scalar(x):
  x = min(max(x, -800.0), 800.0)
  k = round(x / (LN2_HI + LN2_LO))  # Half to even, as np.round.
  r = (x - k * LN2_HI) - k * LN2_LO
  term = total = 1.0
  for i in range(1, 18):
    term = term * r / i
    total = total + term
  try:
    return math.ldexp(total, k)
  except OverflowError:
    return math.inf


def log(x):
  """ln x for x > 0; x = m 2**e, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1))."""
  x = np.asarray(x, np.float64)
  if not np.all((x > 0) & np.isfinite(x)):
    raise ErpError('log of a value that is not finite and positive')
  m, e = np.frexp(x)  # m in [1/2, 1).
  low = m < np.sqrt(0.5)
  m = np.where(low, 2 * m, m)  # Exact (a power of two).
  e = np.where(low, e - 1, e).astype(np.float64)
  s = (m - 1) / (m + 1)  # |s| <= 0.1716: s**2 <= 0.0295.
  s2 = s * s
  series = np.zeros_like(s)
  for k in range(12, 0, -1):  # sum_{k<=12} s**(2k) / (2k + 1); the rest is < 1e-19.
    series = (series + 1.0 / (2 * k + 1)) * s2
  return (e * LN2_HI + (2 * s + 2 * s * series)) + e * LN2_LO
