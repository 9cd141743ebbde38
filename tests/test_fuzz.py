"""Structure-aware fuzzing of the loader: mutated headers and sections behind valid checksums.

Bit flips are mostly caught by the CRCs (tests/test_container.py); here every mutation is
resealed, so the parser itself meets it. Each crafted file must either raise ErpError or
load to finite values, within a time bound.
"""
import copy
import json
import os
import time
import zlib

import numpy as np
import pytest

import erp
from erp import codecs
from erp import container
from erp import file as file_lib
from conftest import REPO

FILES = ['mnist/lenet5_epr_lmbda0.25_seed1', 'mnist/lenet300_surp_sparsity0.95',
         'mnist/lenet300_surp_val_global_sparsity0.97_seed0',
         'mnist/lenet300_miracle_block_size10', 'mnist/lenet300_uniform_rel_step1.0']
SECONDS_PER_LOAD = 5.0
TRIALS = 100  # Per file and format version (1, 2, 3).


def _seal(version, header, sections):
  """File bytes of any version with valid section and whole-file checksums."""
  return container.write(header, sections, version)


def _versions(blob):
  """{version: (header, sections)} of one model in formats 1 (as committed), 2 and the
  current one (file.upgrade's)."""
  committed, header, sections = container.read(blob)
  found, payloads, metadata = file_lib.parse(blob)
  v2 = {'leaves': [[l.collection, l.path, l.codec, l.variant, list(l.shape)] for l in found],
        'metadata': metadata}
  kinds = [codecs.get(l.codec).SECTION for l in found]
  version, current, current_sections = container.read(file_lib.upgrade(blob))
  out = {2: (v2, list(zip(kinds, payloads))), version: (current, current_sections)}
  if committed == 1:
    out[1] = (header, sections)
  return out


def _junk(rng):
  return [None, -1, 0, 1, 2**31, 2**63, 1e300, 'x',
          '', 'float', 'epr', 'surp', 'miracle', [], [1], [[0]], {}, {'a': 1}, True,
          'a' * 1000][rng.integers(0, 20)]


def _mutate_header(rng, header):
  h = copy.deepcopy(header)
  rows = h['leaves']
  i = int(rng.integers(0, len(rows)))
  choice = rng.integers(0, 7)
  if choice == 0:  # One field of one row.
    j = int(rng.integers(0, len(rows[i])))
    rows[i][j] = _junk(rng)
  elif choice == 1:  # One dimension of a shape.
    shape = rows[i][-1]
    if shape:
      shape[int(rng.integers(0, len(shape)))] = int(rng.choice([0, 1, 7, 2**20, 2**31 - 1]))
  elif choice == 2:  # Two rows swapped: sections no longer line up with their leaves.
    k = int(rng.integers(0, len(rows)))
    rows[i], rows[k] = rows[k], rows[i]
  elif choice == 3:  # A row duplicated over another.
    rows[int(rng.integers(0, len(rows)))] = copy.deepcopy(rows[i])
  elif choice == 4:  # A row dropped or added.
    rows.pop(i) if rng.random() < 0.5 else rows.append(copy.deepcopy(rows[i]))
  elif choice == 5:  # A top-level field.
    key = str(rng.choice(sorted(h)))
    h[key] = _junk(rng)
  else:  # Metadata, which decoding must ignore whatever it holds.
    h['metadata'] = _junk(rng)
  return h


def _mutate_sections(rng, sections):
  s = list(sections)
  i = int(rng.integers(0, len(s)))
  kind, payload = s[i]
  choice = rng.integers(0, 6)
  if choice == 5 and len(payload) >= 4:  # A float32 field (log step, shift, scale) made extreme.
    at = int(rng.integers(0, len(payload) - 3))
    extreme = np.array([rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45])], np.float32)
    s[i] = (kind, payload[:at] + extreme.tobytes() + payload[at + 4:])
  elif choice == 0 and payload:  # Flip bits.
    data = bytearray(payload)
    for _ in range(int(rng.integers(1, 4))):
      data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
    s[i] = (kind, bytes(data))
  elif choice == 1:  # Truncate.
    s[i] = (kind, payload[:int(rng.integers(0, len(payload) + 1))])
  elif choice == 2:  # Append.
    s[i] = (kind, payload + rng.integers(0, 256, int(rng.integers(1, 16)), np.uint8).tobytes())
  elif choice == 3:  # Another section's payload.
    s[i] = (kind, s[int(rng.integers(0, len(s)))][1])
  else:  # Another section kind.
    s[i] = (int(rng.choice([container.GROUP, container.FLOAT, 9])), payload)  # (Formats 3-4: none.)
  return s


@pytest.mark.parametrize('run', FILES)
def test_crafted_files_with_valid_checksums_raise_erp_error_or_load_finite_values(run):
  blob = open(os.path.join(REPO, 'experiments', 'results', run, 'model.erp'), 'rb').read()
  rng = np.random.default_rng(zlib.crc32(run.encode()))
  counts = {'erp_error': 0, 'loaded': 0}
  worst = 0.0
  for version, (header, sections) in _versions(blob).items():
    assert file_lib.decode_bytes(_seal(version, header, sections))  # Unmutated: loads.
    for trial in range(TRIALS):
      h, s = header, sections
      if trial % 3 != 1:
        h = _mutate_header(rng, header)
      if trial % 3 != 0:
        s = _mutate_sections(rng, sections)
      try:
        crafted = _seal(version, h, s)
      except (TypeError, ValueError):  # json cannot write it (e.g. NaN): not a file.
        continue
      start = time.perf_counter()
      try:
        variables, _ = file_lib.decode_bytes(crafted)
      except erp.ErpError:
        counts['erp_error'] += 1
      else:
        counts['loaded'] += 1
        for value in (v for col in variables.values() for v in _leaves(col)):
          assert np.all(np.isfinite(value)), (run, version, trial)
      worst = max(worst, time.perf_counter() - start)
  print(f'{run}: {counts}, worst load {worst:.3f} s')
  assert counts['erp_error'] > 0, counts
  assert worst < SECONDS_PER_LOAD, worst


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield np.asarray(tree)


def test_json_dump_of_a_header_is_the_one_erp_writes():
  """_seal round-trips an untouched file byte for byte (the fuzzer changes only what it means to)."""
  for run in FILES:
    blob = open(os.path.join(REPO, 'experiments', 'results', run, 'model.erp'), 'rb').read()
    version, header, sections = container.read(blob)
    assert _seal(version, header, sections) == blob
    assert json.loads(json.dumps(header)) == header
