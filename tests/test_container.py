"""The .erp format: bit-exact files, and every kind of bad input refused with ErpError."""
import os
import json
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import erp
from erp import container
from erp import latent_code
from erp import reparam
from erp import export
from erp import file as file_lib
from erp import loader
from erp import runs
from conftest import REPO, load_config


@pytest.fixture(scope='module', params=['lenet5', 'resnet20'])
def model_file(request):
  """(bytes, expected variables) of an untrained EPR model: DFT groups, batch stats."""
  name = request.param
  c = load_config('mnist_lenet5' if name == 'lenet5' else 'cifar10_resnet20')
  c.unlock()
  c.rd.enabled = True
  model, ds, trainable, batch_stats = runs.setup(c)
  rows, _ = file_lib.state_rows(trainable)
  rows += file_lib.extra_rows({'batch_stats': batch_stats} if batch_stats else None)
  blob = file_lib.to_bytes(rows, export.metadata(c, 'epr'))
  expected = {'params': erp.decode(trainable, exact=True)}
  if batch_stats:
    expected['batch_stats'] = batch_stats
  return blob, expected


def test_file_decodes_bit_exactly(model_file):
  blob, expected = model_file
  _, variables, _ = loader.load_bytes(blob)
  assert jax.tree.structure(variables) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _reseal(sections_blob):
  """Recompute the whole-file checksum, so the parser itself meets the corruption."""
  return sections_blob + struct.pack('<I', zlib.crc32(sections_blob))


def test_fuzzed_files_raise_erp_error_only(model_file):
  blob, _ = model_file
  rng = np.random.default_rng(0)
  for i in range(2000):
    data = bytearray(blob)
    mode = i % 4
    if mode == 0:  # Truncate.
      data = data[:rng.integers(0, len(data))]
    elif mode == 1:  # Flip one bit.
      pos = rng.integers(0, len(data))
      data[pos] ^= 1 << rng.integers(0, 8)
    elif mode == 2:  # Overwrite a run of bytes.
      pos = rng.integers(0, len(data))
      data[pos:pos + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    else:  # Append junk.
      data += rng.integers(0, 256, rng.integers(1, 50), dtype=np.uint8).tobytes()
    if bytes(data) == blob:
      continue
    with pytest.raises(erp.ErpError):
      loader.load_bytes(bytes(data))


def test_corruption_behind_a_valid_checksum_never_raises_anything_else(model_file):
  """With checksums recomputed, the parser must still only ever raise ErpError."""
  blob, _ = model_file
  rng = np.random.default_rng(1)
  body = blob[:-4]
  outcomes = {'error': 0, 'loaded': 0}
  for _ in range(150):
    data = bytearray(body)
    pos = rng.integers(5, len(data))
    data[pos] ^= 1 << rng.integers(0, 8)
    try:
      loader.load_bytes(_reseal(bytes(data)))
      outcomes['loaded'] += 1
    except erp.ErpError:
      outcomes['error'] += 1
  assert outcomes['error'] > 0  # Section checksums catch most of these.


def test_specific_bad_inputs_have_named_errors(model_file, tmp_path):
  blob, _ = model_file
  with pytest.raises(erp.ErpError, match='bad magic'):
    loader.load_bytes(b'PK\x03\x04' + blob[4:])
  wrong_version = bytearray(blob)
  wrong_version[4] = 99
  with pytest.raises(erp.ErpError, match='version 99'):
    loader.load_bytes(bytes(wrong_version))
  with pytest.raises(erp.ErpError, match='checksum'):
    loader.load_bytes(blob[:-10] + blob[-9:])
  with pytest.raises(erp.ErpError, match='cannot read'):
    erp.load(str(tmp_path / 'missing.erp'))


def test_file_for_another_architecture_is_refused(model_file):
  blob, _ = model_file
  _, header, sections = container.read(blob)
  meta = header['metadata']
  meta['model'] = 'lenet300' if meta['model'] != 'lenet300' else 'lenet5'
  with pytest.raises(erp.ErpError, match='does not match model'):
    loader.load_bytes(container.write(header, sections))


def test_cli_prints_one_line_and_fails_on_a_bad_file(tmp_path):
  bad = tmp_path / 'bad.erp'
  bad.write_bytes(b'\x89ERP\x01' + b'\0' * 20)
  for module in ('erp.evaluate', 'erp.inspect'):
    args = ['--model', str(bad)] if module == 'erp.evaluate' else [str(bad)]
    proc = subprocess.run([sys.executable, '-m', module] + args, cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith('erp: error:'), proc.stderr
    assert 'Traceback' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _epr_leaf_file(version, log_step=0.0, stream_suffix=b''):
  """A one-leaf file whose epr section is written by hand around valid coded values."""
  from erp import coding, latent_code
  values = np.array([0, 1, -1, 0, 2, 0], np.int64)
  header = {'leaves': [['params', 'w', 'epr', 'affine', [2, 3]]]}
  if version >= 3:  # The log step is an integer / 128: no NaN, but it can overflow.
    w = container.Writer().sint(int(log_step * 128))
    latent_code.write(w, values)  # The current format's code.
    return container.write(header, [(None, w.getvalue() + stream_suffix)], version)
  lo, counts = coding.empirical_table(values)
  w = container.Writer().f32([log_step])
  stream, _ = coding.encode(values, lo, counts)
  w.sint(lo).varint(len(counts))
  for c in counts:
    w.varint(c)
  w.varint(0).blob(stream + stream_suffix)
  return container.write(header, [(container.GROUP, w.getvalue())], 2)


@pytest.mark.parametrize('version', [2, container.VERSION])
def test_non_finite_or_overflowing_decoders_and_padded_streams_are_refused(version):
  file_lib.decode_bytes(_epr_leaf_file(version))  # The well-formed file loads.
  for bad in (float('nan'), float('inf'), 200.0) if version == 2 else (200.0, 1e9):
    with pytest.raises(erp.ErpError, match='non-finite'):  # exp(200) overflows float32.
      file_lib.decode_bytes(_epr_leaf_file(version, log_step=bad))
  with pytest.raises(erp.ErpError, match='not the coding of the values'):
    file_lib.decode_bytes(_epr_leaf_file(version, stream_suffix=b'junk'))


def test_a_header_that_inflates_past_its_limit_or_lists_too_many_leaves_is_refused():
  text = b'{"leaves": [' + b' ' * (container.MAX_HEADER_BYTES + 10) + b']}'
  bomb = zlib.compress(text, 9)  # Format 2: a zlib header section.
  w = container.Writer().raw(container.MAGIC).raw(bytes([2]))
  w.raw(bytes([container.HEADER])).blob(bomb).raw(struct.pack('<I', zlib.crc32(bomb)))
  with pytest.raises(erp.ErpError, match='inflates to more than'):
    loader.load_bytes(_reseal(w.getvalue()))
  deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # Format 3: raw deflate.
  w = container.Writer().raw(container.MAGIC).raw(bytes([3]))
  w.blob(deflate.compress(text) + deflate.flush())
  with pytest.raises(erp.ErpError, match='inflates to more than'):
    loader.load_bytes(_reseal(w.getvalue()))
  many = {'leaves': [['params', f'w{i}', 'float', 'float32', [1]] for i in range(100_000)]}
  with pytest.raises(erp.ErpError, match='lists 100000 leaves but the file has 0 sections'):
    file_lib.decode_bytes(container.write(many, []))


def test_a_format_9_file_is_its_few_framing_bytes_and_the_dictionaries_are_pinned():
  """9 bytes of framing; the header dictionaries are part of the format (a changed byte
  would change what every file means), and a LeNet header, of an MNIST or a Fashion-MNIST
  run, deflates to a few bytes with format 6's (which formats 7-8 keep)."""
  import hashlib
  from erp import codecs, header_dictionary
  assert hashlib.sha256(header_dictionary.HEADER_DICTIONARY).hexdigest()[:16] == \
      '556d22548d55e090'
  assert hashlib.sha256(header_dictionary.HEADER_DICTIONARY_6).hexdigest()[:16] == \
      '6a237c21a63ddaef'
  rows = [(codecs.Leaf('params', 'Dense_0/kernel', 'float', 'float32', (0,)), b'')]
  blob = file_lib.to_bytes(rows)
  version, header, sections = container.read(blob)
  assert version == 9 and sections == [(None, b'')]
  # Magic, version, header length + deflated header, payload length, CRC32: nothing else.
  assert blob[:5] == container.MAGIC + b'\x09' and blob[5] == len(blob) - 11 and blob[-5] == 0
  inflate = zlib.decompressobj(-15, zdict=header_dictionary.HEADER_DICTIONARY_6)
  assert json.loads(inflate.decompress(blob[6:-5])) == header
  lenet5 = {'leaves': [['params', f'{m}/{k}', 'epr', 'dft' if 'Conv' in m and k == 'kernel'
                        else 'affine', s] for m, k, s in [
      ('Conv_0', 'bias', [20]), ('Conv_0', 'kernel', [5, 5, 1, 20]), ('Conv_1', 'bias', [50]),
      ('Conv_1', 'kernel', [5, 5, 20, 50]), ('Dense_0', 'bias', [500]),
      ('Dense_0', 'kernel', [800, 500]), ('Dense_1', 'bias', [10]),
      ('Dense_1', 'kernel', [500, 10])]],
            'metadata': {'dataset': 'mnist', 'method': 'epr', 'model': 'lenet5', 'width': 1}}
  for dataset in ('mnist', 'fashion_mnist'):
    lenet5['metadata']['dataset'] = dataset
    small = container.write(lenet5, [(None, b'')] * 8)
    assert len(small) - 9 - 8 <= 9, len(small)  # Header and its length: <= 9 bytes.
    assert container.read(small)[1] == lenet5
    assert len(container.write(lenet5, [(None, b'')] * 8, 5)) - len(small) == (
        0 if dataset == 'mnist' else 5)  # Format 5's dictionary had MNIST's headers only.


def test_a_small_file_cannot_declare_a_huge_model():
  from erp import codecs
  leaf = codecs.Leaf('params', 'w', 'float', 'float32', (1 << 25,))
  with pytest.raises(erp.ErpError, match='declares 33554432 values in'):
    file_lib.decode_bytes(file_lib.to_bytes([(leaf, b'\0' * 4)]))


def test_save_refuses_a_diverged_state_and_writes_nothing(tmp_path):
  params = {'dense': {'kernel': np.ones((4, 3), np.float32), 'bias': np.zeros(3, np.float32)}}
  state = erp.reparameterize(params)
  bad = state.replace(latents={**state.latents, 'dense/kernel': jnp.full((4, 3), jnp.nan)})
  with pytest.raises(erp.ErpError, match='latent dense/kernel holds NaN'):
    erp.save(tmp_path / 'm.erp', bad)
  with pytest.raises(erp.ErpError, match='batch_stats leaf mean holds NaN'):
    erp.save(tmp_path / 'm.erp', state, extra={'batch_stats': {'mean': np.array([np.inf])}})
  assert not os.listdir(tmp_path)
  erp.save(tmp_path / 'm.erp', state)
  assert os.listdir(tmp_path) == ['m.erp']


def test_dft_steps_are_stored_for_the_frequencies_in_use_only():
  """Formats 4-6: a 'dft' leaf stores a mask of the spatial frequencies with a nonzero
  latent and only their steps (formats 5-6: and only their latents; format 6: mask and
  steps in one bit block); a mask that disagrees with the latents is refused."""
  from erp import codecs
  from erp.codecs import epr
  rng = np.random.default_rng(0)
  values = np.zeros((5, 5, 3, 4), np.int64)
  values[0, 0] = rng.integers(1, 4, (3, 4))
  values[2, 3, 1, 2] = -5
  log_step = np.log(rng.uniform(0.05, 0.5, (5, 5, 1, 1))).astype(np.float32)
  payload, _ = epr.write(values, {'log_step': log_step})
  leaf = codecs.Leaf('params', 'Conv_0/kernel', 'epr', 'dft', values.shape, container.VERSION)
  decoded, decoder, _ = epr.read_group(payload, leaf)
  np.testing.assert_array_equal(decoded, values)
  used = [0, 13]  # Frequencies (0, 0) and (2, 3): their steps are the file's grid.
  ints = reparam.file_decoder({'log_step': log_step})[1]['log_step'].ravel()
  snapped = reparam.file_decoder({'log_step': log_step})[0]['log_step'].ravel()
  np.testing.assert_array_equal(decoder['log_step'].ravel()[used], snapped[used])
  dense, _ = epr.write(values + 1, {'log_step': log_step})  # Every frequency in use.
  assert len(dense) - len(payload) >= 20
  # Format 5: the mask as bytes, then each step's difference from the one before.
  v5 = container.Writer().raw(bytes([1, 32, 0, 0]))
  for d in np.diff(ints[used], prepend=0):
    v5.sint(d)
  latent_code.write(v5, values.reshape(25, 3, 4)[used], version=5)
  v5, leaf5 = v5.getvalue(), codecs.Leaf('params', 'Conv_0/kernel', 'epr', 'dft', values.shape, 5)
  np.testing.assert_array_equal(epr.read_group(v5, leaf5)[0], values)
  for bad, message in [(bytes([1, 32, 0, 2]), 'malformed frequency mask'),
                       (bytes([1, 0, 0, 0]), None)]:  # One step fewer: the code is read off.
    with pytest.raises(erp.ErpError, match=message):
      epr.read_group(bad + v5[4:], leaf5)
  # Formats 5-6 code the latents of the frequencies the mask names: it alone places them.
  moved, _, _ = epr.read_group(bytes([1, 64, 0, 0]) + v5[4:], leaf5)
  assert moved[2, 4, 1, 2] == -5 and not moved[2, 3].any()
  # Format 4 coded every frequency's latents: there the mask must agree with them.
  old = container.Writer().raw(bytes([1, 32, 0, 0]))
  for d in np.diff(ints[used], prepend=0):
    old.sint(d)
  latent_code.write(old, values.ravel(order='F'), active=False, version=4)
  leaf4 = codecs.Leaf('params', 'Conv_0/kernel', 'epr', 'dft', values.shape, 4)
  np.testing.assert_array_equal(epr.read_group(old.getvalue(), leaf4)[0], values)
  with pytest.raises(erp.ErpError, match='frequencies with nonzero latents'):
    epr.read_group(bytes([1, 64, 0, 0]) + old.getvalue()[4:], leaf4)


@pytest.mark.parametrize('spread', [0, 3, 40, 2000, 11000])
def test_format_6_dft_steps_round_trip_and_a_damaged_block_is_refused(spread):
  """The median and the Rice-coded offsets give back every step of the frequencies in
  use, whatever their spread (up to float32's whole range of steps), for 3x3 to 7x7
  kernels and with none or all frequencies in use; a block whose unary part runs past
  its bound, is cut short or has stray padding bits is one clear error."""
  from erp.codecs import epr
  rng = np.random.default_rng(spread)
  for size in (3, 5, 7):
    num_steps = size * size
    for used in (np.zeros(num_steps, bool), np.ones(num_steps, bool),
                 rng.random(num_steps) < 0.5):
      steps = -400 + rng.integers(-spread, spread + 1, int(used.sum()))
      w = container.Writer()
      epr._write_dft_steps(w, used, steps)
      r = container.Reader(w.getvalue() + b'next', 'steps')
      got_used, got_steps = epr._read_dft_steps(r, num_steps, 'steps')
      np.testing.assert_array_equal(got_used, used)
      np.testing.assert_array_equal(got_steps, steps)
      assert r.raw(4) == b'next'  # The block ends where the next field begins.
  blob = container.Writer().sint(-400).raw(bytes([255]) * 4 + bytes([255]) * 600).getvalue()
  with pytest.raises(erp.ErpError, match='malformed or truncated DFT steps'):
    epr._read_dft_steps(container.Reader(blob, 's'), 25, 's')  # Quotient past its bound.
  steps = -400 + np.arange(25)
  w = container.Writer()
  epr._write_dft_steps(w, np.ones(25, bool), steps)
  with pytest.raises(erp.ErpError, match='truncated'):
    epr._read_dft_steps(container.Reader(w.getvalue()[:-3], 's'), 25, 's')
  offsets = container.zigzag(steps - int(np.median(steps)))
  k = epr._rice_k(offsets)
  num_bits = 25 + 4 + int(np.sum(offsets >> k)) + 25 * (1 + k)
  assert num_bits % 8  # The block ends inside its last byte: the rest is padding.
  padded = bytearray(w.getvalue())
  padded[-1] |= 1 << (num_bits % 8)
  with pytest.raises(erp.ErpError, match='stray padding'):
    epr._read_dft_steps(container.Reader(bytes(padded), 's'), 25, 's')


def test_sparse_kernels_are_coded_as_their_active_block():
  """Format 5: a kernel whose nonzeros sit in few rows and columns is coded as the masks
  of those rows and columns and the block they cut out, in fewer bytes; a dense one flat."""
  rng = np.random.default_rng(3)
  values = np.zeros((800, 500), np.int64)
  rows, cols = rng.choice(800, 120, replace=False), rng.choice(500, 60, replace=False)
  block = rng.choice([-2, -1, 0, 0, 0, 0, 0, 0, 1, 2], (120, 60))
  block[:, 0] = block[0, :] = 1  # Every row and column of the block holds a nonzero.
  values[np.ix_(rows, cols)] = block
  flat, active = container.Writer(), container.Writer()
  latent_code.write(flat, values, active=False)
  code = latent_code.write(active, values)
  assert code['mode'] == latent_code.ACTIVE
  assert len(active.getvalue()) < 0.8 * len(flat.getvalue())
  decoded, stream = latent_code.read(container.Reader(active.getvalue(), 'g'), values.shape, 'g')
  np.testing.assert_array_equal(decoded, values)
  assert stream == code['stream']
  dense = rng.integers(-3, 4, (40, 30))
  assert latent_code.write(container.Writer(), dense)['mode'] != latent_code.ACTIVE
  with pytest.raises(erp.ErpError, match='malformed code head'):  # Formats 3-4: no ACTIVE.
    latent_code.read(container.Reader(active.getvalue(), 'g'), (values.size,), 'g',
                     active=False)
  # A mask that marks an all-zero slice is not the code of any values: refused.
  masks = latent_code.active_masks(values)
  masks[0][np.flatnonzero(~masks[0])[0]] = True
  forged = container.Writer().varint(latent_code.ACTIVE)
  inner = container.Writer()
  latent_code.write(inner, np.concatenate(masks).astype(np.int64), active=False)
  forged.blob(inner.getvalue())
  latent_code.write(forged, values[np.ix_(*masks)].ravel(order='F'), active=False)
  with pytest.raises(erp.ErpError, match='slice with no nonzero'):
    latent_code.read(container.Reader(forged.getvalue(), 'g'), values.shape, 'g')


def test_a_file_codes_a_kernel_s_input_mask_given_the_kernel_before_it():
  """Format 9 through erp.file: a conv -> dense -> dense chain whose fc2 rows live exactly
  where fc1's columns do is written with fc2 as ACTIVE_REF; the file decodes to the
  state's exact params, erp.inspect reads it, and upgrading its format-8 twin gives its
  bytes."""
  from erp import inspect
  from erp import state as state_lib
  from erp.codecs import epr
  rng = np.random.default_rng(5)
  conv = np.zeros((3, 3, 1, 6), np.float32)
  conv[0, 0, 0, [1, 4]] = 2
  fc1 = np.zeros((24, 300), np.int64)  # A 2 x 2 x 6 map flattened: channel = row % 6.
  live = rng.choice(300, 40, replace=False)
  fc1[np.ix_([1, 4, 7, 10, 16], live)] = rng.integers(1, 4, (5, 40))
  fc2 = np.full((300, 10), -1, np.int64)
  fc2[live] = rng.integers(-3, 4, (40, 10))
  fc2[live, 0] = 3
  params = {'a': {'kernel': np.zeros((3, 3, 1, 6), np.float32)},
            'b': {'bias': np.zeros(300, np.float32), 'kernel': np.zeros((24, 300), np.float32)},
            'c': {'kernel': np.zeros((300, 10), np.float32)}}
  state = state_lib.reparameterize(params, seed=1)
  state = state.replace(latents={**state.latents, 'a/kernel': jnp.asarray(conv),
                                 'b/kernel': jnp.asarray(fc1, jnp.float32),
                                 'c/kernel': jnp.asarray(fc2, jnp.float32)})
  blob, info = file_lib.encode(state)
  found, payloads, _ = file_lib.parse(blob)
  heads = {}
  for leaf, payload in zip(found, payloads):
    if leaf.path in ('b/kernel', 'c/kernel'):
      r = container.Reader(payload, 'g')
      r.sint()  # The step; then the code's head.
      heads[leaf.path] = r.varint()
  # fc1's 24 rows are too few for the reference to pay for its heads; fc2's pay.
  assert heads == {'b/kernel': latent_code.ACTIVE,
                   'c/kernel': latent_code.ACTIVE_BASE | latent_code.REF}
  decoded = file_lib.decode_bytes(blob)[0]['params']
  expected = state_lib.decode(state, exact=True)
  for path in ('a/kernel', 'b/kernel', 'b/bias', 'c/kernel'):
    outer, inner = path.split('/')
    np.testing.assert_array_equal(decoded[outer][inner], expected[outer][inner])
  # The same latents in format 8 (no references): larger, and upgraded to these bytes.
  coded = [(leaf, p) for leaf, p in zip(found, payloads) if leaf.codec == 'epr']
  groups = epr.read_groups([p for _, p in coded], [leaf for leaf, _ in coded])
  rows = []
  for (leaf, _), (values, decoder, _) in zip(coded, groups):
    w = container.Writer()
    if leaf.variant == 'dft':
      rows.append((leaf, payloads[found.index(leaf)]))  # The conv's code has no reference.
      continue
    ints = reparam.file_decoder(decoder)[1]
    w.sint(ints['log_step'])
    if 'shift' in ints:
      w.sint(ints['shift'])
    latent_code.write(w, values, version=8)
    rows.append((leaf, w.getvalue()))
  v8 = bytearray(file_lib.to_bytes(rows))
  v8[4] = 8
  v8 = bytes(v8[:-4]) + struct.pack('<I', zlib.crc32(bytes(v8[:-4])))
  assert len(v8) > len(blob) + 10, (len(v8), len(blob))
  assert file_lib.upgrade(v8) == blob
  path = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'ref_{os.getpid()}.erp')
  file_lib.write_atomic(path, blob)
  try:
    _, described, _ = inspect.leaf_rows(path)
  finally:
    os.remove(path)
  assert {r['path']: r['coded_bits'] for r in described}['params/c/kernel'] == \
      info['groups']['c/kernel']['coded_bits']
