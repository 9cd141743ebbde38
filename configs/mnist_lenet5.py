"""LeNet5-Caffe on MNIST. Float baseline by default; EPR with --config.rd.enabled=True.

get_config('fashion_mnist') gives the same on Fashion-MNIST.
"""
from erp.config import base_config


def get_config(arg=None):
  c = base_config()
  c.data.name = arg or 'mnist'
  c.model.name = 'lenet5'
  c.train.batch_size = 128
  c.train.num_epochs = 20
  c.optim.lr = 1e-3
  c.lock()
  return c
