"""The code of one group's integers in a format-3+ file: flat (erp.flat_code), or ACTIVE.

    mode ACTIVE (format 5; head = ACTIVE, no lo): blob(code of the masks), code of the block

Trained EPR kernels are sparse along whole rows and columns (a LeNet5 file at
1.2 KB: 131 of fc1's 800 inputs and 63 of its 500 units carry a nonzero). ACTIVE
stores, for every axis, the mask of the indices whose slice holds a nonzero
(the masks' 0/1 concatenated, a flat code), then the block those masks cut
out, a flat code; the zeros outside it cost nothing. The writer takes it
when it is the fewer bytes (measured: 10-11 % of the committed LeNet files).

    mode ACTIVE_BASE (format 8; head = ACTIVE | 1 << 4): base:sint (!= 0), ACTIVE code of
    values - base

The writer tries base = the most frequent value. A last layer's kernel drifts under the
rate as a whole (softmax ignores a constant added to every logit, so a row of equal
values is free to the task): the LeNet5-Caffe record files' fc2 holds -1 where 0 is
meant, in every row of the 414-422 fc1 units no input reaches and most of the others.

    mode ACTIVE_REF (format 9; head = ACTIVE | 1 << 5, | 1 << 4 with a base as above):
    [base:sint] blob(blob(code) blob(code) code: the three referenced_flags) code of the block

Given a reference (erp.active.references: the previous kernel's output mask, repeated to
this group's input axis, view axis -2), the input mask is coded in two parts, where the
reference is False and where it is True, each on its own, beside the other axes' masks.
The units no input reaches leave their outgoing rows unused, so the LeNet5-Caffe files'
fc2 row mask becomes two constant codes (fc2 at lambda 10: 2,360 coded bits in format 8,
2,048 in 9; the files 42-46 B smaller, fc1's rows given conv2's channels included). The
reader is handed the same reference (erp.codecs.epr.read_groups decodes a file's groups
in order).
"""
import numpy as np

from erp import active
from erp import coding
from erp import container
from erp import flat_code
from erp.errors import ErpError

ACTIVE = flat_code.ACTIVE
ACTIVE_BASE = ACTIVE | 1 << 4  # Format 8: base != 0, then the ACTIVE code of values - base.
REF = 1 << 5  # Format 9: ACTIVE | REF, ACTIVE_BASE | REF: the input mask given a reference.
ACTIVE_HEADS = (ACTIVE, ACTIVE_BASE, ACTIVE | REF, ACTIVE_BASE | REF)


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


def write(writer, values, table=None, active=True, version=container.VERSION, reference=None):
  """Appends the code of int values (any shape, Fortran order) to a container.Writer.

  table: None (the writer picks the fewest bytes) or (lo, counts), a stored
  table to use, escape symbol last (e.g. the learned prior's, erp.codecs.epr).
  active=False: never ACTIVE (what an ACTIVE code holds). version: the format
  whose code to write (before 9: no ACTIVE_REF; before 8: no ACTIVE_BASE; before 7: no
  BINARIZED, untrimmed; for tests of old files). reference: bool [values.shape[-2]] or
  None, what ACTIVE_REF codes the input mask given. Returns {'stream': bytes after the
  head, 'mode': 0..7, TABLE, BINARIZED + a or ACTIVE (with a base, a reference or
  not), 'num_symbols', 'escapes'}.
  """
  values = np.asarray(values, np.int64)
  flat = values.ravel(order='F')
  best = flat_code.best(flat, version) if table is None else None
  if active and best is not None:
    references = [None]
    if (version >= 9 and reference is not None and values.ndim >= 2
        and np.shape(reference) == (values.shape[-2],)):
      references.append(np.asarray(reference, bool))
    plans = []
    for base in _bases(values, version):
      shifted = values - base
      masks = active_masks(shifted)
      block = shifted[np.ix_(*masks)].ravel(order='F')
      block_best = flat_code.best(block, version)
      for ref in references:  # The masks written (they are small): their exact bytes.
        parts = [np.concatenate(masks)] if ref is None else referenced_flags(masks, ref)
        inner = container.Writer()
        for i, flags in enumerate(parts):  # Each but the last in a blob of its own.
          flags = flags.astype(np.int64)
          part = inner if i == len(parts) - 1 else container.Writer()
          flat_code.write(part, flags, flat_code.best(flags, version), None, version)
          if part is not inner:
            inner.blob(part.getvalue())
        masks_blob = container.Writer().blob(inner.getvalue()).getvalue()
        num_bytes = len(masks_blob) + flat_code.num_bytes(block_best) + 1 \
            + (coding.sint_bytes(base).item() if base else 0)
        plans.append((num_bytes, base, ref is not None, masks_blob, block, block_best))
    num_bytes, base, referenced, masks_blob, block, block_best = min(plans, key=lambda p: p[0])
    close = abs(num_bytes - best[0]) < flat_code.EXACT_MARGIN_BYTES  # Then measure both.
    if num_bytes < best[0] or close:
      active_code = container.Writer()
      active_code.varint((ACTIVE_BASE if base else ACTIVE) | (REF if referenced else 0))
      if base:
        active_code.sint(base)
      active_code.raw(masks_blob)
      code = flat_code.write(active_code, block, block_best, None, version)
      active_bytes = active_code.getvalue()
      flat_bytes, flat_info = flat_code.written(flat, best, version) if close else (b'', None)
      if not close or len(active_bytes) < len(flat_bytes):
        writer.raw(active_bytes)
        return dict(code, stream=active_bytes[1:], mode=ACTIVE)
      writer.raw(flat_bytes)
      return flat_info
  return flat_code.write(writer, flat, best, table, version)


def read(reader, shape, what, active=True, version=container.VERSION, reference=None):
  """(int64 values [shape], stream bytes): the rest of reader's section is the code.

  active=False refuses ACTIVE (inside an ACTIVE code, and in files before format 5).
  version: the file's format (before 7: no BINARIZED modes, untrimmed streams).
  reference: what an ACTIVE_REF code's input mask is coded given (as write's).
  """
  shape = tuple(int(d) for d in shape)
  num_values = int(np.prod(shape))
  start = reader.pos
  head = reader.varint(coding.MAX_TABLE << 5)
  known = ACTIVE_HEADS[:2 if version < 9 else 4] if version >= 8 else (ACTIVE,)
  if head in known and active and num_values:
    if head & REF and (reference is None or len(shape) < 2
                       or np.shape(reference) != (shape[-2],)):
      raise ErpError(f'{what}: the code gives its input mask relative to the output mask of '
                     'the kernel before it, and there is no such kernel of matching size')
    base = reader.sint() if head & 1 << 4 else 0
    if head & 1 << 4 and not base:
      raise ErpError(f'{what}: malformed code head {head} (base 0)')
    values = _read_active(reader, shape, what, version,
                          np.asarray(reference, bool) if head & REF else None)
    return values + base, reader.data[start + 1:]
  values, stream = flat_code.read(reader, head, num_values, what, version)
  return values.reshape(shape, order='F'), stream


def _read_active(reader, shape, what, version, reference=None):
  """The values of an ACTIVE code: the masks (given reference: ACTIVE_REF), then the block
  they cut out; zeros elsewhere."""
  inner = container.Reader(reader.blob(), f'{what} (masks)')
  if reference is None:
    parts = [sum(shape)]
  else:
    parts = [sum(shape) - shape[-2], int((~reference).sum()), int(reference.sum())]
  flags = []
  for i, size in enumerate(parts):  # Each but the last in a blob of its own.
    part = inner if i == len(parts) - 1 else container.Reader(inner.blob(), f'{what} (masks)')
    flags.append(read(part, (size,), f'{what} (masks)', active=False, version=version)[0])
  flags = np.concatenate(flags)
  if flags.min(initial=0) < 0 or flags.max(initial=0) > 1:
    raise ErpError(f'{what}: active masks hold values other than 0 and 1')
  if reference is not None:  # Back to axis order: the input mask from its two parts.
    rest, unref, ref = np.split(flags, np.cumsum(parts)[:-1])
    inputs = np.zeros(shape[-2], np.int64)
    inputs[~reference], inputs[reference] = unref, ref
    split = sum(shape[:-2])
    flags = np.concatenate([rest[:split], inputs, rest[split:]])
  masks = np.split(flags.astype(bool), np.cumsum(shape)[:-1])
  block, _ = read(reader, tuple(int(m.sum()) for m in masks), what, active=False,
                  version=version)
  values = np.zeros(shape, np.int64)
  values[np.ix_(*masks)] = block
  if not all(np.array_equal(a, b) for a, b in zip(active_masks(values), masks)):
    raise ErpError(f'{what}: an active mask marks a slice with no nonzero value')
  return values
