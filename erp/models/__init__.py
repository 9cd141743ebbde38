"""Plain Flax models by name; none of them knows anything about compression."""
import functools

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


def get_model(name, num_classes, **kwargs):
  """A model by name; `kwargs` (e.g. width for CIFAR ResNets) go to its constructor."""
  if name not in MODELS:
    raise ErpError(f'unknown model {name!r}; known: {sorted(MODELS)}')
  return MODELS[name](num_classes=num_classes, **kwargs)
