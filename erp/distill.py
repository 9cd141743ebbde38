"""Distillation from a trained float model, a harness option (train.distill_*).

Knowledge distillation (Hinton, Vinyals, Dean, "Distilling the knowledge in a
neural network", 2015): the compressed model's task loss mixes the labels'
cross-entropy with the cross-entropy to the float teacher's softened outputs,
which carry more information per example than the label. EPR's paper trains
on the labels alone; runs that distill say so in their config and tables.
"""
import jax
import jax.numpy as jnp
import optax

from erp import runs
from erp import workdir as workdir_lib
from erp.errors import ErpError


def teacher_dirs(config):
  """The float runs config.train.distill_from names: one workdir, or several joined by
  commas for an ensemble teacher (Hinton et al. 2015, sec. 1, distil an ensemble's
  averaged soft targets into one small model)."""
  dirs = [path.strip() for path in str(config.train.distill_from).split(',')]
  if not all(dirs):
    raise ErpError(f'train.distill_from: an empty run path in {config.train.distill_from!r}')
  return dirs


def _agreed(what, values):
  """The one value every teacher run gives, or one ErpError naming `what`."""
  if any(v != values[0] for v in values):
    raise ErpError(f"train.distill_from: an ensemble's runs must share their {what}; got "
                   f'{values}')
  return values[0]


def _one_teacher_model(config, path):
  found = workdir_lib.read_run_config(
      path, "train.distill_from: the teacher run's model",
      lambda run: ({'name': str(run['model']['name']),
                    'width': int(run['model'].get('width', 1))}, str(run['data']['name'])))
  if found is None:
    return {'name': config.model.name, 'width': config.model.width}
  section, dataset = found
  if dataset != config.data.name:
    raise ErpError(f'train.distill_from: the teacher run trained on {dataset}, this run on '
                   f'{config.data.name}')
  return section


def teacher_model(config):
  """The teacher's model section {'name', 'width'} (and 'ensemble': the number of runs,
  where several): that of the runs config.train.distill_from names (their config.json),
  which may differ from the student's (e.g. a conv teacher for an MLP); the student's
  when distill_from is a checkpoint without a run around it."""
  dirs = teacher_dirs(config)
  section = _agreed('model', [_one_teacher_model(config, path) for path in dirs])
  return {**section, 'ensemble': len(dirs)} if len(dirs) > 1 else section


def teacher_recipe(config):
  """{'augment', 'num_epochs'} of the teacher runs (workdir.float_run_recipe), one
  for all of an ensemble's; None where they have no config.json."""
  return _agreed('training settings',
                 [workdir_lib.float_run_recipe(path) for path in teacher_dirs(config)])


def teacher(config, model, ds):
  """images (preprocessed) -> the teacher's logits, or None when distillation is off.

  The teacher is config.train.distill_from, float runs on the same dataset (of the
  student's model or another, teacher_model), applied in inference mode with their
  weights held fixed. An ensemble's logits are those whose softmax at the distillation
  temperature T is the mean of its members' softmaxes at T: the averaged soft targets.
  """
  weight = float(config.train.get('distill_weight', 0.0))
  if not weight:
    return None
  teacher_config = config.copy_and_resolve_references()
  section = teacher_model(config)
  teacher_recipe(config)  # An ensemble of mixed recipes is refused now, not after training.
  if (section['name'], section['width']) != (config.model.name, config.model.width):
    teacher_config.model.name, teacher_config.model.width = section['name'], section['width']
    model, _ = runs.build_model(teacher_config)
  members = []
  for path in teacher_dirs(config):
    teacher_config.init_from = path
    members.append(jax.tree.map(jnp.asarray, runs.init_model(teacher_config, model, ds)))
  if len(members) == 1:
    return lambda images: jax.lax.stop_gradient(model.apply(members[0], images, train=False))
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
  temperature = float(config.train.distill_temperature)

  def logits(images):
    each = jax.vmap(lambda variables: model.apply(variables, images, train=False))(stacked)
    log_probs = jax.nn.log_softmax(each / temperature, axis=-1)
    mean_log_probs = jax.nn.logsumexp(log_probs, axis=0) - jnp.log(len(members))
    return jax.lax.stop_gradient(temperature * mean_log_probs)

  return logits


def task_loss(logits, labels, teacher_logits, weight, temperature):
  """(loss, the labels' cross-entropy): loss = (1 - weight) * CE(labels)
  + weight * T^2 * CE(softmax(teacher / T), softmax(logits / T)).

  The T^2 keeps the soft part's gradient on the scale of the hard one's
  (Hinton et al. 2015, sec. 2); without a teacher, loss is the cross-entropy.
  """
  hard = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  if teacher_logits is None:
    return hard, hard
  soft_targets = jax.nn.softmax(teacher_logits / temperature)
  soft = optax.softmax_cross_entropy(logits / temperature, soft_targets).mean()
  return (1.0 - weight) * hard + weight * temperature**2 * soft, hard
