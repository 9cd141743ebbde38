"""The streaming input pipeline (erp.pipeline) and ImageNet-style image folders."""
import os

import jax
import ml_collections
import numpy as np
import pytest

from erp import data
from erp import image_folder
from erp import pipeline
from erp.errors import ErpError


def _source(n=100, augment=None):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
  return data.ArraySource(images, np.arange(n, dtype=np.int32), augment)


def _labels(batches):
  return [np.asarray(b[1]).tolist() for b in batches]


def test_training_batches_follow_the_seeded_epoch_order_and_resume_exactly():
  src = _source(100)
  got = _labels(pipeline.train_batches(src, batch_size=32, seed=7, start_step=0, num_steps=7))
  assert len(got) == 7  # 3 steps an epoch (4 examples left out), into the third epoch.
  for t, labels in enumerate(got):
    epoch, s = divmod(t, 3)
    assert labels == data.epoch_permutation(7, epoch, 100)[32 * s:32 * s + 32].tolist()
  assert got[0] != got[3]  # Each epoch is reshuffled.
  resumed = _labels(pipeline.train_batches(src, batch_size=32, seed=7, start_step=4,
                                           num_steps=7))
  assert resumed == got[4:]
  other = _labels(pipeline.train_batches(src, batch_size=32, seed=8, start_step=0, num_steps=1))
  assert other[0] != got[0]


def test_hosts_take_disjoint_slices_that_make_the_global_batch():
  src = _source(96, augment='shift')
  whole = list(pipeline.train_batches(src, batch_size=16, seed=1, start_step=0, num_steps=5))
  parts = [list(pipeline.train_batches(src, batch_size=16, seed=1, start_step=0, num_steps=5,
                                       process_index=p, process_count=2)) for p in (0, 1)]
  for t in range(5):
    labels = np.concatenate([parts[0][t][1], parts[1][t][1]])
    np.testing.assert_array_equal(labels, whole[t][1])
    assert len(set(parts[0][t][1]) & set(parts[1][t][1])) == 0
  with pytest.raises(ErpError, match='does not split over 3 hosts'):
    pipeline.train_batches(src, batch_size=16, seed=1, start_step=0, num_steps=1,
                           process_index=0, process_count=3)


def test_augmentation_is_seeded_by_step_and_the_same_in_threads_and_worker_processes():
  rng = np.random.default_rng(0)
  src = data.ArraySource(rng.integers(1, 256, (64, 8, 8, 1), dtype=np.uint8),
                         np.arange(64, dtype=np.int32), 'shift')
  kw = dict(batch_size=16, seed=3, start_step=0, num_steps=6)
  one = list(pipeline.train_batches(src, threads=1, **kw))
  many = list(pipeline.train_batches(src, threads=4, **kw))
  procs = [tuple(pipeline.host_array(a) for a in b)
           for b in pipeline.train_batches(src, workers=2, **kw)]
  for a, b, c in zip(one, many, procs):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])
  plain = src.images[np.asarray(one[0][1])]
  assert not np.array_equal(one[0][0], plain)  # Augmented,
  assert (one[0][0] == 0).any()  # with zero padding shifted in.


def test_too_small_a_dataset_is_one_clear_error():
  with pytest.raises(ErpError, match='make no batch of 128'):
    pipeline.train_batches(_source(100), batch_size=128, seed=0, start_step=0, num_steps=1)


def test_eval_batches_cover_the_source_in_order_and_to_device_shards_them():
  src = _source(50)
  batches = list(pipeline.eval_batches(src, 16))
  assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
  assert np.concatenate([b[1] for b in batches]).tolist() == list(range(50))
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  on_device = list(pipeline.to_device(pipeline.eval_batches(src, 16), sharding))
  assert len(on_device) == 4 and isinstance(on_device[0][0], jax.Array)
  np.testing.assert_array_equal(np.asarray(on_device[3][1]), [48, 49])
  assert on_device[0][0].sharding == sharding


def _write_image_folder(root, classes, per_class, rng):
  from PIL import Image
  for c in classes:
    os.makedirs(root / c, exist_ok=True)
    for i in range(per_class):
      h, w = rng.integers(20, 60, 2)
      Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
          root / c / f'{c}_{i}.JPEG', quality=90)
  (root / classes[0] / 'notes.txt').write_text('not an image')


def imagenet_dir(tmp_path, train_per_class=6, val_per_class=2):
  """<tmp>/imagenet/{train,val}/<wnid>/*.JPEG with 3 classes, like ILSVRC-2012 unpacked."""
  rng = np.random.default_rng(0)
  classes = ['n01440764', 'n01443537', 'n01484850']
  _write_image_folder(tmp_path / 'imagenet' / 'train', classes, train_per_class, rng)
  _write_image_folder(tmp_path / 'imagenet' / 'val', classes, val_per_class, rng)
  return tmp_path


def _imagenet_config(root, val_size=3, image_size=24):
  return ml_collections.ConfigDict(dict(name='imagenet', dir=str(root), tfds_dir='',
                                        tfds_download=False, val_size=val_size,
                                        image_size=image_size))


def test_image_folder_splits_labels_and_crops(tmp_path):
  root = imagenet_dir(tmp_path)
  cfg = _imagenet_config(root)
  train = data.source(cfg, 'train', augment=True)
  val, test = data.source(cfg, 'val'), data.source(cfg, 'test')
  assert (len(train), len(val), len(test)) == (15, 3, 6)
  assert not set(train.paths) & set(val.paths)  # The held-out images are never trained on.
  assert sorted(train.paths + val.paths) == sorted(data.source(
      _imagenet_config(root, val_size=0), 'train').paths)
  assert val.paths == data.source(cfg, 'val').paths  # Fixed, whatever the run's seed.
  for path, label in zip(test.paths, test.labels):  # Label = index of the sorted class folder.
    assert os.path.basename(os.path.dirname(path)) == ['n01440764', 'n01443537',
                                                       'n01484850'][label]
  images, labels = train.batch([0, 1, 2], np.random.default_rng(0))
  assert images.shape == (3, 24, 24, 3) and images.dtype == np.uint8
  again, _ = train.batch([0, 1, 2], np.random.default_rng(0))
  np.testing.assert_array_equal(images, again)
  differ, _ = train.batch([0, 1, 2], np.random.default_rng(1))
  assert not np.array_equal(images, differ)  # Random crops and flips.
  a, _ = test.batch([0, 1])
  b, _ = test.batch([0, 1], np.random.default_rng(3))
  np.testing.assert_array_equal(a, b)  # Evaluation: the central crop, no randomness.
  assert data.input_shape(cfg) == (24, 24, 3)


def test_image_folder_errors_name_the_problem(tmp_path):
  root = imagenet_dir(tmp_path)
  bad = root / 'imagenet' / 'val' / 'n01443537' / 'broken.JPEG'
  bad.write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  test = data.source(_imagenet_config(root), 'test')
  with pytest.raises(ErpError, match='broken.JPEG: not a readable image'):
    test.batch(np.arange(len(test)))
  with pytest.raises(ErpError, match='no class subfolders'):
    (tmp_path / 'empty').mkdir()
    image_folder.list_folder(str(tmp_path / 'empty'))
  (tmp_path / 'partial' / 'imagenet').mkdir(parents=True)
  with pytest.raises(ErpError, match='no such folder'):
    data.source(_imagenet_config(tmp_path / 'partial'), 'train')
  with pytest.raises(ErpError, match='no imagenet/train/<class>/.*JPEG in .*nowhere, and '
                     'tensorflow-datasets has no imagenet2012'):
    data.source(_imagenet_config(tmp_path / 'nowhere'), 'train')
  with pytest.raises(ErpError, match='data.val_size must be'):
    data.source(_imagenet_config(root, val_size=18), 'val')
  with pytest.raises(ErpError, match='streamed from image folders'):
    data.load('imagenet', 'train', str(root))


def test_an_imagenet_folder_trains_exports_and_evaluates_end_to_end(tmp_path):
  """configs/imagenet_resnet18.py as a user with the JPEG folders runs it (tiny: 32 px)."""
  import json
  import subprocess
  import sys
  root = imagenet_dir(tmp_path)
  env = dict(os.environ, ERP_DATA_DIR=str(root))
  run = subprocess.run(
      [sys.executable, '-m', 'erp.train', '--config=configs/imagenet_resnet18.py',
       f'--workdir={tmp_path / "run"}', '--config.data.val_size=3', '--config.data.image_size=32',
       '--config.data.workers=2', '--config.train.batch_size=4', '--config.train.num_steps=3',
       '--config.rd.enabled=True', '--config.rd.lmbda=1'],
      env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  with open(tmp_path / 'run' / 'result.json') as f:
    result = json.load(f)
  assert result['num_train'] == 15 and result['steps'] == 3
  assert result['val_error_pct'] is not None
  evaluated = subprocess.run(
      [sys.executable, '-m', 'erp.evaluate', f'--model={tmp_path / "run" / "model.erp"}',
       '--json'], env=env, capture_output=True, text=True, timeout=300)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  record = json.loads(evaluated.stdout)
  assert record['dataset'] == 'imagenet' and record['num_examples'] == 6
  assert record['num_bytes'] == result['export']['num_bytes']
  assert record['error_pct'] == result['export']['error_pct']  # At the run's 32-px crops.
