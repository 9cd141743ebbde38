import gzip
import os
import tarfile

import ml_collections
import numpy as np
import pytest

from erp import augment
from erp import data
from erp.errors import ErpError


@pytest.mark.parametrize('name,first_train,first_test', [
    ('mnist', [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
    ('fashion_mnist', [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]),
])
def test_idx_datasets_match_published_content(data_dir, name, first_train, first_test):
  x, y = data.load(name, 'train', data_dir, allow_tfds=False)
  assert x.shape == (60000, 28, 28, 1) and x.dtype == np.uint8
  assert y.shape == (60000,) and y.min() == 0 and y.max() == 9
  assert y[:10].tolist() == first_train
  xt, yt = data.load(name, 'test', data_dir, allow_tfds=False)
  assert xt.shape == (10000, 28, 28, 1)
  assert yt[:10].tolist() == first_test
  if name == 'mnist':
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_missing_directory_names_where_it_looked(tmp_path):
  with pytest.raises(ErpError, match=str(tmp_path / 'mnist')) as e:
    data.load('mnist', 'train', str(tmp_path), allow_tfds=False)
  assert 'ERP_DATA_DIR' in str(e.value)


def test_unknown_dataset_and_split():
  with pytest.raises(ErpError, match='unknown dataset'):
    data.load('imagenet21k', 'train')
  with pytest.raises(ErpError, match='unknown split'):
    data.load('mnist', 'validation')


def test_corrupt_idx_file_is_refused(tmp_path):
  folder = tmp_path / 'mnist'
  folder.mkdir()
  with gzip.open(folder / 'train-images-idx3-ubyte.gz', 'wb') as f:
    f.write((2051).to_bytes(4, 'big') + (2).to_bytes(4, 'big') + (28).to_bytes(4, 'big') * 2
            + b'\0' * 100)  # Too few pixels for 2 images.
  with pytest.raises(ErpError, match='expected 1568 bytes'):
    data.load('mnist', 'train', str(tmp_path), allow_tfds=False)


def _write_cifar_batches(folder, n_per_batch, rng):
  folder.mkdir(parents=True)
  expected = {}
  for name in [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']:
    labels = rng.integers(0, 10, n_per_batch, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], pixels.reshape(n_per_batch, -1)], axis=1)
    (folder / name).write_bytes(records.tobytes())
    expected[name] = (labels, pixels.transpose(0, 2, 3, 1))
  return expected


@pytest.mark.parametrize('packed', [False, True])
def test_cifar10_binary_reader(tmp_path, packed):
  rng = np.random.default_rng(0)
  expected = _write_cifar_batches(tmp_path / 'src' / 'cifar-10-batches-bin', 7, rng)
  root = tmp_path / 'root'
  (root / 'cifar10').mkdir(parents=True)
  if packed:
    with tarfile.open(root / 'cifar10' / 'cifar-10-binary.tar.gz', 'w:gz') as tar:
      tar.add(tmp_path / 'src' / 'cifar-10-batches-bin', arcname='cifar-10-batches-bin')
  else:
    os.rename(tmp_path / 'src' / 'cifar-10-batches-bin', root / 'cifar10' / 'cifar-10-batches-bin')
  x, y = data.load('cifar10', 'train', str(root), allow_tfds=False)
  assert x.shape == (35, 32, 32, 3) and y.shape == (35,)
  np.testing.assert_array_equal(x[7:14], expected['data_batch_2.bin'][1])
  np.testing.assert_array_equal(y[:7], expected['data_batch_1.bin'][0])
  xt, yt = data.load('cifar10', 'test', str(root), allow_tfds=False)
  np.testing.assert_array_equal(xt, expected['test_batch.bin'][1])


def test_shuffle_is_deterministic_by_seed_and_epoch():
  a = data.epoch_permutation(0, 3, 1000)
  assert np.array_equal(a, data.epoch_permutation(0, 3, 1000))
  assert not np.array_equal(a, data.epoch_permutation(0, 4, 1000))
  assert not np.array_equal(a, data.epoch_permutation(1, 3, 1000))
  assert sorted(a.tolist()) == list(range(1000))


def test_preprocess_normalizes():
  ds = data.info('cifar10')
  images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  x = np.asarray(data.preprocess(images, ds))
  assert x.shape == (16, 32, 32, 3) and x.dtype == np.float32
  np.testing.assert_allclose(x[..., 1], (images[..., 1] / 255.0 - ds.mean[1]) / ds.std[1],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name,pad,flips', [('pad_crop_flip', 4, True), ('shift', 2, False),
                                            ('shift_flip', 2, True)])
def test_augmentations_are_crops_of_the_padded_image(name, pad, flips):
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (64, 12, 10, 3), dtype=np.uint8)  # No zero pixel: padding shows.
  out = augment.AUGMENTATIONS[name](images, np.random.default_rng(5))
  assert out.shape == images.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out, augment.AUGMENTATIONS[name](images, np.random.default_rng(5)))
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  flipped = 0
  for i in range(len(images)):
    found = [(t, l, f) for t in range(2 * pad + 1) for l in range(2 * pad + 1)
             for f in ((False, True) if flips else (False,))
             if np.array_equal(out[i], (padded[i, t:t + 12, l:l + 10][:, ::-1] if f else
                                         padded[i, t:t + 12, l:l + 10]))]
    assert found, i  # Every output is one crop (maybe mirrored) of its own padded image.
    flipped += found[0][2]
  assert (0 < flipped < len(images)) == flips
  with pytest.raises(ErpError, match='unknown augmentation'):
    data.ArraySource(images, np.zeros(64, np.int32), augment='mixup')


def test_a_damaged_gz_dataset_file_is_one_clear_error(tmp_path, data_dir):
  import shutil
  folder = tmp_path / 'mnist'
  folder.mkdir()
  for name in os.listdir(os.path.join(data_dir, 'mnist')):
    shutil.copy(os.path.join(data_dir, 'mnist', name), folder / name)
  images = folder / 'train-labels-idx1-ubyte.gz'
  blob = images.read_bytes()
  images.write_bytes(blob[:len(blob) // 2])  # Truncated.
  with pytest.raises(ErpError, match='damaged file'):
    data.load('mnist', 'train', str(tmp_path), allow_tfds=False)
  corrupt = bytearray(blob)
  corrupt[-6] ^= 0xFF  # Inside the gzip trailer's CRC.
  images.write_bytes(bytes(corrupt))
  with pytest.raises(ErpError, match='damaged file'):
    data.load('mnist', 'train', str(tmp_path), allow_tfds=False)


def test_validation_split_is_the_held_out_end_of_the_training_files(data_dir):
  from erp import config as config_lib
  c = config_lib.base_config()
  c.data.dir = data_dir
  images, labels = data.load('mnist', 'train', data_dir)
  train_x, train_y = data.load_split(c.data, 'train')
  val_x, val_y = data.load_split(c.data, 'val')
  assert len(train_y) == 50_000 and len(val_y) == 10_000  # MNIST: the usual 50k / 10k.
  np.testing.assert_array_equal(np.concatenate([train_x, val_x]), images)
  np.testing.assert_array_equal(np.concatenate([train_y, val_y]), labels)
  assert len(data.load_split(c.data, 'test')[1]) == 10_000
  c.data.val_size = 0
  assert len(data.load_split(c.data, 'val')[1]) == 0
  assert len(data.load_split(c.data, 'train')[1]) == 60_000
  for bad in (60_000, -1, 2.5, True, 'x'):  # Typed configs aside: any dict-like section.
    section = ml_collections.ConfigDict(dict(c.data.to_dict(), val_size=bad))
    with pytest.raises(ErpError, match='data.val_size'):
      data.load_split(section, 'train')
  with pytest.raises(ErpError, match='unknown split'):
    data.load_split(c.data, 'validation')


def test_the_training_augmentation_is_the_datasets_unless_the_config_names_one(data_dir):
  from erp import config as config_lib
  c = config_lib.base_config()
  c.data.dir, c.data.name = data_dir, 'fashion_mnist'
  assert data.source(c.data, 'train', augment=True).augment == 'shift'
  assert data.source(c.data, 'val').augment is None  # Held-out splits are never augmented.
  c.data.augmentation = 'shift_flip'
  train = data.source(c.data, 'train', augment=True)
  assert train.augment == 'shift_flip' and data.source(c.data, 'train').augment is None
  images, _ = train.batch(np.arange(256), np.random.default_rng(1))
  mirrored = [np.array_equal(images[i], train.images[i][:, ::-1]) and
              not np.array_equal(images[i], train.images[i]) for i in range(256)]
  assert sum(mirrored) > 0  # Some unshifted garments come mirrored (1 in 50 expected).
  c.data.augmentation = 'mixup'
  with pytest.raises(ErpError, match='unknown augmentation'):
    data.source(c.data, 'train', augment=True)
  c.data.name, c.data.augmentation = 'imagenet', 'shift'
  with pytest.raises(ErpError, match='data.augmentation'):
    data.source(c.data, 'train', augment=True)
