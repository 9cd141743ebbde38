"""tensorflow-datasets data dirs (erp.tfds_source): written by tfds itself in its original
format (array_record files of tf.train.Example records, PNG/JPEG-encoded images), read back
without TensorFlow, in memory (MNIST) and streamed (ImageNet)."""
import io
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds  # The 'tfds' extra (the test extra has it).

from erp import data
from erp import pipeline
from erp import tfds_source
from erp.errors import ErpError



def _encoded(image, fmt):
  buf = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format=fmt)
  return buf.getvalue()  # tfds stores given bytes as they are: no TensorFlow to encode.


def _prepare(data_dir, name, version, features, splits):
  """Writes `name` into data_dir with tfds' own builder: {split: [example, ...]}."""
  with tfds.core.registered.skip_registration():  # Not tfds' own builder of that name.

    class Writer(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version(version)

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=features)

      def _split_generators(self, dl_manager):
        return {split: self._generate_examples(examples) for split, examples in splits.items()}

      def _generate_examples(self, examples):
        yield from enumerate(examples)

    Writer.name = name
    Writer(data_dir=str(data_dir), file_format='array_record').download_and_prepare()


def _digits(n, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, n)
  return images, labels, [{'image': _encoded(x, 'png'), 'label': int(y)}
                          for x, y in zip(images, labels)]


@pytest.fixture(scope='module')
def mnist_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  train_x, train_y, train = _digits(60, 0)
  test_x, test_y, test = _digits(20, 1)
  _prepare(root, 'mnist', '3.0.1', tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(28, 28, 1)),
      'label': tfds.features.ClassLabel(num_classes=10)}), {'train': train, 'test': test})
  return root, (train_x, train_y), (test_x, test_y)


def _order(records, images):
  """The index into `images` of each record (tfds shuffles the file order)."""
  flat = images.reshape(len(images), -1)
  got = np.stack([np.asarray(r['image']).reshape(-1) for r in records])
  return [int(np.flatnonzero((flat == g).all(1))[0]) for g in got]


def test_mnist_from_a_tfds_dir_has_the_exact_pixels_and_labels(mnist_dir, tmp_path):
  root, (train_x, train_y), (test_x, test_y) = mnist_dir
  for split, x, y in (('train', train_x, train_y), ('test', test_x, test_y)):
    images, labels = data.load('mnist', split, data_dir=str(tmp_path), tfds_dir=str(root))
    assert images.dtype == np.uint8 and images.shape == x.shape and labels.dtype == np.int32
    index = _order([{'image': im} for im in images], x)
    assert sorted(index) == list(range(len(x)))  # Every example once, decoded exactly (PNG).
    np.testing.assert_array_equal(images, x[index])
    np.testing.assert_array_equal(labels, y[index])


def test_a_tfds_mnist_trains_through_the_pipeline_with_val_held_out(mnist_dir, tmp_path):
  root, _, _ = mnist_dir
  config = ml_collections.ConfigDict(dict(name='mnist', dir=str(tmp_path), tfds_dir=str(root),
                                          tfds_download=False, val_size=12))
  train = data.source(config, 'train', augment=True)
  val = data.source(config, 'val')
  images, labels = data.load('mnist', 'train', str(tmp_path), tfds_dir=str(root))
  assert (len(train), len(val)) == (48, 12)  # The last 12 records of the training files.
  np.testing.assert_array_equal(val.batch(np.arange(12))[0], images[48:])
  batches = list(pipeline.train_batches(train, batch_size=16, seed=0, start_step=0,
                                        num_steps=4))
  assert [b[0].shape for b in batches] == [(16, 28, 28, 1)] * 4
  shifted = batches[0][0]  # Augmented: the 'shift' augmentation moved some digits.
  first = data.epoch_permutation(0, 0, 48)[:16]
  assert not np.array_equal(shifted, images[first])
  np.testing.assert_array_equal(batches[0][1], data.load_split(config, 'train')[1][first])


def test_imagenet_streams_from_a_tfds_dir_with_crops_of_any_size(tmp_path):
  rng = np.random.default_rng(0)
  sizes = [(40, 56), (64, 48), (33, 33), (50, 70), (45, 45), (38, 60)]
  raw = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in sizes]
  examples = [{'image': _encoded(x, 'jpeg'), 'label': i % 3, 'file_name': f'{i}.JPEG'}
              for i, x in enumerate(raw)]
  root = tmp_path / 'tfds'
  _prepare(root, 'imagenet2012', '5.1.0', tfds.features.FeaturesDict({
      'image': tfds.features.Image(encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(num_classes=1000),
      'file_name': tfds.features.Text()}), {'train': examples, 'validation': examples[:4]})
  config = ml_collections.ConfigDict(dict(name='imagenet', dir=str(tmp_path / 'none'),
                                          tfds_dir=str(root), tfds_download=False, val_size=2,
                                          image_size=32))
  train, val = data.source(config, 'train', augment=True), data.source(config, 'val')
  test = data.source(config, 'test')
  assert (len(train), len(val), len(test)) == (4, 2, 4)
  x, y = train.batch(np.arange(4), np.random.default_rng(1))
  assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8
  again = train.batch(np.arange(4), np.random.default_rng(1))[0]
  np.testing.assert_array_equal(x, again)  # The random crops come from the rng alone.
  x_test, y_test = test.batch(np.arange(4))
  np.testing.assert_array_equal(x_test, test.batch(np.arange(4))[0])  # Central crops.
  assert sorted(y_test.tolist() + y.tolist() + val.batch(np.arange(2))[1].tolist()) == sorted(
      [i % 3 for i in range(4)] + [i % 3 for i in range(6)])


def test_a_missing_or_foreign_tfds_dir_is_one_clear_error(tmp_path):
  with pytest.raises(ErpError, match="no mnist split 'train' prepared as array_record"):
    tfds_source.open_records('mnist', 'train', str(tmp_path))
  with pytest.raises(ErpError, match='dataset .mnist. not found.*array_record'):
    data.load('mnist', 'train', data_dir=str(tmp_path), tfds_dir=str(tmp_path))
  config = ml_collections.ConfigDict(dict(name='imagenet', dir='', tfds_dir=str(tmp_path),
                                          tfds_download=False, val_size=0, image_size=32))
  with pytest.raises(ErpError, match='image folders or a tensorflow-datasets dir'):
    data.source(config, 'test')
  os.makedirs(tmp_path / 'mnist' / '3.0.1')
  (tmp_path / 'mnist' / '3.0.1' / 'dataset_info.json').write_text('{not json')
  with pytest.raises(ErpError, match='tensorflow-datasets has no mnist'):
    tfds_source.open_records('mnist', 'test', str(tmp_path))


def test_tfds_batches_are_the_same_from_worker_processes(mnist_dir, tmp_path):
  root, _, _ = mnist_dir
  config = ml_collections.ConfigDict(dict(name='mnist', dir=str(tmp_path), tfds_dir=str(root),
                                          tfds_download=False, val_size=0))
  records = tfds_source.open_records('mnist', 'train', str(root))
  src = tfds_source.TfdsSource(records, augment='shift')
  kw = dict(batch_size=16, seed=3, start_step=0, num_steps=3)
  threads = list(pipeline.train_batches(src, threads=2, **kw))
  procs = list(pipeline.train_batches(src, workers=2, **kw))  # Pickled to each worker.
  for a, b in zip(threads, procs):
    np.testing.assert_array_equal(a[0], pipeline.host_array(b[0]))
    np.testing.assert_array_equal(a[1], pipeline.host_array(b[1]))
  assert len(data.source(config, 'train')) == 60
