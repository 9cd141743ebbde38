"""VGG-16 on CIFAR-10."""
from erp.config import base_config


def get_config(arg=None):
  c = base_config()
  c.data.name = 'cifar10'
  c.data.val_size = 5000  # Of the 50,000 training images.
  c.model.name = 'vgg16'
  c.train.batch_size = 128
  c.train.num_epochs = 200
  c.train.augment = True
  c.optim.name = 'sgd'
  c.optim.lr = 0.05
  c.optim.weight_decay = 5e-4
  c.lock()
  return c
