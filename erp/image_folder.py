"""ImageNet-style folders of images: <root>/<split>/<class>/<file>.JPEG.

The usual on-disk layout of ILSVRC-2012 (the training archive unpacked, the
validation images sorted into class folders, as torchvision's ImageFolder
reads them): classes are the sorted subfolder names and a class's label its
index. Images are decoded with Pillow inside the input pipeline's workers
(erp.pipeline), one batch at a time, and cropped there, off the accelerator:
training takes a random-resized crop (8-100 % of the area, aspect 3/4-4/3)
and a horizontal flip, as ResNet's reference training does (He et al. 2016,
Sec. 3.4, after Szegedy et al. 2015); evaluation resizes the shorter side to
size * 256 / 224 and takes the central size x size crop.
"""
import math
import os

import numpy as np

from erp.errors import ErpError

EXTENSIONS = ('.jpeg', '.jpg', '.png')
MAX_PIXELS = 1 << 26  # Larger images are refused (a decompression bomb, not a photo).


def list_folder(folder):
  """(paths, labels int32, class names): every image under folder/<class>/, sorted."""
  if not os.path.isdir(folder):
    raise ErpError(f'{folder}: no such folder (expected <class>/<image> subfolders)')
  classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
  if not classes:
    raise ErpError(f'{folder}: no class subfolders')
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = sorted(e.name for e in os.scandir(os.path.join(folder, name))
                   if e.is_file() and e.name.lower().endswith(EXTENSIONS))
    paths += [os.path.join(folder, name, f) for f in files]
    labels += [label] * len(files)
  if not paths:
    raise ErpError(f'{folder}: no {"/".join(EXTENSIONS)} files in its class subfolders')
  return paths, np.asarray(labels, np.int32), classes


def decode(path):
  """RGB uint8 [h, w, 3] of one image file; an ErpError naming the file if it is not one."""
  from PIL import Image  # Pillow: only when image folders are read.
  try:
    with Image.open(path) as img:
      if img.width * img.height > MAX_PIXELS:
        raise ErpError(f'{path}: {img.width}x{img.height} pixels, more than {MAX_PIXELS}')
      return np.asarray(img.convert('RGB'))
  except ErpError:
    raise
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ErpError(f'{path}: not a readable image ({type(e).__name__}: {e})') from None


def _resize(image, height, width):
  from PIL import Image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def random_resized_crop(image, size, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """A random crop of scale x area and aspect in ratio, resized to size x size."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      return _resize(image[top:top + ch, left:left + cw], size, size)
  return center_crop(image, size, resize_to=size)  # No fit in 10 tries: the whole image.


def center_crop(image, size, resize_to=None):
  """Shorter side resized to resize_to (default size * 256 / 224), then the central crop."""
  resize_to = resize_to or round(size * 256 / 224)
  h, w = image.shape[:2]
  scale = resize_to / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  image = _resize(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image[top:top + size, left:left + size]


def crop(image, size, rng=None):
  """size x size of an image: with rng the training crop (random-resized, flipped half the
  time), without it the evaluation's central crop."""
  if rng is None:
    return center_crop(image, size)
  image = random_resized_crop(image, size, rng)
  return image[:, ::-1] if rng.random() < 0.5 else image


class ImageFolder:
  """Random access to a subset of an image folder's files, cropped to size x size."""

  def __init__(self, paths, labels, size, train=False):
    self.paths, self.labels = list(paths), np.asarray(labels, np.int32)
    self.size, self.train = size, train

  def __len__(self):
    return len(self.paths)

  def subset(self, indices):
    indices = np.asarray(indices, np.int64)
    return ImageFolder([self.paths[i] for i in indices], self.labels[indices], self.size,
                       self.train)

  def batch(self, indices, rng=None):
    """(uint8 [b, size, size, 3], int32 [b]); training crops and flips draw from rng."""
    images = np.empty((len(indices), self.size, self.size, 3), np.uint8)
    for k, i in enumerate(indices):
      images[k] = crop(decode(self.paths[i]), self.size, rng if self.train else None)
    return images, self.labels[np.asarray(indices, np.int64)]
