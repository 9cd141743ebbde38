"""SuRP's successive-refinement code: a pruned tensor, refined by more bits, decoded exactly."""
import numpy as np
import pytest

import erp
from erp import container
from erp import file as file_lib
from erp.codecs import surp as refinement
from erp.codecs import surp_global


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


def _model(seed=5):
  rng = np.random.default_rng(seed)
  return [rng.laplace(0, 0.05, (400, 100)).astype(np.float32),
          rng.normal(0, 0.1, 100).astype(np.float32),
          rng.laplace(0, 0.2, (100, 10)).astype(np.float32), np.zeros(10, np.float32)]


def test_global_code_prunes_all_tensors_under_one_threshold():
  tensors = _model()
  payloads, stats = surp_global.encode(tensors, 0.9, alpha=10.0)
  decoded = surp_global.decode(payloads, [t.shape for t in tensors])
  size = sum(t.size for t in tensors)
  nonzero = [int(np.count_nonzero(d)) for d in decoded]
  assert nonzero == stats['nonzero'] and sum(nonzero) == int(np.ceil(0.1 * size))
  for w, d in zip(tensors, decoded):
    kept = d != 0
    assert np.all(np.sign(d[kept]) == np.sign(w[kept]))
    assert np.all(np.abs(d) <= np.abs(w) * (1 + 1e-5))  # Thresholds never overshoot.
  # One threshold on |w| / ||w||_2: the large tensor's normalized weights are small.
  assert nonzero[0] / tensors[0].size < 0.1 < nonzero[2] / tensors[2].size
  # Within a tensor the kept weights are the large ones.
  assert np.abs(tensors[0][decoded[0] != 0]).min() > np.quantile(np.abs(tensors[0]), 0.8)


def test_global_code_through_a_file_and_its_budget():
  tensors = _model(6)
  payloads, _ = surp_global.encode(tensors, 0.8, alpha=10.0, extra=0.5)
  rows = [file_lib.coded_row(f'layer{i}', surp_global.NAME, '', t.shape, p)
          for i, (t, p) in enumerate(zip(tensors, payloads))]
  decoded, _ = file_lib.decode_bytes(file_lib.to_bytes(rows))
  for i, want in enumerate(surp_global.decode(payloads, [t.shape for t in tensors])):
    np.testing.assert_array_equal(decoded['params'][f'layer{i}'], want)
  # The first leaf declares the iterations of all: the budget counts them before decoding.
  n = 1 << 20
  head = container.Writer().varint(1).f32([1.0, 4.0]).varint(8 * 2 * n)  # Legal: <= 16 n.
  rows = [file_lib.coded_row('a', surp_global.NAME, '', (n,), head.getvalue()),
          file_lib.coded_row('b', surp_global.NAME, '', (n,), b'\0')]
  with pytest.raises(erp.ErpError, match='declares'):
    file_lib.decode_bytes(file_lib.to_bytes(rows))


def test_global_code_damage_is_a_named_error():
  tensors = _model(7)
  payloads, _ = surp_global.encode(tensors, 0.9, alpha=10.0)
  shapes = [t.shape for t in tensors]
  with pytest.raises(erp.ErpError, match='carry the code'):
    surp_global.decode([payloads[1], payloads[0]] + payloads[2:], shapes)
  with pytest.raises(erp.ErpError, match='truncated'):
    surp_global.decode([payloads[0][:-2]] + payloads[1:], shapes)
  with pytest.raises(erp.ErpError):
    surp_global.decode(payloads, [(10, 10)] + shapes[1:])

