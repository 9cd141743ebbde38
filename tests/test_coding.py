from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from erp import coding
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


def test_escape_count_mismatch_is_an_error():
  counts = coding.quantize_pmf([0.5, 0.4, 0.1], 12)
  stream, escaped = coding.encode(np.array([0, 1, 7, 0]), 0, counts)
  assert escaped.tolist() == [7]
  with pytest.raises(ErpError, match='escapes'):
    coding.decode(stream, 4, 0, counts, np.array([], np.int64))
