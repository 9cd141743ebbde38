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


def teacher_model(config):
  """The teacher's model section {'name', 'width'}: that of the run config.train.distill_from
  names (its config.json), which may differ from the student's (e.g. a conv teacher for an
  MLP); the student's when distill_from is a checkpoint without a run around it."""
  found = workdir_lib.read_run_config(
      config.train.distill_from, "train.distill_from: the teacher run's model",
      lambda run: ({'name': str(run['model']['name']),
                    'width': int(run['model'].get('width', 1))}, str(run['data']['name'])))
  if found is None:
    return {'name': config.model.name, 'width': config.model.width}
  section, dataset = found
  if dataset != config.data.name:
    raise ErpError(f'train.distill_from: the teacher run trained on {dataset}, this run on '
                   f'{config.data.name}')
  return section


def teacher(config, model, ds):
  """images (preprocessed) -> the teacher's logits, or None when distillation is off.

  The teacher is config.train.distill_from, a float run on the same dataset (of
  the student's model or another, teacher_model), applied in inference mode
  with its weights held fixed.
  """
  weight = float(config.train.get('distill_weight', 0.0))
  if not weight:
    return None
  teacher_config = config.copy_and_resolve_references()
  teacher_config.init_from = config.train.distill_from
  section = teacher_model(config)
  if (section['name'], section['width']) != (config.model.name, config.model.width):
    teacher_config.model.name, teacher_config.model.width = section['name'], section['width']
    model, _ = runs.build_model(teacher_config)
  variables = jax.tree.map(jnp.asarray, runs.init_model(teacher_config, model, ds))

  def logits(images):
    return jax.lax.stop_gradient(model.apply(variables, images, train=False))

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
