"""SuRP's successive-refinement code: a pruned tensor, refined by more bits, decoded exactly."""
import numpy as np
import pytest

import erp
from erp.codecs import surp as refinement


def _laplace(shape, seed=0):
  return np.random.default_rng(seed).laplace(0, 0.05, shape).astype(np.float32)


def test_decoded_tensor_is_pruned_to_the_sparsity_with_the_right_signs():
  w = _laplace((200, 150))
  payload, stats = refinement.encode_tensor(w, 0.9, np.log(w.size))
  decoded = refinement.decode_tensor(payload, w.shape)
  nonzero = decoded != 0
  assert stats['nonzero'] == nonzero.sum() == int(np.ceil(0.1 * w.size))
  assert np.all(np.sign(decoded[nonzero]) == np.sign(w[nonzero]))
  # Every step subtracts a threshold the residual exceeds: never past the weight.
  assert np.all(np.abs(decoded) <= np.abs(w) * (1 + 1e-6))
  # The weights kept are the large ones: none kept is below the 80th percentile.
  assert np.abs(w[nonzero]).min() > np.quantile(np.abs(w), 0.8)


def test_more_iterations_cost_more_bytes_and_lower_the_distortion():
  w = _laplace((100, 100), seed=1)
  results = []
  for extra in (0.0, 1.0, 3.0):
    payload, _ = refinement.encode_tensor(w, 0.8, np.log(w.size), extra)
    decoded = refinement.decode_tensor(payload, w.shape)
    results.append((len(payload), float(np.mean((decoded - w)**2))))
  sizes, errors = zip(*results)
  assert sizes[0] < sizes[1] < sizes[2], sizes
  assert errors[0] > errors[1] > errors[2], errors


def test_decoder_replays_the_encoders_reconstruction():
  x = np.abs(_laplace(5000, seed=2)).astype(np.float64)
  x /= x.sum()
  beta = 3 * np.log(x.size)
  gaps, refreshes = refinement.encode_magnitudes(x, 1000, beta, extra=0.5)
  assert gaps[0] == 0 and np.all(refreshes[1:] >= 1) and len(refreshes) == (gaps == 0).sum()
  decoded = refinement.decode_magnitudes(x.size, beta, gaps, refreshes)
  assert np.count_nonzero(decoded) >= 1000
  assert np.all(decoded <= x + 1e-12)
  # Replaying the thresholds recovers most of the kept weights' mass (~88 % here).
  assert np.sum(decoded) > 0.8 * np.sum(x[decoded > 0])


def test_already_sparse_and_all_zero_tensors():
  w = _laplace((60, 50), seed=3)
  w[np.abs(w) < np.quantile(np.abs(w), 0.97)] = 0  # A retrained pruned kernel.
  payload, stats = refinement.encode_tensor(w, 0.97, np.log(w.size), extra=2.0)
  decoded = refinement.decode_tensor(payload, w.shape)
  assert np.array_equal(decoded != 0, w != 0)
  np.testing.assert_allclose(decoded, w, atol=0.25 * np.abs(w).max())
  zeros = np.zeros((8, 8), np.float32)
  payload, stats = refinement.encode_tensor(zeros, 0.5, 4.0)
  assert stats['nonzero'] == 0
  assert np.array_equal(refinement.decode_tensor(payload, zeros.shape), zeros)


def test_damaged_payloads_are_named_errors():
  w = _laplace((40, 30), seed=4)
  payload, _ = refinement.encode_tensor(w, 0.8, np.log(w.size))
  with pytest.raises(erp.ErpError, match='truncated'):
    refinement.decode_tensor(payload[:-3], w.shape)
  with pytest.raises(erp.ErpError, match='trailing'):
    refinement.decode_tensor(payload + b'\0', w.shape)
  with pytest.raises(erp.ErpError):
    refinement.decode_tensor(payload, (10, 10))  # Wrong shape for the code.
