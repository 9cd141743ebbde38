"""Leaf codecs: one module per method, each holding its writer and its reader.

A file's header lists its leaves as [collection, path, codec, variant, shape];
each leaf's section is read by the codec it names, through this registry.
A codec module defines NAME, SECTION (the container section kind it writes),
read(payload, leaf) -> numpy array [leaf.shape] and describe(payload, leaf,
value) -> {stats}, value being what read decoded, and optionally work(payload,
leaf) -> the number of values its decoding allocates beyond the leaf's own (read
from the section's first bytes, before decoding). Adding a method is one module
here (and a line in CODECS) plus its training procedure.
"""
import dataclasses

from erp.codecs import epr
from erp.codecs import float as float_codec
from erp.codecs import miracle
from erp.codecs import surp
from erp.errors import ErpError

CODECS = {m.NAME: m for m in (epr, float_codec, surp, miracle)}


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


def read(payload, leaf):
  """The decoded array of one leaf's section."""
  return get(leaf.codec).read(payload, leaf)


def work(payload, leaf):
  """Values a leaf's decoding allocates beyond leaf.shape (0 for most codecs)."""
  codec = get(leaf.codec)
  return codec.work(payload, leaf) if hasattr(codec, 'work') else 0
