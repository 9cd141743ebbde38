"""Worst-case files within erp's declared budget, built with valid checksums (tests only).

Each builder returns file bytes that a hostile writer could send: the largest work
erp.file's budget admits (DEFAULT_MAX_VALUES values, SuRP iterations counted),
the compile-per-leaf pattern that once made MIRACLE files slow, and many tiny leaves.
`python tests/hostile.py build DIR` writes them; `python tests/hostile.py load FILE`
loads one and prints one JSON line with its outcome, seconds and peak RSS, which
tests/test_hostile.py runs in a fresh process per file under an address-space limit.
"""
import json
import resource
import sys
import time

import numpy as np

from erp import adaptive
from erp import coding
from erp import container
from erp import file as file_lib
from erp.codecs import epr
from erp.codecs import miracle
from erp.codecs import surp
from erp.codecs import surp_global

BUDGET = file_lib.DEFAULT_MAX_VALUES


def _file(rows, min_bytes):
  """File bytes of rows, padded with metadata to min_bytes so the per-byte budget admits them."""
  blob = file_lib.to_bytes(rows)
  if len(blob) < min_bytes:  # Random hex: the header's zlib cannot shrink it below half.
    pad = np.random.default_rng(0).bytes(min_bytes - len(blob)).hex()
    blob = file_lib.to_bytes(rows, {'pad': pad})
  return blob


def _zeros_epr(variant, shape):
  values = np.zeros(shape, np.int64)
  if variant == 'dft':  # One nonzero per frequency: every frequency's latents are coded.
    values[:, :, 0, 0] = 1
  step_shape = shape[:2] + (1,) * (len(shape) - 2) if variant == 'dft' else ()
  decoder = {'log_step': np.zeros(step_shape, np.float32)}
  if len(shape) == 1:
    decoder['shift'] = np.float32(0)
  # A stored table: every value goes through the range decoder (the writer's own choice,
  # one repeated value, would store no stream at all).
  # (0 and 1 and an escape; coding.empirical_table would take minutes to find it here.)
  payload, _ = epr.write(values, decoder, (0, coding.quantize_pmf([0.75, 0.25, 1e-6], 16)))
  return file_lib.coded_row('w', 'epr', variant, shape, payload)


def epr_adaptive():
  """The budget's values block-adaptively decoded (~43 tables, no stored one)."""
  symbols = np.zeros(BUDGET, np.int64)
  symbols[-1] = 1
  w = container.Writer().sint(0).sint(0).varint(2 << 5).sint(0)  # Log step, shift; K = 2,
  # alpha = 1; lo.
  w.raw(adaptive.encode(symbols, 2, 0))
  return _file([file_lib.coded_row('w', 'epr', 'affine', (BUDGET,), w.getvalue())],
               BUDGET // file_lib.VALUES_PER_BYTE)


def epr_affine():
  return _file([_zeros_epr('affine', (BUDGET,))], BUDGET // file_lib.VALUES_PER_BYTE)


def epr_dft():
  return _file([_zeros_epr('dft', (3, 3, 64, BUDGET // 576))], BUDGET // file_lib.VALUES_PER_BYTE)


def _surp_code(w, num_gaps):
  """Appends a magnitude code of num_gaps iterations, gap 1 (~0 bits each), to Writer w."""
  w.f32([1.0, 4.0]).varint(num_gaps)
  lengths = np.ones(num_gaps, np.int64)
  lengths[0] = 0  # The first is a refresh.
  coding.write_coded(w, lengths, *coding.empirical_table(lengths))
  w.blob(b'')
  refreshes = np.array([1], np.int64)
  w.varint(1)
  coding.write_coded(w, refreshes, *coding.empirical_table(refreshes))
  return w


def surp_iterations():
  """One SuRP leaf whose iterations fill the budget."""
  n = 1 << 20
  w = _surp_code(container.Writer(), (BUDGET - n) // surp.WORK_PER_ITERATION)
  w.blob(b'\0' * (n // 8))
  row = file_lib.coded_row('w', surp.NAME, '', (n,), w.getvalue())
  return _file([row], BUDGET // file_lib.VALUES_PER_BYTE)


def surp_global_iterations():
  """Two global-SuRP leaves whose shared code's iterations fill the budget."""
  n = 1 << 19
  first = _surp_code(container.Writer().varint(1), (BUDGET - 2 * n) // surp.WORK_PER_ITERATION)
  rows = [file_lib.coded_row(name, surp_global.NAME, '', (n,),
                             w.f32([1.0]).blob(b'\0' * (n // 8)).getvalue())
          for name, w in (('a', first), ('b', container.Writer().varint(0)))]
  return _file(rows, BUDGET // file_lib.VALUES_PER_BYTE)


def miracle_block_sizes():
  """200 MIRACLE leaves, each with its own block size (one XLA compile each, before)."""
  rows = []
  for i in range(200):
    block_size = 100 + i
    n = 4 * block_size
    payload = miracle.encode_leaf(7, n, block_size, 24, -2.0, np.arange(4) * 999)
    rows.append(file_lib.coded_row(f'l{i}', miracle.NAME, '', (n,), payload))
  return _file(rows, 0)


def miracle_large():
  """One MIRACLE leaf as large as the budget admits, in blocks of 4096 at 24 bits."""
  n = BUDGET // (1 + miracle.WORK_PER_WEIGHT)
  count = miracle.num_blocks(n, miracle.MAX_BLOCK_SIZE)
  payload = miracle.encode_leaf(1, n, miracle.MAX_BLOCK_SIZE, miracle.MAX_BITS, -2.0,
                                np.arange(count) % (1 << 24))
  return _file([file_lib.coded_row('w', miracle.NAME, '', (n,), payload)],
               BUDGET // file_lib.VALUES_PER_BYTE)


def many_leaves():
  """20,000 one-value leaves."""
  payload = _zeros_epr('affine', (1,))[1]
  return _file([file_lib.coded_row(f'l{i}', 'epr', 'affine', (1,), payload)
                for i in range(20000)], 0)


def over_budget():
  """One value more than the budget: refused before decoding."""
  return _file([_zeros_epr('affine', (BUDGET + 1,))], BUDGET // file_lib.VALUES_PER_BYTE)


def surp_over_budget():
  """SuRP iterations one past the budget: refused before any is decoded."""
  n = 1 << 20
  w = container.Writer().f32([1.0, 4.0]).varint((BUDGET - n) // surp.WORK_PER_ITERATION + 1)
  return _file([file_lib.coded_row('w', surp.NAME, '', (n,), w.getvalue() + b'\0' * 64)],
               BUDGET // file_lib.VALUES_PER_BYTE)


BUILDERS = {f.__name__: f for f in (epr_affine, epr_dft, epr_adaptive, surp_iterations,
                                    surp_global_iterations,
                                    miracle_block_sizes,
                                    miracle_large, many_leaves, over_budget,
                                    surp_over_budget)}


def build(directory):
  """Writes DIRECTORY/NAME.erp for every builder; returns the paths."""
  paths = []
  for name, builder in BUILDERS.items():
    paths.append(f'{directory}/{name}.erp')
    with open(paths[-1], 'wb') as f:
      f.write(builder())
  return paths


def load(path):
  """One JSON line: outcome, wall and CPU seconds and this process's peak RSS of loading path."""
  start, cpu_start = time.perf_counter(), time.process_time()
  try:
    file_lib.load_variables(path)
    outcome = 'loaded'
  except Exception as e:  # The test asserts it is an ErpError.
    outcome = f'{type(e).__module__}.{type(e).__name__}: {e}'
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
  print(json.dumps({'file': path, 'outcome': outcome, 'seconds': seconds,
                    'cpu_seconds': cpu_seconds, 'peak_rss_mb': peak_rss_mb()}))


def peak_rss_mb():
  """This process's peak RSS in MiB: VmHWM, which (unlike ru_maxrss) does not carry over the
  RSS of the process that forked this one."""
  try:
    with open('/proc/self/status') as f:
      return next(int(l.split()[1]) for l in f if l.startswith('VmHWM:')) / 1024
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == '__main__':
  {'build': build, 'load': load}[sys.argv[1]](sys.argv[2])
