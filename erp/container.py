"""The .erp file format: bytes in and out, with checks. No pickle; nothing executes on load.

Formats 3-9 (9 is what write produces; all integers unsigned LEB128 varints;
they differ only inside EPR payloads, erp.codecs.epr and erp.latent_code, and
in format 6's header dictionary, which 7 keeps):

    magic b'\x89ERP'  version:u8  length header[length]  (length payload[length])*
    crc32 of every byte before it:u32le

The header is JSON, raw-deflated with a preset dictionary (erp.header_dictionary:
the names and structures of common models' leaves), so a LeNet's header takes
7-8 bytes rather than ~160; any header is valid, an unusual one just
compresses less. One payload per leaf, in header order; what the header and
payloads hold is erp.file's and the codecs' business. 9 bytes of framing in all.

Formats 1-2 (erp 0.1-0.2), still read: a zlib header section, then sections
kind:u8 length payload crc32(payload):u32le (HEADER, GROUP or FLOAT), then
the file's crc32.
"""
import json
import struct
import zlib

import numpy as np

from erp.errors import ErpError
from erp import header_dictionary

MAGIC = b'\x89ERP'
VERSION = 9  # What write produces; read accepts VERSIONS.
VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
HEADER, GROUP, FLOAT = 1, 2, 3
_KIND_NAMES = {HEADER: 'header', GROUP: 'group', FLOAT: 'float'}
MAX_HEADER_BYTES = 16 << 20  # Inflated; a ResNet-50 header is ~30 KB.


def zigzag(n):
  """Signed to unsigned, small magnitudes small (0, -1, 1, -2 -> 0, 1, 2, 3): the form a
  sint is stored in. Python ints of any size, or int64 arrays elementwise."""
  return 2 * abs(n) - (n < 0)


def unzigzag(n):
  """The inverse of zigzag."""
  return (n >> 1) ^ -(n & 1)


class Writer:
  """Appends varints, zigzag ints, float32 arrays and length-prefixed bytes."""

  def __init__(self):
    self.buf = bytearray()

  def varint(self, n):
    n = int(n)
    if n < 0:
      raise ValueError('varint must be non-negative')
    while True:
      byte, n = n & 0x7F, n >> 7
      self.buf.append(byte | (0x80 if n else 0))
      if not n:
        return self

  def sint(self, n):
    n = int(n)
    return self.varint(zigzag(n))

  def raw(self, b):
    self.buf += b
    return self

  def blob(self, b):
    return self.varint(len(b)).raw(b)

  def f32(self, array):
    return self.raw(np.asarray(array, '<f4').tobytes())

  def getvalue(self):
    return bytes(self.buf)


class Reader:
  """Reads what Writer wrote; any overrun or malformed value raises ErpError."""

  def __init__(self, data, what):
    self.data, self.pos, self.what = data, 0, what

  def _need(self, n):
    if n < 0 or self.pos + n > len(self.data):
      raise ErpError(f'{self.what}: truncated (needs {n} bytes at offset {self.pos}, '
                     f'has {len(self.data) - self.pos})')

  def varint(self, limit=1 << 40):
    n, shift = 0, 0
    while True:
      self._need(1)
      byte = self.data[self.pos]
      self.pos += 1
      n |= (byte & 0x7F) << shift
      shift += 7
      if not byte & 0x80:
        break
      if shift > 63:
        raise ErpError(f'{self.what}: malformed varint at offset {self.pos}')
    if n > limit:
      raise ErpError(f'{self.what}: value {n} exceeds limit {limit} at offset {self.pos}')
    return n

  def sint(self, limit=1 << 40):
    n = self.varint(2 * limit + 1)
    return unzigzag(n)

  def raw(self, n):
    self._need(n)
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def blob(self):
    return self.raw(self.varint(len(self.data)))

  def f32(self, count):
    return np.frombuffer(self.raw(4 * count), '<f4').copy()

  def done(self):
    if self.pos != len(self.data):
      raise ErpError(f'{self.what}: {len(self.data) - self.pos} unexpected trailing bytes')


def _json(header):
  return json.dumps(header, separators=(',', ':'), sort_keys=True).encode()


def write(header, sections, version=VERSION):
  """bytes of a file: header dict + [(kind, payload bytes)] in header order.

  Formats 3-7 store no kinds (the header names each leaf's codec); version 2
  is kept for tests that craft files of the old format.
  """
  w = Writer().raw(MAGIC).raw(bytes([version]))
  if version >= 3:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9,
                               zdict=header_dictionary.for_version(version))
    w.blob(deflate.compress(_json(header)) + deflate.flush())
    for _, payload in sections:
      w.blob(payload)
  else:
    for kind, payload in [(HEADER, zlib.compress(_json(header), 9))] + list(sections):
      w.raw(bytes([kind])).blob(payload).raw(struct.pack('<I', zlib.crc32(payload)))
  data = w.getvalue()
  return data + struct.pack('<I', zlib.crc32(data))


def _no_duplicates(pairs):
  keys = [k for k, _ in pairs]
  if len(set(keys)) != len(keys):
    raise ValueError(f'duplicate key in header object: {sorted(keys)}')
  return dict(pairs)


def read(data):
  """(version, header dict, [(kind, payload bytes)]) of a file's bytes, all checks passed."""
  if not isinstance(data, (bytes, bytearray)):
    raise ErpError('expected the bytes of an .erp file')
  data = bytes(data)
  if len(data) < len(MAGIC) + 1 + 4 or data[:len(MAGIC)] != MAGIC:
    raise ErpError('not an erp model file (bad magic bytes)')
  version = data[len(MAGIC)]
  if version not in VERSIONS:
    raise ErpError(f'unsupported erp file format version {version} (this erp reads '
                   f'{", ".join(map(str, VERSIONS))})')
  (stored_crc,) = struct.unpack('<I', data[-4:])
  if zlib.crc32(data[:-4]) != stored_crc:
    raise ErpError('file checksum mismatch: the file is truncated or corrupted')
  r = Reader(data[:-4], 'erp file')
  r.raw(len(MAGIC) + 1)
  if version >= 3:
    header = _inflate(r.blob(), zlib.decompressobj(
        -15, zdict=header_dictionary.for_version(version)))
    sections = []
    while r.pos < len(r.data):
      sections.append((None, r.blob()))
    return version, header, sections
  sections = []
  while r.pos < len(r.data):
    kind = r.raw(1)[0]
    if kind not in _KIND_NAMES:
      raise ErpError(f'unknown section kind {kind} at offset {r.pos - 1}')
    payload = r.blob()
    (crc,) = struct.unpack('<I', r.raw(4))
    if zlib.crc32(payload) != crc:
      raise ErpError(f'{_KIND_NAMES[kind]} section {len(sections)} checksum mismatch')
    sections.append((kind, payload))
  if not sections or sections[0][0] != HEADER:
    raise ErpError('file has no header section')
  return version, _inflate(sections[0][1], zlib.decompressobj()), sections[1:]


def _inflate(blob, inflater):
  """The header dict of its compressed bytes, inflating at most MAX_HEADER_BYTES."""
  try:
    text = inflater.decompress(blob, MAX_HEADER_BYTES + 1)
    if len(text) > MAX_HEADER_BYTES or inflater.unconsumed_tail:
      raise ErpError(f'malformed header: inflates to more than {MAX_HEADER_BYTES} bytes')
    if not inflater.eof or inflater.unused_data:
      raise ErpError('malformed header: truncated or followed by stray bytes')
    header = json.loads(text.decode(), object_pairs_hook=_no_duplicates)
  except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as e:
    raise ErpError(f'malformed header: {type(e).__name__}: {e}') from None
  if not isinstance(header, dict):
    raise ErpError('malformed header: not a JSON object')
  return header
