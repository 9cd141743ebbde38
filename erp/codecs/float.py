"""Uncompressed leaves: raw little-endian values at a stored dtype.

Normalization params and statistics stay float (erp.leaves); they are stored
at their own precision unless the writer asks for another (e.g. float16), and
counted in the file size like everything else.
"""
import ml_dtypes
import numpy as np

from erp import container
from erp.errors import ErpError

NAME = 'float'
SECTION = container.FLOAT
DTYPES = {
    'float32': np.dtype('<f4'), 'float16': np.dtype('<f2'), 'float64': np.dtype('<f8'),
    'bfloat16': np.dtype(ml_dtypes.bfloat16), 'int32': np.dtype('<i4'),
    'int64': np.dtype('<i8'), 'uint32': np.dtype('<u4'), 'int8': np.dtype('i1'),
    'uint8': np.dtype('u1'), 'bool': np.dtype('?'),
}
LOW_PRECISION = ('float16', 'bfloat16')  # Decoded to float32, the compute dtype.


def dtype_name(dtype):
  """The DTYPES name of a numpy/jax dtype; unsupported ones are an ErpError."""
  name = np.dtype(dtype).name
  if name not in DTYPES:
    raise ErpError(f'cannot store dtype {name}; supported: {sorted(DTYPES)}')
  return name


def write(value, dtype=None):
  """(payload, stored dtype name) of an array, at dtype (default: its own)."""
  value = np.asarray(value)
  name = dtype_name(dtype or value.dtype)
  return np.ascontiguousarray(value.astype(DTYPES[name])).tobytes(), name


def decoded_dtype(stored):
  return 'float32' if stored in LOW_PRECISION else stored


def read(payload, leaf):
  stored = leaf.variant
  if stored not in DTYPES:
    raise ErpError(f'leaf {leaf.name}: unknown float dtype {stored!r}')
  count = int(np.prod(leaf.shape))
  expected = count * DTYPES[stored].itemsize
  if len(payload) != expected:
    raise ErpError(f'leaf {leaf.name}: {len(payload)} bytes, expected {expected} '
                   f'for shape {tuple(leaf.shape)} in {stored}')
  value = np.frombuffer(payload, DTYPES[stored]).reshape(leaf.shape)
  return value.astype(np.dtype(decoded_dtype(stored)).newbyteorder('='))


def describe(payload, leaf, value):
  return {'stored_dtype': leaf.variant}
