"""Datasets by name, read from their original distribution files.

Source order: a local directory holding one subfolder per dataset with the
publisher's original files (`config.data.dir`, else the environment variable
`ERP_DATA_DIR`), else a tensorflow-datasets data dir prepared in the array_record
format (erp.tfds_source: read without TensorFlow; tfds downloads only when asked).

Images come back as uint8 `[n, height, width, channels]`, labels as int32 `[n]`;
augmentation happens in the input pipeline (erp.pipeline, on the host, ahead of the
step) and normalization on the accelerator (`preprocess`).
"""
import dataclasses
import gzip
import os
import tarfile
import zlib

import jax.numpy as jnp
import numpy as np

from erp import augment as augment_lib
from erp import image_folder
from erp import tfds_source
from erp.errors import ErpError

ENV_VAR = 'ERP_DATA_DIR'


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  image_shape: tuple  # (height, width, channels)
  num_classes: int
  mean: tuple  # per channel, in [0, 1] pixel units
  std: tuple
  tfds_name: str
  augment: str  # The training augmentation train.augment=True applies (erp.augment).


DATASETS = {
    'mnist': DatasetInfo('mnist', (28, 28, 1), 10, (0.1307,), (0.3081,), 'mnist', 'shift'),
    'fashion_mnist': DatasetInfo('fashion_mnist', (28, 28, 1), 10, (0.2860,),
                                 (0.3530,), 'fashion_mnist', 'shift'),
    'cifar10': DatasetInfo('cifar10', (32, 32, 3), 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), 'cifar10', 'pad_crop_flip'),
    # ILSVRC-2012 as a folder of JPEG files (erp.image_folder), streamed, never in memory.
    'imagenet': DatasetInfo('imagenet', (224, 224, 3), 1000, (0.485, 0.456, 0.406),
                            (0.229, 0.224, 0.225), 'imagenet2012', 'resized_crop_flip'),
}
STREAMED = ('imagenet',)

_IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
_CIFAR_BIN_FILES = {
    'train': [f'data_batch_{i}.bin' for i in range(1, 6)],
    'test': ['test_batch.bin'],
}
_CIFAR_RECORD_BYTES = 1 + 32 * 32 * 3


def info(name):
  if name not in DATASETS:
    raise ErpError(f'unknown dataset {name!r}; known: {sorted(DATASETS)}')
  return DATASETS[name]


def resolve_data_dir(data_dir=None):
  """The configured directory, else $ERP_DATA_DIR, else None."""
  return data_dir or os.environ.get(ENV_VAR) or None


SPLITS = ('train', 'val', 'test')


def load_split(data_config, split):
  """(images, labels) of a split of the dataset a config's data section names.

  'val' is the last data_config.val_size examples of the publisher's training
  files (in file order) and 'train' the rest: every choice (lambda, schedule,
  epochs) is made on 'val', and 'test' is evaluated once per run.
  """
  if split not in SPLITS:
    raise ErpError(f'unknown split {split!r}; known: {SPLITS}')
  files = 'test' if split == 'test' else 'train'
  images, labels = load(data_config.name, files, data_config.dir or None,
                        tfds_dir=data_config.tfds_dir or None, download=data_config.tfds_download)
  if split == 'test':
    return images, labels
  cut = len(labels) - _val_size(data_config, len(labels))
  return (images[:cut], labels[:cut]) if split == 'train' else (images[cut:], labels[cut:])


def source(data_config, split, augment=False):
  """A split as a random-access source for erp.pipeline.

  The datasets that fit in memory come as an ArraySource of load_split's
  arrays; ImageNet streamed, as an image_folder.ImageFolder over
  <dir>/imagenet/train and <dir>/imagenet/val (our 'test': the ILSVRC-2012
  validation images in class folders), else as a tfds_source.TfdsSource over
  tfds' imagenet2012 train and validation records. Its held-out 'val' is
  data_config.val_size training images drawn by a fixed seed, the same for
  every run. augment: apply the training augmentation, data_config.augmentation
  or else the dataset's (DatasetInfo.augment).
  """
  chosen = data_config.get('augmentation', '')
  if data_config.name not in STREAMED:
    return ArraySource(*load_split(data_config, split),
                       (chosen or info(data_config.name).augment) if augment else None)
  if chosen:
    raise ErpError(f'data.augmentation={chosen!r}: {data_config.name} is streamed and has '
                   f'its own augmentation ({info(data_config.name).augment}); leave it empty')
  if split not in SPLITS:
    raise ErpError(f'unknown split {split!r}; known: {SPLITS}')
  size = input_shape(data_config)[0]
  root = resolve_data_dir(data_config.dir or None)
  folder = os.path.join(root, data_config.name) if root else None
  if folder and os.path.isdir(folder):
    paths, labels, _ = image_folder.list_folder(
        os.path.join(folder, 'val' if split == 'test' else 'train'))
    images = image_folder.ImageFolder(paths, labels, size, train=augment)
  else:
    try:
      records = tfds_source.open_records(info(data_config.name).tfds_name, 'test' if
                                         split == 'test' else 'train', data_config.tfds_dir
                                         or None, data_config.tfds_download)
    except ErpError as e:
      raise ErpError(f'{data_config.name} is read from image folders or a tensorflow-datasets '
                     f'dir: no {data_config.name}/train/<class>/*.JPEG in '
                     f'{root or f"--config.data.dir or {ENV_VAR} (neither set)"}, and {e}'
                     ) from None
    images = tfds_source.TfdsSource(records, crop_size=size, train=augment)
  if split == 'test':
    return images
  num = len(images)
  cut = num - _val_size(data_config, num)
  order = np.random.default_rng(0).permutation(num)  # Image folders: sorted by class.
  return images.subset(np.sort(order[:cut] if split == 'train' else order[cut:]))


def input_shape(data_config):
  """(height, width, channels) of the model's input: data.image_size if set."""
  shape = info(data_config.name).image_shape
  size = data_config.get('image_size', 0)
  return (size, size, shape[2]) if size else shape


def _val_size(data_config, num_train):
  val_size = data_config.get('val_size', 0)
  if isinstance(val_size, bool) or not isinstance(val_size, int) or not \
      0 <= val_size < num_train:
    raise ErpError(f'data.val_size must be an integer in [0, {num_train}) for '
                   f'{data_config.name} ({num_train} training examples), got {val_size!r}')
  return val_size


def load(name, split, data_dir=None, allow_tfds=True, tfds_dir=None, download=False):
  """Returns (images uint8 [n, h, w, c], labels int32 [n]) of one split.

  Local original files first; else a tensorflow-datasets data dir (tfds_dir, else
  tfds's default), downloading only when download=True.
  """
  ds = info(name)
  if name in STREAMED:
    raise ErpError(f'{name} is streamed from image folders (data.source), never loaded '
                   'into memory whole')
  if split not in ('train', 'test'):
    raise ErpError(f'unknown split {split!r}; use "train" or "test"')
  root = resolve_data_dir(data_dir)
  looked = []
  if root is not None:
    folder = os.path.join(root, name)
    looked.append(folder)
    if os.path.isdir(folder):
      reader = _read_cifar10 if name == 'cifar10' else _read_idx_split
      return reader(folder, split)
  if allow_tfds:
    try:
      records = tfds_source.TfdsSource(tfds_source.open_records(ds.tfds_name, split, tfds_dir,
                                                                download))
    except ErpError as e:
      looked.append(str(e))
    else:
      return records.batch(np.arange(len(records)))  # Small enough to hold (not STREAMED).
  raise ErpError(
      f'dataset {name!r} not found; looked in: {"; ".join(looked) or "nothing"}. '
      f'Put the original files in <dir>/{name}/ and set --config.data.dir=<dir> '
      f'or the environment variable {ENV_VAR}=<dir>.')


def _open_maybe_gz(folder, base):
  for fname, opener in ((base, open), (base + '.gz', gzip.open)):
    path = os.path.join(folder, fname)
    if os.path.exists(path):
      return opener(path, 'rb'), path
  raise ErpError(f'missing file {base}[.gz] in {folder}')


def _read_idx(folder, base, expected_magic):
  f, path = _open_maybe_gz(folder, base)
  try:
    with f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:  # gzip: truncated, bad CRC, not gzip.
    raise ErpError(f'{path}: damaged file ({type(e).__name__}: {e})') from None
  if len(data) < 8:
    raise ErpError(f'{path}: truncated IDX header')
  magic = int.from_bytes(data[:4], 'big')
  if magic != expected_magic:
    raise ErpError(f'{path}: IDX magic {magic}, expected {expected_magic}')
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  offset = 4 + 4 * ndim
  size = int(np.prod(dims))
  if len(data) - offset != size:
    raise ErpError(f'{path}: expected {size} bytes of data for shape {dims}, '
                   f'found {len(data) - offset}')
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _read_idx_split(folder, split):
  image_base, label_base = _IDX_FILES[split]
  images = _read_idx(folder, image_base, 2051)
  labels = _read_idx(folder, label_base, 2049).astype(np.int32)
  if len(images) != len(labels):
    raise ErpError(f'{folder}: {len(images)} images but {len(labels)} labels')
  return images[..., None], labels


def _read_cifar10(folder, split):
  """The CIFAR-10 binary version: records of 1 label byte + 3072 CHW pixel bytes."""
  names = _CIFAR_BIN_FILES[split]
  blobs = {}
  archive = os.path.join(folder, 'cifar-10-binary.tar.gz')
  extracted = os.path.join(folder, 'cifar-10-batches-bin')
  if os.path.isdir(extracted):
    for n in names:
      path = os.path.join(extracted, n)
      if not os.path.exists(path):
        raise ErpError(f'missing file {path}')
      with open(path, 'rb') as f:
        blobs[n] = f.read()
  elif os.path.exists(archive):
    with tarfile.open(archive, 'r:gz') as tar:
      for n in names:
        try:
          blobs[n] = tar.extractfile(f'cifar-10-batches-bin/{n}').read()
        except KeyError:
          raise ErpError(f'{archive} has no cifar-10-batches-bin/{n}') from None
  else:
    raise ErpError(f'{folder}: expected cifar-10-batches-bin/ or '
                   'cifar-10-binary.tar.gz (the binary version of CIFAR-10)')
  records = []
  for n in names:
    if len(blobs[n]) % _CIFAR_RECORD_BYTES:
      raise ErpError(f'{n}: size {len(blobs[n])} is not a multiple of '
                     f'{_CIFAR_RECORD_BYTES}-byte records')
    records.append(np.frombuffer(blobs[n], np.uint8).reshape(-1, _CIFAR_RECORD_BYTES))
  records = np.concatenate(records)
  labels = records[:, 0].astype(np.int32)
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


class ArraySource:
  """Examples held in host memory (MNIST, CIFAR-10), augmented by name (erp.augment)."""

  def __init__(self, images, labels, augment=None):
    if len(images) != len(labels):
      raise ErpError(f'{len(images)} images but {len(labels)} labels')
    if augment is not None and augment not in augment_lib.AUGMENTATIONS:
      raise ErpError(f'unknown augmentation {augment!r}; '
                     f'known: {sorted(augment_lib.AUGMENTATIONS)}')
    self.images, self.labels, self.augment = images, labels, augment

  def __len__(self):
    return len(self.labels)

  def batch(self, indices, rng=None):
    images = self.images[indices]
    if self.augment and rng is not None:
      images = augment_lib.AUGMENTATIONS[self.augment](images, rng)
    return images, self.labels[indices]


def preprocess(images, ds):
  """uint8 [b, h, w, c] -> float32 normalized per channel (on the accelerator)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(ds.mean)) / jnp.asarray(ds.std)


def epoch_permutation(seed, epoch, n):
  """Deterministic shuffle: the same (seed, epoch) gives the same order anywhere."""
  return np.random.default_rng([seed, epoch]).permutation(n)
