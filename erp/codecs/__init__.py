"""Leaf codecs: one module per method, each holding its writer and its reader.

A file's header lists its leaves as [collection, path, codec, variant, shape];
each leaf's section is read by the codec it names, through this registry.
A codec module defines NAME, SECTION (the container section kind it writes),
read(payload, leaf) -> numpy array [leaf.shape] and describe(payload, leaf,
value) -> {stats}, value being what read decoded, and optionally work(payload,
leaf) -> the number of values its decoding allocates beyond the leaf's own (read
from the section's first bytes, before decoding). A codec whose leaves share one
code (surp_global), or whose codes refer to the leaf before (epr, format 9), defines
read_joint(payloads, leaves) (and work_joint, describe_joint(payloads, leaves, values) if
it needs them) instead of read, work and describe: all its leaves of a file are decoded
together, in file order.
Adding a method is one module here (and a line in CODECS) plus its training
procedure.
"""
import dataclasses

from erp.codecs import epr
from erp.codecs import float as float_codec
from erp.codecs import miracle
from erp.codecs import surp
from erp.codecs import surp_global
from erp.errors import ErpError

CODECS = {m.NAME: m for m in (epr, float_codec, surp, surp_global, miracle)}


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One leaf of a file: where it goes and how it is coded."""
  collection: str  # 'params', 'batch_stats', ...
  path: str  # '/'-joined keys inside the collection.
  codec: str  # A key of CODECS.
  variant: str  # Codec-specific: the EPR decoder ('affine' | 'dft'), else ''.
  shape: tuple
  version: int = 3  # The file format it was read from: codecs' payloads differ by version.

  @property
  def name(self):
    return f'{self.collection}/{self.path}'


def get(name):
  """The codec module called name; an unknown one is an ErpError."""
  if not isinstance(name, str) or name not in CODECS:
    raise ErpError(f'unknown codec {name!r}; known: {sorted(CODECS)}')
  return CODECS[name]


def _by_codec(leaves, payloads):
  """(single [(index, codec)], joint {codec: [index]}): how a file's leaves are decoded."""
  single, joint = [], {}
  for i, leaf in enumerate(leaves):
    codec = get(leaf.codec)
    if hasattr(codec, 'read_joint'):
      joint.setdefault(codec, []).append(i)
    else:
      single.append((i, codec))
  return single, joint


def read_all(leaves, payloads):
  """The decoded arrays of a file's leaves, in order."""
  single, joint = _by_codec(leaves, payloads)
  out = [None] * len(leaves)
  for i, codec in single:
    out[i] = codec.read(payloads[i], leaves[i])
  for codec, index in joint.items():
    for i, value in zip(index, codec.read_joint([payloads[i] for i in index],
                                                [leaves[i] for i in index])):
      out[i] = value
  return out


def work(leaves, payloads):
  """Values the decoding of a file's leaves allocates beyond their shapes (0 for most codecs)."""
  single, joint = _by_codec(leaves, payloads)
  total = sum(codec.work(payloads[i], leaves[i]) for i, codec in single
              if hasattr(codec, 'work'))
  return total + sum(codec.work_joint([payloads[i] for i in index], [leaves[i] for i in index])
                     for codec, index in joint.items() if hasattr(codec, 'work_joint'))


def describe_all(leaves, payloads, values):
  """[codec stats of each leaf] (values: what read_all decoded)."""
  single, joint = _by_codec(leaves, payloads)
  out = [None] * len(leaves)
  for i, codec in single:
    out[i] = codec.describe(payloads[i], leaves[i], values[i])
  for codec, index in joint.items():
    if hasattr(codec, 'describe_joint'):
      stats = codec.describe_joint([payloads[i] for i in index], [leaves[i] for i in index],
                                   [values[i] for i in index])
    else:
      stats = [codec.describe(payloads[i], leaves[i], values[i]) for i in index]
    for i, row in zip(index, stats):
      out[i] = row
  return out
