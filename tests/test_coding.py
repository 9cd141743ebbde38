from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from erp import coding
from erp.codecs import epr
from erp.errors import ErpError


@st.composite
def tables_and_values(draw):
  precision = draw(st.integers(8, 16))
  size = draw(st.integers(2, min(200, 1 << precision)))
  weights = np.array(draw(st.lists(st.floats(0, 1), min_size=size, max_size=size)))
  counts = coding.quantize_pmf(weights + 1e-12, precision)
  lo = draw(st.integers(-1000, 1000))
  n = draw(st.integers(0, 500))
  rng = np.random.default_rng(draw(st.integers(0, 2**31)))
  values = rng.integers(lo - 5, lo + size + 5, n)  # Some fall outside: escapes.
  return lo, counts, values


@settings(max_examples=150, deadline=None)
@given(tables_and_values())
def test_round_trip_is_bit_exact(case):
  lo, counts, values = case
  stream, escaped = coding.encode(values, lo, counts)
  decoded = coding.decode(stream, len(values), lo, counts, escaped)
  np.testing.assert_array_equal(decoded, values)


@pytest.mark.parametrize('precision', [8, 12, 16])
def test_quantized_table_is_exact_and_positive(precision):
  pmf = np.array([0.7, 0.2, 0.1 - 1e-9, 1e-9, 0.0])
  counts = coding.quantize_pmf(pmf, precision)
  assert counts.sum() == 2**precision and counts.min() >= 1
  assert counts[0] > counts[1] > counts[2]


def test_coded_bits_within_1_percent_of_ideal():
  rng = np.random.default_rng(0)
  support = np.arange(-30, 31)
  pmf = np.exp(-np.abs(support) / 3.0)
  counts = coding.quantize_pmf(np.append(pmf, 1e-6), 14)
  values = rng.choice(support, 200_000, p=pmf / pmf.sum())
  stream, escaped = coding.encode(values, -30, counts)
  ideal = coding.ideal_bits(values, -30, counts)
  assert len(escaped) == 0
  assert abs(8 * len(stream) - ideal) / ideal < 0.01, (8 * len(stream), ideal)


def test_empirical_bits_is_the_histograms_entropy():
  assert coding.empirical_bits(np.array([3, 3, 3])) == 0.0
  assert coding.empirical_bits(np.array([0, 1, 0, 1])) == pytest.approx(4.0)
  assert coding.empirical_bits(np.array([[5, 5], [5, -2]])) == pytest.approx(
      -3 * np.log2(0.75) - np.log2(0.25))
  # No fixed table codes values in fewer bits than their own histogram's.
  values = np.random.default_rng(1).geometric(0.3, 5000)
  counts = coding.quantize_pmf(np.bincount(values)[1:] / len(values), 14)
  assert coding.ideal_bits(values, 1, counts) >= coding.empirical_bits(values)


def test_escape_count_mismatch_is_an_error():
  counts = coding.quantize_pmf([0.5, 0.4, 0.1], 12)
  stream, escaped = coding.encode(np.array([0, 1, 7, 0]), 0, counts)
  assert escaped.tolist() == [7]
  with pytest.raises(ErpError, match='escapes'):
    coding.decode(stream, 4, 0, counts, np.array([], np.int64))


def _payload_size(values, lo, counts):
  """Bytes of the table, escapes and stream as the epr codec stores them."""
  payload, _ = epr.write(values, {'log_step': np.float32(0)}, (lo, counts))
  return len(payload) - 1  # Less the decoder's log step (the integer 0: one byte).


def test_empirical_table_round_trips_and_beats_a_fixed_laplace_table():
  rng = np.random.default_rng(1)
  values = np.round(rng.laplace(0, 2.0, 50_000)).astype(np.int64)
  values[:5] = [400, -900, 1000, 377, -512]  # Rare outliers: escaped, not tabulated.
  lo, counts = coding.empirical_table(values)
  assert counts.sum() & (counts.sum() - 1) == 0
  stream, escaped = coding.encode(values, lo, counts)
  assert len(escaped) >= 5  # The outliers did not widen the table to ~1900 entries.
  np.testing.assert_array_equal(coding.decode(stream, len(values), lo, counts, escaped), values)
  support = np.arange(-30, 31)
  laplace = coding.quantize_pmf(np.append(np.exp(-np.abs(support) / 2.0), 1e-4), 12)
  assert _payload_size(values, lo, counts) < _payload_size(values, -30, laplace)


def test_stored_bytes_predicts_the_payload_within_a_few_bytes():
  rng = np.random.default_rng(2)
  values = rng.choice([-2, -1, 0, 1, 2, 3], 30_000, p=[.01, .04, .9, .03, .01, .01])
  lo, counts = coding.empirical_table(values)
  hist = np.bincount(coding.to_indices(values, lo, len(counts))[0], minlength=len(counts))
  predicted = coding.stored_bytes(hist, lo, counts, np.zeros(0, np.int64))
  actual = _payload_size(values, lo, counts)
  assert abs(actual - predicted) < 8, (actual, predicted)


def test_a_group_of_one_repeated_value_costs_almost_nothing():
  values = np.full(100_000, 3, np.int64)
  lo, counts = coding.empirical_table(values)
  stream, escaped = coding.encode(values, lo, counts)
  assert len(stream) <= 4 and len(escaped) == 0
  np.testing.assert_array_equal(coding.decode(stream, len(values), lo, counts, escaped), values)


@st.composite
def sparse_latents(draw):
  """Integer groups like a trained EPR group's: mostly zeros, a few values over a wide range."""
  n = draw(st.integers(1, 3000))
  rng = np.random.default_rng(draw(st.integers(0, 2**31)))
  spread = draw(st.floats(0.3, 20))
  values = np.round(rng.laplace(0, spread, n)) * (rng.random(n) < draw(st.floats(0, 1)))
  return np.clip(values, -draw(st.integers(1, 80)), None).astype(np.int64)


@settings(max_examples=80, deadline=None)
@given(sparse_latents())
def test_every_code_round_trips_and_format_7_is_never_longer(values):
  """Format 7 (binarized modes, trimmed streams) and 8 (ACTIVE_BASE) decode every group
  exactly, and the writer's choice is never longer than the older format's code of the
  same values (as a vector, and as a kernel whose last rows drifted to one value)."""
  from erp import container, latent_code
  if values.size % 4 == 0 and values.size >= 8:
    values = values.reshape(-1, 4)
    values[values.shape[0] // 2:] = values.flat[0]
  sizes = {}
  for version in (6, 7, 8):
    w = container.Writer()
    latent_code.write(w, values, version=version)
    decoded, _ = latent_code.read(container.Reader(w.getvalue(), 'g'), values.shape, 'g',
                                  version=version)
    np.testing.assert_array_equal(decoded, values)
    sizes[version] = len(w.getvalue())
  assert sizes[8] <= sizes[7] <= sizes[6]


def test_an_active_code_may_give_its_input_mask_relative_to_a_reference():
  """Format 9: that kernel's live rows are the previous layer's live outputs; handed them as
  its reference, the writer codes the row mask as two constant codes (ACTIVE_REF), >= 25
  bytes fewer than format 8, and the reader handed the same reference decodes it exactly;
  without one, or with one of the wrong length, or as format 8, it refuses the code; a
  reference that does not help leaves the format-8 code."""
  from erp import container, latent_code
  rng = np.random.default_rng(3)
  values = np.full((500, 10), -1, np.int64)
  live = rng.choice(500, 86, replace=False)
  values[live] += rng.integers(-3, 4, (86, 10)) * (rng.random((86, 10)) < 0.5)
  values[live, 0] = 2  # Every live row holds a value other than the base.
  reference = np.zeros(500, bool)
  reference[live] = True
  w8, w9 = container.Writer(), container.Writer()
  latent_code.write(w8, values, version=8, reference=reference)
  code = latent_code.write(w9, values, reference=reference)
  blob = w9.getvalue()
  assert code['mode'] == latent_code.ACTIVE
  assert blob[0] == latent_code.ACTIVE_BASE | latent_code.REF
  assert len(blob) <= len(w8.getvalue()) - 25, (len(blob), len(w8.getvalue()))
  decoded, stream = latent_code.read(container.Reader(blob, 'g'), values.shape, 'g',
                                     reference=reference)
  np.testing.assert_array_equal(decoded, values)
  assert stream == code['stream']
  for bad in (None, reference[:-1]):
    with pytest.raises(ErpError, match='output mask of the kernel before it'):
      latent_code.read(container.Reader(blob, 'g'), values.shape, 'g', reference=bad)
  with pytest.raises(ErpError, match='malformed code head'):
    latent_code.read(container.Reader(blob, 'g'), values.shape, 'g', version=8,
                     reference=reference)
  useless = rng.random(500) < 0.5  # Independent of the rows: no gain, the plain code.
  w = container.Writer()
  latent_code.write(w, values, reference=useless)
  assert w.getvalue() == w8.getvalue()
  # A reference that disagrees on a few rows still decodes exactly.
  off = reference.copy()
  off[rng.choice(500, 5, replace=False)] ^= True
  w = container.Writer()
  latent_code.write(w, values, reference=off)
  np.testing.assert_array_equal(latent_code.read(container.Reader(w.getvalue(), 'g'),
                                                 values.shape, 'g', reference=off)[0], values)


def test_an_active_code_may_subtract_a_drifted_base():
  """Format 8: a 500 x 10 kernel holding -1 where 0 is meant (as the LeNet5-Caffe record
  files' fc2: 414 rows all -1, the others -1 but for a few values) is coded as -1 and the
  ACTIVE code of values + 1, in at least 20 bytes fewer than format 7; it decodes exactly;
  format 7 readers refuse its head, as does a base of 0."""
  from erp import container, latent_code
  rng = np.random.default_rng(3)
  values = np.full((500, 10), -1, np.int64)
  live = rng.choice(500, 86, replace=False)
  values[live] += (np.round(rng.laplace(0, 3, (86, 10)))
                   * (rng.random((86, 10)) < 0.5)).astype(np.int64)
  w7, w8 = container.Writer(), container.Writer()
  latent_code.write(w7, values, version=7)
  code = latent_code.write(w8, values)
  blob = w8.getvalue()
  assert code['mode'] == latent_code.ACTIVE and blob[0] == latent_code.ACTIVE_BASE
  assert len(blob) <= len(w7.getvalue()) - 20, (len(blob), len(w7.getvalue()))
  decoded, stream = latent_code.read(container.Reader(blob, 'g'), values.shape, 'g')
  np.testing.assert_array_equal(decoded, values)
  assert stream == code['stream']
  with pytest.raises(ErpError, match='malformed code head'):
    latent_code.read(container.Reader(blob, 'g'), values.shape, 'g', version=7)
  zero_base = container.Writer().varint(latent_code.ACTIVE_BASE).sint(0).getvalue() + blob[2:]
  with pytest.raises(ErpError, match='base 0'):
    latent_code.read(container.Reader(zero_base, 'g'), values.shape, 'g')
  shifted = container.Writer()  # The same values coded with no base: the same values back.
  assert latent_code.write(shifted, values + 1)['mode'] == latent_code.ACTIVE
  np.testing.assert_array_equal(
      latent_code.read(container.Reader(shifted.getvalue(), 'g'), values.shape, 'g')[0],
      values + 1)


def test_binarized_code_learns_a_sparse_wide_group_in_fewer_bits():
  """A 5,000-value group, 95 % zeros and the rest spread over +-25 (a LeNet5 fc2 latent's
  shape): the binarized code's bits beat the best block-adaptive K-symbol code by over
  40 bits (it learns a few binary probabilities, not a 51-symbol histogram), and the
  stream decodes back exactly."""
  from erp import adaptive, binarized
  rng = np.random.default_rng(1)
  values = (np.round(rng.laplace(0, 6, 5000)) * (rng.random(5000) < 0.05)).astype(np.int64)
  values = np.clip(values, -25, 25)
  lo = int(values.min())
  symbols = values - lo
  flat_bits = adaptive.best_alpha(symbols, int(symbols.max()) + 1)[1]
  alpha, bits = binarized.best_alpha(values)
  assert bits < flat_bits - 40, (bits, flat_bits)
  stream = binarized.encode(values, alpha)
  assert abs(8 * len(stream) - bits) < 40
  np.testing.assert_array_equal(
      binarized.decode(stream, values.size, int(np.abs(values).max()), alpha), values)
  assert binarized.best_alpha(np.zeros(9, np.int64)) is None  # Nothing to code.
  assert binarized.best_alpha(np.array([0, binarized.MAX_LEVELS + 1])) is None


def test_trimmed_streams_are_the_shortest_the_search_finds_and_bind_to_their_values():
  """A format-7 stream is cut to where one byte fewer no longer decodes to its values;
  a byte appended, or the code read as a format-6 file's, is refused; a binarized head
  claiming a larger max |v| is read as other values reaching it, or refused."""
  from erp import container, flat_code, latent_code
  rng = np.random.default_rng(5)
  saved = 0
  for trial in range(20):
    values = (rng.integers(-6, 7, 400) * (rng.random(400) < 0.3)).astype(np.int64)
    w6, w7 = container.Writer(), container.Writer()
    latent_code.write(w6, values, version=6)
    code = latent_code.write(w7, values)
    saved += len(w6.getvalue()) - len(w7.getvalue())
    stream = code['stream']
    head = w7.getvalue()[:-len(stream)]
    try:  # One byte fewer is another code (the code of other values) or none.
      shorter, _ = latent_code.read(container.Reader(head + stream[:-1], 'g'), values.shape, 'g')
      assert not np.array_equal(shorter, values)
    except ErpError:
      pass
    with pytest.raises(ErpError, match='not the coding of the values'):
      latent_code.read(container.Reader(head + stream + b'\x00', 'g'), values.shape, 'g')
    if code['mode'] >= flat_code.BINARIZED:
      with pytest.raises(ErpError, match='malformed code head'):
        latent_code.read(container.Reader(w7.getvalue(), 'g'), values.shape, 'g', version=6)
      k = int(np.abs(values).max())
      bigger = container.Writer().varint((k + 1) << 5 | code['mode']).getvalue()
      try:  # Read as the code of values reaching k + 1 (then they are other values) or not.
        other, _ = latent_code.read(container.Reader(bigger + stream, 'g'), values.shape, 'g')
        assert int(np.abs(other).max()) == k + 1
      except ErpError as e:
        assert 'max |value|' in str(e) or 'not the coding' in str(e), e
  assert saved >= 20  # About 2 bytes a group (the flush's tail; binarized codes too).
