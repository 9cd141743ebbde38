"""Training augmentations of uint8 image batches, on the host (erp.pipeline runs them)."""
import numpy as np


def pad_crop_flip(images, rng, pad=4, flip=True):
  """CIFAR augmentation (He et al. 2016, Sec. 4.2): zero-pad 4, random crop, random flip."""
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  top, left = rng.integers(0, 2 * pad + 1, (2, b))
  rows = top[:, None] + np.arange(h)  # [b, h]
  cols = left[:, None] + np.arange(w)
  if flip:
    cols = np.where((rng.random(b) < 0.5)[:, None], cols[:, ::-1], cols)
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def shift(images, rng):
  """Digits: a random translation of up to 2 pixels each way (zero-filled), no flip."""
  return pad_crop_flip(images, rng, pad=2, flip=False)


def shift_flip(images, rng):
  """Garments (Fashion-MNIST): the digits' shift and a left-right mirror half the time."""
  return pad_crop_flip(images, rng, pad=2, flip=True)


AUGMENTATIONS = {'pad_crop_flip': pad_crop_flip, 'shift': shift, 'shift_flip': shift_flip}
