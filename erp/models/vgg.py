"""VGG-16 for CIFAR-10 as used in the compression literature.

13 3x3 convolutions with batch norm, then fc 512 and fc 10 (about 15.0M
parameters; 59.9 MB in float32, which matches the EPR paper's 101 KB at 590x).
"""
import flax.linen as nn

_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
        512, 512, 512, 'M')


class VGG16(nn.Module):
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    for v in _CFG:
      if v == 'M':
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nn.relu(norm()(nn.Conv(v, (3, 3), use_bias=False)(x)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(norm()(nn.Dense(512)(x)))
    return nn.Dense(self.num_classes)(x)
