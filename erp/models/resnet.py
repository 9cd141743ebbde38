"""ResNets: the CIFAR family (He et al. 2016, sec. 4.2) and ImageNet ResNet-18/50."""
from typing import Sequence

import flax.linen as nn


def _norm(train):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9)


class BasicBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)
    y = nn.relu(_norm(train)(y))
    y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
    y = _norm(train)(y)
    if x.shape != y.shape:  # Projection shortcut (option B).
      x = nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x)
      x = _norm(train)(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.relu(_norm(train)(nn.Conv(self.features, (1, 1), use_bias=False)(x)))
    y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(y)
    y = nn.relu(_norm(train)(y))
    y = _norm(train)(nn.Conv(4 * self.features, (1, 1), use_bias=False)(y))
    if x.shape != y.shape:
      x = nn.Conv(4 * self.features, (1, 1), self.strides, use_bias=False)(x)
      x = _norm(train)(x)
    return nn.relu(x + y)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 inputs: 3 stages of n basic blocks, 16/32/64 x width."""
  depth: int = 20
  width: int = 1
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    if (self.depth - 2) % 6:
      raise ValueError(f'CIFAR ResNet depth must be 6n+2, got {self.depth}')
    n = (self.depth - 2) // 6
    x = nn.Conv(16 * self.width, (3, 3), use_bias=False)(x)
    x = nn.relu(_norm(train)(x))
    for stage, features in enumerate((16, 32, 64)):
      for i in range(n):
        strides = 2 if stage > 0 and i == 0 else 1
        x = BasicBlock(features * self.width, strides)(x, train)
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


class ImageNetResNet(nn.Module):
  """ResNet-18/50 with ImageNet shapes (224x224 inputs, 7x7 stem, max pool)."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, train=False):
    block = Bottleneck if self.bottleneck else BasicBlock
    x = nn.Conv(64, (7, 7), 2, use_bias=False)(x)
    x = nn.relu(_norm(train)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for stage, size in enumerate(self.stage_sizes):
      for i in range(size):
        strides = 2 if stage > 0 and i == 0 else 1
        x = block(64 * 2**stage, strides)(x, train)
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
