"""Plain Flax models by name; none of them knows anything about compression.

A name is one of MODELS, or 'package.module:Class' for a linen model defined
anywhere importable (like big_vision's model-by-module-name): its constructor
takes num_classes (and any kwargs given), and its __call__(x, train=...).
"""
import functools
import importlib

from erp.errors import ErpError
from erp.models.lenet import LeNet300, LeNet5
from erp.models.resnet import CifarResNet, ImageNetResNet
from erp.models.vgg import VGG16

MODELS = {
    'lenet300': LeNet300,
    'lenet5': LeNet5,
    'vgg16': VGG16,
    'resnet20': functools.partial(CifarResNet, depth=20),
    'resnet32': functools.partial(CifarResNet, depth=32),
    'resnet56': functools.partial(CifarResNet, depth=56),
    'resnet18': functools.partial(ImageNetResNet, stage_sizes=(2, 2, 2, 2)),
    'resnet50': functools.partial(ImageNetResNet, stage_sizes=(3, 4, 6, 3),
                                  bottleneck=True),
}


def is_import_name(name):
  return isinstance(name, str) and ':' in name


def get_model(name, num_classes, **kwargs):
  """A model by name; `kwargs` (e.g. width for CIFAR ResNets) go to its constructor."""
  if is_import_name(name):
    module_name, _, class_name = name.partition(':')
    try:
      cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
      raise ErpError(f'cannot import model {name!r}: {e}') from None
    return cls(num_classes=num_classes, **kwargs)
  if name not in MODELS:
    raise ErpError(f"unknown model {name!r}; known: {sorted(MODELS)}, or "
                   "'package.module:Class'")
  return MODELS[name](num_classes=num_classes, **kwargs)
