"""A tensorflow-datasets data dir, streamed by random access, without TensorFlow.

tfds.data_source reads the ArrayRecord files that tfds prepares
(`file_format='array_record'`, the format grain and tfds' own NumPy loaders
read) one record at a time and decodes it (the PNG/JPEG bytes of its image) with
NumPy and Pillow. A batch reads only its own records, inside the input
pipeline's threads or worker processes (erp.pipeline), so the dataset never
sits in memory whole: ImageNet from a tfds dir works like the image folders
(erp.image_folder, whose crops it takes), MNIST and CIFAR-10 like their
original files (erp.augment). The records come in tfds' file order, which is
not the publisher's: the held-out validation split is taken the same way
(erp.data.source), so it is a different 10,000 than with the original files.
"""
import numpy as np

from erp import augment as augment_lib
from erp import image_folder
from erp.errors import ErpError

# tfds' name of the split erp calls 'test', where it is not 'test'.
TEST_SPLIT = {'imagenet2012': 'validation'}


def open_records(tfds_name, split, data_dir=None, download=False):
  """tfds' random-access source of one split ('train' or 'test', erp's names).

  download=True lets tfds download and prepare the dataset (which needs the
  internet and TensorFlow); otherwise it must already be in data_dir (tfds'
  default if None), prepared in the array_record format.
  """
  try:
    import tensorflow_datasets as tfds  # Optional extra: pip install -e '.[tfds]'.
  except ImportError:
    raise ErpError("tensorflow-datasets is not installed: pip install -e '.[tfds]'") from None
  name = TEST_SPLIT.get(tfds_name, 'test') if split == 'test' else split
  try:
    return tfds.data_source(tfds_name, split=name, data_dir=data_dir, download=download)
  except Exception as e:  # tfds raises many kinds (missing dir, other format, ...).
    raise ErpError(
        f'tensorflow-datasets has no {tfds_name} split {name!r} prepared as array_record in '
        f'{data_dir or "its default data dir"} ({type(e).__name__}: {str(e)[:200]}); '
        f"prepare it with tfds (builder.download_and_prepare(file_format='array_record'))"
    ) from None


class TfdsSource:
  """A subset of a tfds split's records: (images, labels) batches read on demand.

  crop_size > 0 (ImageNet): each image, whatever its size, is cropped to
  crop_size x crop_size (image_folder.crop: random from rng if train, else
  central). Otherwise images have the dataset's fixed shape, and augment names
  the batch augmentation (erp.augment) a training source applies from rng.
  """

  def __init__(self, records, indices=None, *, augment=None, crop_size=0, train=False):
    if augment is not None and augment not in augment_lib.AUGMENTATIONS:
      raise ErpError(f'unknown augmentation {augment!r}; '
                     f'known: {sorted(augment_lib.AUGMENTATIONS)}')
    self.records = records
    self.indices = np.arange(len(records)) if indices is None else np.asarray(indices, np.int64)
    self.augment, self.crop_size, self.train = augment, crop_size, train

  def __len__(self):
    return len(self.indices)

  def subset(self, indices):
    return TfdsSource(self.records, self.indices[np.asarray(indices, np.int64)],
                      augment=self.augment, crop_size=self.crop_size, train=self.train)

  def batch(self, indices, rng=None):
    """(uint8 [b, h, w, c], int32 [b]) of the examples at indices."""
    keys = [int(k) for k in self.indices[np.asarray(indices, np.int64)]]
    examples = self.records.__getitems__(keys)
    labels = np.asarray([e['label'] for e in examples], np.int32)
    if self.crop_size:
      images = np.stack([image_folder.crop(_rgb(e['image']), self.crop_size,
                                           rng if self.train else None) for e in examples])
      return images, labels
    images = np.stack([np.asarray(e['image'], np.uint8) for e in examples])
    if self.augment and rng is not None:
      images = augment_lib.AUGMENTATIONS[self.augment](images, rng)
    return images, labels


def _rgb(image):
  """uint8 [h, w, 3] of an image tfds decoded (grayscale ones repeated)."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[:, :, None]
  return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]
