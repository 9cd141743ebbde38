"""LeNet-300-100 and LeNet5-Caffe, the MNIST models of the compression literature."""
import flax.linen as nn


class LeNet300(nn.Module):
  """Fully connected 784-300-100-10 (LeCun et al. 1998; Han et al. 2016)."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(300)(x))
    x = nn.relu(nn.Dense(100)(x))
    return nn.Dense(self.num_classes)(x)


class LeNet5(nn.Module):
  """LeNet5-Caffe: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10.

  Caffe's prototxt puts a ReLU only after fc 500; like most compression papers'
  re-implementations we also put one after each conv block.
  """
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(20, (5, 5), padding='VALID')(x)
    x = nn.relu(nn.max_pool(x, (2, 2), strides=(2, 2)))
    x = nn.Conv(50, (5, 5), padding='VALID')(x)
    x = nn.relu(nn.max_pool(x, (2, 2), strides=(2, 2)))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(500)(x))
    return nn.Dense(self.num_classes)(x)
