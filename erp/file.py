"""The .erp file of an EprState: save, and load it back from the file alone.

Formats 2-9 (erp.container frames them): the header lists every leaf as
[collection, path, codec, variant, shape], which is all decoding needs, plus
optional JSON metadata that decoding never reads; one section per leaf, read
by its codec (erp.codecs). No model registry, config schema or dataset is
needed to decode, and no local path is stored unless the metadata holds one.
Format 3 (erp 0.3) differs in its framing and the EPR payloads (compact
decoders and codes); formats 4-7 only in how a DFT leaf stores its steps and
latents (erp.codecs.epr), the ACTIVE code (5), the header dictionary (6) and
the binarized code and trimmed streams (7, erp.latent_code), ACTIVE_BASE (8), and
ACTIVE_REF (9: a kernel's input mask given the output mask of the one before;
erp.codecs.epr.read_groups).
Format v1 files (erp 0.1: header with model, config diff
and [collection, kind, path, shape] rows) are read by translating their header.
"""
import json
import math
import os
import stat

import numpy as np

from erp import active
from erp import codecs
from erp import container
from erp import leaves
from erp.codecs import epr
from erp.codecs import float as float_codec
from erp.errors import ErpError

MAX_VALUES = 1 << 31  # Per leaf.
# Values a file may declare in all (leaf sizes plus the codecs' work, e.g. SuRP
# iterations): 2**24, or 2048 per byte of file if more, and at most max_values
# (default 2**25: ResNet-50 has 25.6 M params; a caller loading a larger model
# raises it). The densest committed file holds ~165 values per byte (LeNet5-Caffe,
# 2.7 KB); EPR's ResNet-50 ~4.5. Decoding takes ~20 bytes of memory per value.
MIN_VALUE_BUDGET = 1 << 24
VALUES_PER_BYTE = 2048
DEFAULT_MAX_VALUES = 1 << 25
MAX_FILE_BYTES = 1 << 30
V1_METADATA = ('method', 'model', 'width', 'dataset', 'config', 'erp_version')


def float_row(collection, path, value, dtype=None):
  """(Leaf, payload) of an uncompressed leaf stored at dtype (default: its own)."""
  payload, stored = float_codec.write(value, dtype)
  return codecs.Leaf(collection, path, 'float', stored, tuple(np.shape(value))), payload


def coded_row(path, codec, variant, shape, payload):
  """(Leaf, payload) of a coded params leaf."""
  return codecs.Leaf('params', path, codec, variant, tuple(shape)), payload


def to_bytes(rows, metadata=None):
  """File bytes of [(Leaf, payload)] and JSON-able metadata."""
  header = {'leaves': [[l.collection, l.path, l.codec, l.variant, list(l.shape)]
                       for l, _ in rows]}
  if metadata:
    try:
      json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
      raise ErpError(f'metadata must be JSON (finite numbers, strings, lists, dicts): {e}')
    header['metadata'] = metadata
  return container.write(header, [(codecs.get(l.codec).SECTION, p) for l, p in rows])


def state_rows(state, *, table='empirical', float_dtype=None):
  """([(Leaf, payload)] of an EprState's params, {path: coding stats})."""
  rows, stats = [], {}
  views = {path: active.coded_view(kind, state.latents[path].shape)
           for path, kind in state.kinds if kind != 'float'}
  references = active.latent_references(views, state.latents)
  for path, kind in state.kinds:
    if kind == 'float':
      rows.append(float_row('params', path, state.floats[path], float_dtype))
      continue
    latent = state.latents[path]
    payload, stats[path] = epr.write_latent(latent, state.decoders[path], state.priors[path],
                                            table, references.get(path))
    rows.append(coded_row(path, epr.NAME, kind, latent.shape, payload))
  return rows, stats


def extra_rows(extra, float_dtype=None):
  """[(Leaf, payload)] of uncompressed collections {name: pytree}."""
  rows = []
  for collection in sorted(extra or {}):
    if collection == 'params':
      raise ErpError("extra cannot hold 'params': they come from the state")
    paths, values, _ = leaves.flatten(extra[collection])
    for path, value in sorted(zip(paths, values), key=lambda pv: pv[0]):
      dtype = float_dtype if np.issubdtype(np.asarray(value).dtype, np.floating) else None
      rows.append(float_row(collection, path, value, dtype))
  return rows


def save(path, state, *, extra=None, metadata=None, table='empirical', float_dtype=None):
  """Writes the range-coded file of an EprState; returns {num_bytes, coded_latent_bits, groups}.

  extra: uncompressed collections, e.g. {'batch_stats': ...}, stored at their
  precision (or float_dtype for floats). metadata: any JSON dict, kept in the
  header and returned by load_metadata. table: 'empirical' or 'prior' (epr codec).
  """
  blob, info = encode(state, extra=extra, metadata=metadata, table=table,
                      float_dtype=float_dtype)
  write_atomic(path, blob)
  return info


def encode(state, *, extra=None, metadata=None, table='empirical', float_dtype=None):
  """(file bytes, {num_bytes, coded_latent_bits, groups}): what save writes, in memory."""
  _check_finite(state, extra)
  rows, stats = state_rows(state, table=table, float_dtype=float_dtype)
  blob = to_bytes(rows + extra_rows(extra, float_dtype), metadata)
  return blob, {'num_bytes': len(blob), 'groups': stats,
                'coded_latent_bits': sum(s['coded_bits'] for s in stats.values())}


MAX_LATENT = 1 << 30  # Rounded latents beyond this are a diverged run, not a model.


def _check_finite(state, extra):
  """A diverged run must not leave a file that cannot be loaded: refuse before writing."""
  for path, latent in state.latents.items():
    if not np.all(np.abs(np.asarray(latent)) < MAX_LATENT):  # NaN fails this too.
      raise ErpError(f'latent {path} holds NaN, Inf or values beyond 2**30 (the run '
                     'diverged?); nothing written')
  parts = {'decoder': state.decoders, 'float leaf': state.floats,
           **{f'{c} leaf': v for c, v in (extra or {}).items()}}
  for part, tree in parts.items():
    paths, values, _ = leaves.flatten(tree)
    for path, value in zip(paths, values):
      value = np.asarray(value)
      if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
        raise ErpError(f'{part} {path} holds NaN or Inf (the run diverged?); nothing written')


def write_atomic(path, blob):
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    f.write(blob)
  os.replace(tmp, path)


def _shape(value, what):
  if not (isinstance(value, list) and all(type(d) is int and 0 <= d < MAX_VALUES
                                          for d in value)):
    raise ErpError(f'{what}: malformed shape {value!r}')
  if math.prod(value) > MAX_VALUES:
    raise ErpError(f'{what}: shape {value} is too large')
  return tuple(value)


def _v2_leaves(header, version):
  out = []
  for row in header['leaves']:
    if not (isinstance(row, list) and len(row) == 5 and all(isinstance(x, str) for x in row[:4])
            and row[1]):
      raise ErpError(f'malformed leaf entry {row!r}')
    collection, path, codec, variant, shape = row
    out.append(codecs.Leaf(collection, path, codecs.get(codec).NAME, variant,
                           _shape(shape, f'leaf {path}'), version))
  return out, header.get('metadata', {})


def _v1_leaves(header, version):
  """Leaves and metadata of an erp 0.1 header."""
  out = []
  for row in header['leaves']:
    if not (isinstance(row, list) and len(row) == 4):
      raise ErpError(f'malformed leaf entry {row!r}')
    collection, kind, path, shape = row
    if not (isinstance(collection, str) and isinstance(path, str) and isinstance(kind, str)):
      raise ErpError(f'malformed leaf entry {row!r}')
    shape = _shape(shape, f'leaf {path}')
    if kind in epr.VARIANTS:
      out.append(codecs.Leaf(collection, path, 'epr', kind, shape, version))
    elif kind == 'float':
      out.append(codecs.Leaf(collection, path, 'float', header.get('float_dtype'), shape, version))
    else:
      out.append(codecs.Leaf(collection, path, codecs.get(kind).NAME, '', shape, version))
  return out, {k: header[k] for k in V1_METADATA if k in header}


def parse(blob, max_values=DEFAULT_MAX_VALUES):
  """(leaves [Leaf], payloads [bytes], metadata dict) of a file's bytes, checked."""
  version, header, sections = container.read(blob)
  rows = header.get('leaves')
  if not isinstance(rows, list):
    raise ErpError('malformed header: no leaf list')
  if len(rows) != len(sections):  # Before parsing any row; each row makes one leaf.
    raise ErpError(f'header lists {len(rows)} leaves but the file has {len(sections)} sections')
  try:
    found, metadata = (_v1_leaves if version == 1 else _v2_leaves)(header, version)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise ErpError(f'malformed header: {type(e).__name__}: {e}') from None
  if not isinstance(metadata, dict):
    raise ErpError('malformed header: metadata is not a JSON object')
  names = [leaf.name for leaf in found]
  if len(set(names)) != len(names):
    raise ErpError('a leaf is listed twice in the header')
  for leaf, (kind, _) in zip(found, sections):
    if kind is not None and codecs.get(leaf.codec).SECTION != kind:  # Formats 1-2.
      raise ErpError(f'leaf {leaf.name}: codec {leaf.codec!r} does not match its section')
  # Before anything is allocated: tiny files cannot demand huge models.
  total = sum(math.prod(leaf.shape) for leaf in found)
  total += codecs.work(found, [payload for _, payload in sections])
  budget = min(max(MIN_VALUE_BUDGET, VALUES_PER_BYTE * len(blob)), max_values)
  if total > budget:
    raise ErpError(f'the file declares {total} values in {len(blob)} bytes, more than erp '
                   f'decodes from a file of this size with max_values={max_values} ({budget})')
  return found, [payload for _, payload in sections], metadata


def upgrade(blob, metadata_keys=None):
  """The bytes of an older file (formats 1-5) rewritten in the current format.

  Integer latents are kept exactly, EPR decoders snapped onto the format-3 grid
  (erp.reparam.file_decoder: the weights move by that snapping alone; a no-op
  for format 3) and recoded; other payloads are copied. metadata_keys: the
  metadata kept (all).
  """
  found, payloads, metadata = parse(blob)
  rewritten = rewrite_groups(found, payloads)
  rows = []
  for i, (leaf, payload) in enumerate(zip(found, payloads)):
    if i in rewritten and leaf.version < container.VERSION:
      payload = rewritten[i][0]
    rows.append((codecs.Leaf(leaf.collection, leaf.path, leaf.codec, leaf.variant, leaf.shape),
                 payload))
  keep = metadata if metadata_keys is None else {
      k: metadata[k] for k in metadata_keys if k in metadata}
  return to_bytes(rows, keep)


def write_groups(leaves, groups):
  """[(payload, stats)] of EPR leaves in file order from their [(integer latents, file
  decoder)], each coded relative to the reference the writer computes for it."""
  views = {i: active.coded_view(leaf.variant, leaf.shape) for i, leaf in enumerate(leaves)}
  references = active.latent_references(views, {i: g[0] for i, g in enumerate(groups)})
  return [epr.write(latents, decoder, reference=references.get(i))
          for i, (latents, decoder) in enumerate(groups)]


def rewrite_groups(found, payloads):
  """{index: (payload, stats)}: a parsed file's EPR leaves written in the current format
  (the same integer latents and file decoders; references as the writer computes them)."""
  coded = [i for i, leaf in enumerate(found) if leaf.codec == epr.NAME]
  leaves = [found[i] for i in coded]
  groups = epr.read_groups([payloads[i] for i in coded], leaves)
  return dict(zip(coded, write_groups(leaves, [group[:2] for group in groups])))


def decode_bytes(blob, max_values=DEFAULT_MAX_VALUES):
  """({collection: nested dict of numpy arrays}, metadata) of a file's bytes."""
  found, payloads, metadata = parse(blob, max_values)
  flat = {}
  try:
    for leaf, value in zip(found, codecs.read_all(found, payloads)):
      if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
        raise ErpError(f'leaf {leaf.name} decodes to non-finite values')
      flat.setdefault(leaf.collection, {})[leaf.path] = value
  except ErpError:
    raise
  except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
    raise ErpError(f'malformed model file: {type(e).__name__}: {e}') from None
  return {col: leaves.nest(values) for col, values in flat.items()}, metadata


def read_file(path):
  """The bytes of a model file: a regular file of at most MAX_FILE_BYTES, else ErpError."""
  if not isinstance(path, (str, os.PathLike)):
    raise ErpError(f'expected a file path, got {type(path).__name__}')
  try:
    info = os.stat(path)  # Before opening: opening a FIFO would block.
    if not stat.S_ISREG(info.st_mode):
      raise ErpError(f'{path} is not a regular file')
    if info.st_size > MAX_FILE_BYTES:
      raise ErpError(f'{path}: {info.st_size} bytes, more than a model file may have '
                     f'({MAX_FILE_BYTES})')
    with open(path, 'rb') as f:
      return f.read(MAX_FILE_BYTES + 1)
  except OSError as e:
    raise ErpError(f'cannot read {path}: {e.strerror}') from None


def load_variables(path, *, max_values=DEFAULT_MAX_VALUES):
  """{'params': ..., <other collections>: ...} as plain nested dicts, from the file alone.

  max_values bounds the values a file may make erp allocate (see DEFAULT_MAX_VALUES);
  raise it to load models of more than 2**25 parameters.
  """
  return decode_bytes(read_file(path), max_values)[0]


def load_metadata(path):
  """The metadata dict stored in a file ({} if none)."""
  return parse(read_file(path))[2]
