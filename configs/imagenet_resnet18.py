"""ResNet-18 on ImageNet (ILSVRC-2012), streamed from folders of JPEG files.

The data directory (--config.data.dir or ERP_DATA_DIR) holds imagenet/train/<wnid>/*.JPEG
and imagenet/val/<wnid>/*.JPEG (the validation images sorted into class folders; they are
this harness's test split). get_config('resnet50') gives ResNet-50. EPR paper (Sec. 4):
ResNet-18 1.97 MB at 30.0 % top-1 error, ResNet-50 5.49 MB at 26.0 %.
"""
from erp.config import base_config


def get_config(arg=None):
  c = base_config()
  c.data.name = 'imagenet'
  c.data.val_size = 10000  # Of the 1,281,167 training images, drawn once by a fixed seed.
  c.data.threads = 4
  c.data.workers = 8  # Processes decoding and cropping JPEG files ahead of the step.
  c.model.name = arg or 'resnet18'
  c.train.batch_size = 256
  c.train.num_epochs = 90
  c.train.augment = True  # Random-resized crop and flip (erp.image_folder).
  c.optim.name = 'sgd'
  c.optim.lr = 0.1  # For batch 256 (Goyal et al. 2017: scale it with the batch).
  c.optim.warmup_epochs = 5.0
  c.optim.weight_decay = 1e-4
  c.lock()
  return c
