"""Short end-to-end runs on real MNIST: float training, EPR training, export, reload."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import erp
from erp import coding
from erp import export
from erp import runs
from erp import train
from erp import train_step
from erp import workdir as workdir_lib
from conftest import REPO, load_config


def _config(data_dir, model='lenet300', **rd):
  c = load_config(f'mnist_{model}')
  c.unlock()
  c.data.dir = data_dir
  c.train.num_epochs = 1
  c.train.log_every_steps = 100
  for k, v in rd.items():
    setattr(c.rd, k, v)
  return c


def test_float_training_beats_chance_by_far_and_writes_results(tmp_path, data_dir):
  result = train.train_and_evaluate(_config(data_dir), str(tmp_path))
  assert result['test_error_pct'] < 6.0  # Chance is 90 %.
  saved = json.loads((tmp_path / 'result.json').read_text())
  assert saved['test_error_pct'] == result['test_error_pct']
  assert saved['method'] == 'float' and saved['num_params'] == 266_610
  assert saved['num_train'] == 50_000 and saved['val_error_pct'] < 6.0  # 10,000 held out.
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  evals = [json.loads(l) for l in lines if json.loads(l)['split'] != 'train']
  assert [e['split'] for e in evals] == ['val']  # The test set: once, in result.json.
  assert evals[0]['error_pct'] == saved['val_error_pct']
  # Resuming after the last epoch restores the checkpoint instead of retraining.
  again = train.train_and_evaluate(_config(data_dir), str(tmp_path))
  assert again['test_error_pct'] == result['test_error_pct']
  assert again['steps'] == result['steps']
  # Its wall time includes the first session's training, read from metrics.jsonl.
  assert again['wall_s'] > result['train_wall_s'] > 0


@pytest.fixture(scope='module')
def epr_run(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp('epr')
  config = _config(data_dir, enabled=True, lmbda=1.0)
  return config, workdir, train.train_and_evaluate(config, str(workdir))


def test_epr_run_exports_a_file_that_decodes_to_the_trained_model(epr_run):
  config, workdir, result = epr_run
  export = result['export']
  assert export['bit_exact']
  assert export['error_pct'] == result['test_error_pct'] < 10.0
  assert export['val_error_pct'] == result['val_error_pct'] < 10.0
  assert set(erp.load_metadata(workdir / 'model.erp')) == {'method', 'model', 'width', 'dataset'}
  # Every evaluation logs, per group, the priors' bits beside the coder's.
  record = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()][-1]
  assert record['split'] == 'val' and record['num_bytes'] == export['num_bytes']
  for group, bits in record['groups'].items():
    assert bits['coded_bits'] == export['groups'][group]['coded_bits']
  assert record['est_over_coded'] == pytest.approx(
      export['est_latent_bits'] / export['coded_latent_bits'], rel=1e-6)
  # est / coded = est / iid (the priors' fit) x iid / coded (the coder's structure).
  assert record['iid_latent_bits'] == pytest.approx(export['iid_latent_bits'])
  assert record['est_over_iid'] * record['iid_over_coded'] == pytest.approx(
      record['est_over_coded'], rel=1e-6)
  assert 1.0 <= record['est_over_iid'] < 1.5  # A prior never beats the histogram itself.
  assert os.path.getsize(workdir / 'model.erp') == export['num_bytes']
  # The file is far smaller than float32, and the latents' own histogram codes
  # them in no more bits than the training-time estimate from the priors.
  assert export['num_bytes'] < result['float32_num_bytes'] / 8
  assert export['coded_latent_bits'] <= 1.02 * export['est_latent_bits'] + 64


def test_prior_tables_code_at_the_training_estimate(epr_run, tmp_path):
  """export.table='prior' codes with the learned densities, as the paper does."""
  config, workdir, result = epr_run
  config, trainable, batch_stats = export.load_workdir(str(workdir))
  config.export.table = 'prior'
  est, stats = export.write_run_file(str(tmp_path / 'prior.erp'), config, trainable,
                                     batch_stats)
  coded = sum(s['coded_bits'] for s in stats.values())
  assert 0.9 < coded / sum(est.values()) < 1.1, (coded, sum(est.values()))
  # The latents' empirical entropy: no table codes them in fewer bits.
  entropy = sum(coding.empirical_bits(np.round(np.asarray(latent)))
                for latent in trainable.latents.values())
  assert entropy == pytest.approx(sum(s['iid_bits'] for s in stats.values()))
  assert coded >= entropy - 64 * len(stats), (coded, entropy)
  _, variables, _ = erp.load(str(tmp_path / 'prior.erp'))
  _, expected, _ = erp.load(str(workdir / 'model.erp'))
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rate_term_decreases_during_training(epr_run):
  _, workdir, _ = epr_run
  bits = [json.loads(l)['bits'] for l in (workdir / 'metrics.jsonl').read_text().splitlines()
          if json.loads(l)['split'] == 'train']
  assert bits[-1] < 0.8 * bits[0], bits


def test_loaded_params_equal_in_memory_params(epr_run):
  config, workdir, _ = epr_run
  _, trainable, batch_stats = export.load_workdir(str(workdir))
  expected = export.variables_of(trainable, batch_stats)
  _, variables, loaded_config = erp.load(str(workdir / 'model.erp'))
  assert (loaded_config.model.name, loaded_config.data.name) == ('lenet300', 'mnist')
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_reexport_rewrites_the_file_and_its_record(epr_run, tmp_path):
  _, workdir, result = epr_run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  (copy / 'model.erp').unlink()
  record = export.reexport(str(copy))
  saved = json.loads((copy / 'result.json').read_text())['export']
  # The same checkpoint makes the same file, and the record is rewritten from it.
  assert (copy / 'model.erp').read_bytes() == (workdir / 'model.erp').read_bytes()
  assert saved['num_bytes'] == record['num_bytes'] == result['export']['num_bytes']
  assert saved['error_pct'] == result['export']['error_pct']
  assert saved['coded_latent_bits'] == sum(g['coded_bits'] for g in saved['groups'].values())
  assert saved['iid_latent_bits'] == pytest.approx(
      sum(g['iid_bits'] for g in saved['groups'].values()))
  assert saved['iid_latent_bits'] == pytest.approx(result['export']['iid_latent_bits'])


def test_init_from_a_float_checkpoint_starts_at_its_weights(tmp_path, data_dir):
  float_dir = tmp_path / 'float'
  c = _config(data_dir)
  c.train.num_epochs = 1
  train.train_and_evaluate(c, str(float_dir))
  c = _config(data_dir, enabled=True)
  c.init_from = str(float_dir)
  model, ds, trainable, _ = runs.setup(c)
  params = erp.decode(trainable, quantize=False)
  raw = workdir_lib.pretrained_variables(str(float_dir), {'params': params})
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(raw['params'])):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # The same float run as a distillation teacher: its own logits, fixed.
  from erp import distill
  c.train.distill_from, c.train.distill_weight = str(float_dir), 0.5
  teacher = distill.teacher(c, model, ds)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 28, 28, 1)), jnp.float32)
  np.testing.assert_allclose(teacher(x), model.apply(raw, x, train=False), rtol=1e-5, atol=1e-5)
  c.train.distill_weight = 0.0
  assert distill.teacher(c, model, ds) is None
  # How the float run was trained, from its config.json (runs record it: float_runs).
  assert workdir_lib.float_run_recipe(str(float_dir)) == {'augment': False, 'num_epochs': 1}
  assert workdir_lib.float_run_recipe(str(tmp_path / 'nowhere')) is None
  (float_dir / 'config.json').write_text('{"train": {"augment": tru')
  with pytest.raises(erp.ErpError, match='float run.*config.json'):
    workdir_lib.float_run_recipe(str(float_dir))
  c.init_from = str(tmp_path / 'nowhere')
  with pytest.raises(erp.ErpError, match='no checkpoint'):
    runs.setup(c)


def test_a_workdir_resumes_only_the_run_of_its_own_config(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  c = _config(data_dir)
  workdir_lib.prepare(str(workdir), c)
  (workdir / 'metrics.jsonl').write_text('{"wall_s": 1.0}\n')  # A started run.
  other = _config(data_dir)
  other.optim.lr = 2e-3
  with pytest.raises(erp.ErpError, match=r'another config \(differs in: optim.lr\).*--overwrite'):
    train.train_and_evaluate(other, str(workdir))
  assert '"lr": 0.001' in (workdir / 'config.json').read_text()  # Not overwritten.
  switched = _config(data_dir, enabled=True, lmbda=1.0)
  with pytest.raises(erp.ErpError, match='rd.enabled'):
    train.train_and_evaluate(switched, str(workdir))
  # A damaged checkpoint of the same config is one clear error, not a msgpack traceback.
  (workdir / 'checkpoint.msgpack').write_bytes(b'\x93garbage')
  with pytest.raises(erp.ErpError, match='checkpoint in .* is damaged'):
    train.train_and_evaluate(_config(data_dir), str(workdir))
  # --overwrite starts afresh: the damaged checkpoint and old metrics are gone.
  workdir_lib.prepare(str(workdir), other, overwrite=True)
  assert not (workdir / 'checkpoint.msgpack').exists()
  assert not (workdir / 'metrics.jsonl').exists()
  not_a_dir = tmp_path / 'file'
  not_a_dir.write_text('x')
  with pytest.raises(erp.ErpError, match='not a directory'):
    train.train_and_evaluate(_config(data_dir), str(not_a_dir))


def test_checkpoints_are_orbax_keep_the_newest_and_old_msgpack_still_starts_a_run(tmp_path,
                                                                                 data_dir):
  import flax
  c = _config(data_dir)
  c.train.num_epochs, c.train.keep_checkpoints = 3, 2
  result = train.train_and_evaluate(c, str(tmp_path / 'float'))
  steps = sorted(int(n) for n in os.listdir(tmp_path / 'float' / 'checkpoints'))
  assert steps == [result['steps'] // 3 * 2, result['steps']]  # Epochs 2 and 3 kept.
  # An erp 0.1 checkpoint.msgpack of the same float run still works as init_from.
  raw = workdir_lib.read_checkpoint(str(tmp_path / 'float'))
  legacy = tmp_path / 'legacy'
  legacy.mkdir()
  (legacy / 'checkpoint.msgpack').write_bytes(flax.serialization.msgpack_serialize(raw))
  c = _config(data_dir, enabled=True, lmbda=1.0)
  for start in (tmp_path / 'float', legacy):
    c.init_from = str(start)
    _, _, trainable, _ = runs.setup(c)
    decoded = erp.decode(trainable, quantize=False)
    np.testing.assert_allclose(decoded['Dense_0']['kernel'],
                               raw['trainable']['floats']['Dense_0/kernel'], atol=1e-5)
  # A damaged orbax checkpoint is one clear error.
  newest = tmp_path / 'float' / 'checkpoints' / str(steps[-1])
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.write(b'\0garbage\0')
  c = _config(data_dir)
  c.train.num_epochs, c.train.keep_checkpoints = 3, 2
  with pytest.raises(erp.ErpError, match='damaged'):
    train.train_and_evaluate(c, str(tmp_path / 'float'))


def test_a_run_can_be_sized_in_steps(tmp_path, data_dir):
  c = _config(data_dir)
  c.train.num_steps = 50
  result = train.train_and_evaluate(c, str(tmp_path))
  assert result['steps'] == 50 and result['test_error_pct'] < 50  # Chance: 90 %.


def _steps(c, num_steps, batch=64):
  """The metrics of num_steps train steps of config c from its initial state, on the
  first num_steps batches of the training split, and the final state."""
  from erp import data
  model, ds, trainable, batch_stats = runs.setup(c)
  tx = train_step.make_optimizer(c, 100, 100)
  state = train_step.initial_state(c, trainable, batch_stats, tx, jax.random.PRNGKey(0))
  step = train_step.make_train_step(c, model, ds, tx, 50000)
  images, labels = data.load_split(c.data, 'train')
  history = []
  for i in range(num_steps):
    state, metrics = step(state, images[i * batch:(i + 1) * batch],
                          labels[i * batch:(i + 1) * batch])
    history.append(metrics)
  return history, state


def test_bfloat16_compute_trains_like_float32_and_keeps_the_state_float32(data_dir):
  """train.compute_dtype='bfloat16': forward and backward in bfloat16 (a GPU's fast path),
  the trainable state and batch statistics in float32; the first loss within bfloat16's
  precision of float32's, and the loss falls."""
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    c = _config(data_dir, model='lenet5', enabled=True, lmbda=1.0)
    c.train.compute_dtype = dtype
    history, state = _steps(c, 30)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(state.trainable.latents))
    losses[dtype] = [float(m['ce']) for m in history]
  assert abs(losses['bfloat16'][0] - losses['float32'][0]) < 0.03 * losses['float32'][0]
  assert np.mean(losses['bfloat16'][-5:]) < 0.5 * losses['bfloat16'][0]
  c = _config(data_dir)
  c.train.compute_dtype = 'float16'
  with pytest.raises(erp.ErpError, match="compute_dtype must be 'float32' or 'bfloat16'"):
    train.train_and_evaluate(c, '/nonexistent/never/written')


def test_lmbda_warmup_ramps_the_rate_weight_then_holds_it(data_dir):
  """rd.lmbda_warmup_epochs: step s (from 0) weighs the bits by lmbda * min(1, (s + 1) / W),
  W the warm-up in steps; a negative or NaN warm-up is refused."""
  c = _config(data_dir, enabled=True, lmbda=2.0, lmbda_warmup_epochs=4 * 64 / 50000)
  c.train.batch_size = 64  # W = 4 steps.
  weights = [float((m['loss'] - m['ce']) * 50000 / m['bits']) for m in _steps(c, 6)[0]]
  np.testing.assert_allclose(weights, [0.5, 1.0, 1.5, 2.0, 2.0, 2.0], rtol=1e-4)
  for bad in (-1.0, float('nan')):
    c.rd.lmbda_warmup_epochs = bad
    with pytest.raises(erp.ErpError, match='rd.lmbda_warmup_epochs must be a finite number'):
      train.train_and_evaluate(c, '/nonexistent/never/written')


def test_metrics_go_to_jsonl_and_tensorboard_only_when_its_extra_is_installed(tmp_path):
  import importlib.util
  metrics = workdir_lib.Metrics(str(tmp_path))
  metrics.write({'step': 1, 'split': 'train', 'loss': 0.5, 'group_bits': {'a': 1.0}})
  assert json.loads((tmp_path / 'metrics.jsonl').read_text())['loss'] == 0.5
  if importlib.util.find_spec('clu') is None or importlib.util.find_spec('tensorboard') is None:
    with pytest.raises(erp.ErpError, match=r"pip install -e '.\[tensorboard\]'"):
      workdir_lib.Metrics(str(tmp_path), tensorboard=True)
  else:
    workdir_lib.Metrics(str(tmp_path), tensorboard=True).write(
        {'step': 2, 'split': 'test', 'error_pct': 3.0})
    assert any(n.startswith('events.out.tfevents') for n in os.listdir(tmp_path / 'tensorboard'))


@pytest.mark.parametrize('flags', [
    [], ['--config.rd.rate_every=2', '--config.rd.latent_gradient=interpolated']])
def test_two_devices_follow_the_one_device_trajectory(tmp_path, data_dir, flags):
  """Data parallel over XLA's host platform split in 2 devices: same losses and rates
  as on one device, up to float reordering, and result.json records the device count;
  also with the rate every other step (its held gradient replicated with the state)."""
  import json
  import subprocess
  import sys
  records = {}
  for n in (1, 2):
    env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={n}',
           'ERP_DATA_DIR': data_dir}
    workdir = tmp_path / f'dev{n}'
    out = subprocess.run(
        [sys.executable, '-m', 'erp.train',
         '--config', os.path.join(REPO, 'configs', 'mnist_lenet300.py'), '--config.rd.enabled=True', '--config.rd.lmbda=0.1', '--config.train.num_steps=30',
         '--config.train.log_every_steps=10', f'--workdir={workdir}', *flags],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(workdir / 'result.json') as f:
      result = json.load(f)
    assert result['num_devices'] == n
    with open(workdir / 'metrics.jsonl') as f:
      train = [json.loads(l) for l in f if '"train"' in l]
    records[n] = np.array([[m['loss'], m['bits']] for m in train])
  assert records[1].shape == records[2].shape == (3, 2)
  assert records[1][-1, 0] < 0.8 * records[1][0, 0]  # It trained.
  np.testing.assert_allclose(records[2], records[1], rtol=1e-4)


def test_a_teacher_of_another_model_is_built_from_its_own_run(tmp_path, data_dir):
  from erp import distill
  teacher_dir = str(tmp_path / 'lenet5_float')  # A float LeNet5 run (untrained will do).
  t = _config(data_dir, model='lenet5')
  model_t, _, trainable_t, batch_stats_t = runs.setup(t)
  workdir_lib.write_config(teacher_dir, t)
  workdir_lib.save_checkpoint(teacher_dir, train_step.TrainState(
      step=jnp.zeros((), jnp.int32), trainable=trainable_t, batch_stats=batch_stats_t,
      opt_state={}, rng=jax.random.PRNGKey(0)))
  c = _config(data_dir, enabled=True)  # An MLP student.
  c.train.distill_from, c.train.distill_weight = teacher_dir, 0.5
  assert distill.teacher_model(c) == {'name': 'lenet5', 'width': 1}
  model, ds, _, _ = runs.setup(c)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 28, 28, 1)), jnp.float32)
  expected = model_t.apply(export.variables_of(trainable_t, batch_stats_t), x, train=False)
  np.testing.assert_allclose(distill.teacher(c, model, ds)(x), expected, rtol=1e-5, atol=1e-5)
  c.train.num_steps, c.train.export, c.rd.lmbda = 5, False, 0.1  # A distilled run records it.
  result = train.train_and_evaluate(c, str(tmp_path / 'student'))
  assert result['teacher_model'] == {'name': 'lenet5', 'width': 1}
  assert json.loads((tmp_path / 'student' / 'result.json').read_text())['teacher_model'][
      'name'] == 'lenet5'
  # How the teacher was trained is recorded (no init_from here: no entry for it).
  assert result['float_runs'] == {'distill_from': {'augment': False,
                                                   'num_epochs': t.train.num_epochs}}
  c.data.name = 'fashion_mnist'  # A teacher of another dataset is refused.
  with pytest.raises(erp.ErpError, match='teacher run trained on mnist'):
    distill.teacher(c, model, ds)
  with open(os.path.join(teacher_dir, 'config.json'), 'w') as f:
    f.write('{"model": 3')  # Damaged: one clear error, not the student's model by mistake.
  with pytest.raises(erp.ErpError, match='teacher run'):
    distill.teacher(c, model, ds)


def test_an_ensemble_teacher_averages_its_members_soft_targets(tmp_path, data_dir):
  """distill_from='A,B': the teacher's softmax at the temperature is the mean of A's and
  B's; the ensemble is recorded, and members that disagree on model or recipe are refused."""
  from erp import distill
  t = _config(data_dir, model='lenet5')
  model_t, ds, _, _ = runs.setup(t)
  dirs, expected = [], []
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 28, 28, 1)), jnp.float32)
  for seed in (1, 2):  # Two untrained float LeNet5 runs that differ by their seed.
    t.seed = seed
    _, _, trainable, batch_stats = runs.setup(t)
    dirs.append(str(tmp_path / f'lenet5_seed{seed}'))
    workdir_lib.write_config(dirs[-1], t)
    workdir_lib.save_checkpoint(dirs[-1], train_step.TrainState(
        step=jnp.zeros((), jnp.int32), trainable=trainable, batch_stats=batch_stats,
        opt_state={}, rng=jax.random.PRNGKey(0)))
    expected.append(jax.nn.softmax(model_t.apply(
        export.variables_of(trainable, batch_stats), x, train=False) / 3.0))
  assert float(jnp.abs(expected[0] - expected[1]).max()) > 1e-3  # Members that differ.
  c = _config(data_dir, enabled=True)  # An MLP student.
  c.train.distill_from, c.train.distill_weight, c.train.distill_temperature = (
      f'{dirs[0]}, {dirs[1]}', 0.5, 3.0)
  assert distill.teacher_model(c) == {'name': 'lenet5', 'width': 1, 'ensemble': 2}
  assert distill.teacher_recipe(c) == {'augment': False, 'num_epochs': t.train.num_epochs}
  model, ds, _, _ = runs.setup(c)
  soft = jax.nn.softmax(distill.teacher(c, model, ds)(x) / 3.0)
  np.testing.assert_allclose(soft, (expected[0] + expected[1]) / 2, rtol=1e-5, atol=1e-6)
  c.train.distill_from = f'{dirs[0]},'
  with pytest.raises(erp.ErpError, match='an empty run path'):
    distill.teacher(c, model, ds)
  t.train.num_epochs += 1  # A member trained otherwise: the record would not be one recipe.
  workdir_lib.write_config(dirs[1], t)
  c.train.distill_from = ','.join(dirs)
  with pytest.raises(erp.ErpError, match='must share their training settings'):
    distill.teacher(c, model, ds)  # Before training, not when result.json is written.
  t.model.name = 'lenet300'  # A member of another model.
  workdir_lib.write_config(dirs[1], t)
  with pytest.raises(erp.ErpError, match='must share their model'):
    distill.teacher(c, model, ds)


def test_distillation_loss_pulls_toward_the_teacher():
  """weight=0 is the labels' cross-entropy; with weight=1 the loss is smallest, and its
  gradient zero, where the student's logits equal the teacher's (any temperature)."""
  from erp import distill
  rng = np.random.default_rng(0)
  labels = jnp.asarray(rng.integers(0, 10, 32))
  student = jnp.asarray(rng.normal(size=(32, 10)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(32, 10)), jnp.float32)
  plain, hard = distill.task_loss(student, labels, None, 0.7, 2.0)
  assert float(plain) == float(hard)
  mixed, hard2 = distill.task_loss(student, labels, teacher, 0.0, 2.0)
  np.testing.assert_allclose(float(mixed), float(hard), rtol=1e-6)
  assert float(hard2) == float(hard)
  soft = lambda s: distill.task_loss(s, labels, teacher, 1.0, 3.0)[0]
  assert float(soft(teacher)) < float(soft(student))
  assert float(jnp.abs(jax.grad(soft)(teacher)).max()) < 1e-6
  assert float(jnp.abs(jax.grad(soft)(student)).max()) > 1e-3
