import jax, jax.numpy as jnp, numpy as np, optax, flax.linen as nn
import erp
from erp import data  # MNIST's original files, from $ERP_DATA_DIR


class MyCNN(nn.Module):  # Your own model: erp needs nothing from it.
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.BatchNorm(not train, name='bn1')(nn.Conv(16, (5, 5))(x)))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.BatchNorm(not train, name='bn2')(nn.Conv(32, (5, 5))(x)))
    x = nn.max_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
    return nn.Dense(10)(nn.Dropout(0.2, deterministic=not train)(x))


images, labels = data.load('mnist', 'train')
test_images, test_labels = data.load('mnist', 'test')
prep = lambda x: (jnp.asarray(x, jnp.float32) / 255 - 0.1307) / 0.3081
model, lmbda = MyCNN(), 1.0  # lmbda alone sets the rate-accuracy trade-off.
variables = model.init(jax.random.PRNGKey(0), prep(images[:1]))
state = erp.reparameterize(variables['params'])  # Latents, decoders, priors.
batch_stats, tx = variables['batch_stats'], erp.optimizer()
opt_state = tx.init(state)


@jax.jit
def train_step(state, opt_state, batch_stats, x, y, rng):
  def loss_fn(state):
    k_rate, k_dropout = jax.random.split(rng)
    logits, new = model.apply({'params': erp.decode(state), 'batch_stats': batch_stats}, x,
                              train=True, rngs={'dropout': k_dropout}, mutable=['batch_stats'])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + lmbda * erp.rate(state, k_rate) / len(labels), new['batch_stats']
  grads, batch_stats = jax.grad(loss_fn, has_aux=True)(state)
  updates, opt_state = tx.update(grads, opt_state, state)
  return optax.apply_updates(state, updates), opt_state, batch_stats


rng = jax.random.PRNGKey(1)
for step in range(3000):
  idx = np.random.default_rng(step).integers(0, len(labels), 128)
  rng, key = jax.random.split(rng)
  state, opt_state, batch_stats = train_step(state, opt_state, batch_stats,
                                             prep(images[idx]), labels[idx], key)

saved = erp.save('my_cnn.erp', state, extra={'batch_stats': batch_stats})
loaded = erp.load_variables('my_cnn.erp')  # From the file alone.
predict = jax.jit(lambda v, x: model.apply(v, x).argmax(-1))
wrong = sum(int((predict(loaded, prep(test_images[i:i + 1000])) != test_labels[i:i + 1000]).sum())
            for i in range(0, len(test_labels), 1000))
print(f'my_cnn.erp: {saved["num_bytes"]} bytes, test error from the file {wrong / 100:.2f} %')
