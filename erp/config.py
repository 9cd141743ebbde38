"""The base config every experiment file starts from; all fields have defaults.

An experiment file in configs/ defines `get_config(arg=None)` that calls
`base_config()`, sets what differs and returns it locked, so an unknown key in
`--config.x=y` is an error.
"""
import hashlib
import json
import math
import re

import ml_collections

from erp import rate_table
from erp import rate_term
from erp.errors import ErpError


def base_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ''  # A float run's workdir or checkpoint to start from; empty: random init.

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'
  c.data.dir = ''  # Empty: the environment variable ERP_DATA_DIR, else tfds.
  c.data.tfds_dir = ''  # tensorflow-datasets data dir (pip install -e '.[tfds]'); empty: its default.
  c.data.tfds_download = False  # Let tfds download (needs the internet); never by default.
  # The last val_size training examples are the validation split, never trained on:
  # every choice is made on it; the test split is evaluated once, at the end of a run.
  c.data.val_size = 10000
  c.data.augmentation = ''  # train.augment's (erp.augment.AUGMENTATIONS); empty: the dataset's.
  c.data.image_size = 0  # Image folders (ImageNet): the crop's side; 0: the dataset's (224).
  c.data.threads = 2  # Input pipeline (grain) threads making batches ahead of the step,
  c.data.workers = 0  # and worker processes (image decoding); 0: threads only.

  c.model = ml_collections.ConfigDict()
  c.model.name = 'lenet300'
  c.model.width = 1  # Channel multiplier, CIFAR ResNets only (ResNet-20-4: 4).

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.num_epochs = 20
  c.train.num_steps = 0  # If > 0: train this many steps instead of num_epochs.
  c.train.eval_every_epochs = 1
  c.train.log_every_steps = 200
  c.train.checkpoint_every_epochs = 1
  c.train.tensorboard = False  # Also TensorBoard event files (pip install -e '.[tensorboard]').
  c.train.keep_checkpoints = 2  # The newest checkpoints kept in WORKDIR/checkpoints/ (orbax).
  c.train.augment = False  # The dataset's augmentation (data.DatasetInfo.augment), in the pipeline.
  c.train.export = True  # Write model.erp at the end of training.
  c.train.compute_dtype = 'float32'  # Or 'bfloat16': the model's forward and backward pass.
  c.train.distill_from = ''  # Float run(s) to distill from (any model, same data; 'A,B': ensemble),
  c.train.distill_weight = 0.0  # with this weight on its softened outputs (0: labels only)
  c.train.distill_temperature = 1.0  # at this temperature.

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'  # 'adam' or 'sgd' (Nesterov momentum).
  c.optim.lr = 1e-3  # Learning rate of uncompressed (float) parameters.
  c.optim.schedule = 'cosine'  # 'cosine' or 'constant'.
  c.optim.warmup_epochs = 0.0
  c.optim.momentum = 0.9
  c.optim.weight_decay = 0.0  # Decoupled, float parameters only.

  # Entropy Penalized Reparameterization.
  c.rd = ml_collections.ConfigDict()
  c.rd.enabled = False
  c.rd.lmbda = 0.0  # loss = cross-entropy [nats/example] + lmbda * bits / num_train.
  c.rd.lmbda_warmup_epochs = 0.0  # lmbda ramps up linearly over these first epochs (0: none).
  c.rd.group_lmbda = ''  # 'REGEX=SCALE,...': the bits of a group whose path the first
  # matching REGEX finds count SCALE times in the loss (per-layer lambda); others once.
  c.rd.latent_lr = 0.05  # In integer latent steps (Adam's step size is lr-sized).
  c.rd.decoder_lr = 1e-3
  c.rd.prior_lr = 1e-2  # Constant (no schedule): the priors must track the latents.
  c.rd.prior_fit = 'rounded'  # Priors fit to 'rounded' latents (the file's), their 'active'
  # blocks only (the zeros the file's ACTIVE code skips are free), those blocks less each
  # kernel's most frequent value ('active_base', as format 8 codes), or 'noisy' ones.
  c.rd.latent_gradient = 'noisy'  # The latents' rate gradient: at latents + U(-1/2, 1/2)
  # (EPR sec. 2.2), or 'interpolated' (erp.rate_term.training_bits; fits but 'noisy').
  c.rd.adaptive_rate_max_latents = 0  # Groups of at most this many latents are priced by
  # their adaptive code's length, not their prior (erp.adaptive_rate); 0: none.
  c.rd.adaptive_rate_gradient = 'prior'  # Their latents' gradient: the prior's scaled to
  # that length, or 'code', the code's own local slope.
  c.rd.rate_every = 1  # The rate term is computed every K-th step; the steps between reuse
  # its latents' gradient and leave the priors (erp.train_step.computes_rate). K > 1 needs
  # latent_gradient='interpolated'.
  c.rd.conv_decoder = 'dft'  # 'dft' or 'affine'.
  c.rd.float_pattern = ''  # Regex of param paths left float, besides norm layers (by role).
  c.rd.init_levels = 4.0  # Initial step = std(theta) / init_levels,
  c.rd.min_init_step = 0.01  # but at least this (zero-initialized biases).
  c.rd.prior_filters = (3, 3, 3)
  c.rd.prior_samples = 4096  # Groups larger are 'large': their priors' fit takes this many
  # sampled elements (erp.rate_term.training_bits); 0: no group is large.
  c.rd.rate_table_points = 2048  # The latents' rate gradient reads each density from a
  # table of at most this many points (erp.rate_table); 0: evaluates it at every latent.
  c.rd.prior_init_scale = 10.0
  c.rd.prior_spikes = 0  # K > 0: each prior also mixes in a categorical over -K..K.

  # Baselines (erp/baselines/), each starting from the float run in init_from.
  c.uniform = ml_collections.ConfigDict()
  c.uniform.rel_step = 0.5  # Quantization step / std of each tensor.
  c.prune = ml_collections.ConfigDict()
  c.prune.sparsity = 0.9  # Fraction of kernel weights set to zero,
  c.prune.scope = 'layer'  # of each kernel ('layer') or of all together ('global').
  c.prune.retrain_epochs = 10
  c.prune.quant_epochs = 2  # Fine-tuning through the quantizer.
  c.prune.lr = 1e-3
  c.prune.rel_step = 0.5  # Quantization step / std of the surviving weights.
  c.surp = ml_collections.ConfigDict()
  c.surp.sparsity = 0.95  # Fraction of each kernel's weights (scope 'layer'), or of all
  c.surp.scope = 'layer'  # weights under one threshold ('global': the authors' SuRP).
  c.surp.beta_scale = 1.0  # 'layer': beta = beta_scale * ln(n), ~beta candidates per threshold.
  c.surp.alpha = 10.0  # 'global': threshold = alpha * mean magnitude at start and each reset.
  c.surp.rounds = 3  # Prune-and-retrain rounds, density (1 - sparsity)**(r / rounds);
  # 0: the authors' stages (sparsity 0.2, 0.36, ... 0.89, 0.92, 0.94, 0.96, ... up to it).
  c.surp.retrain_epochs = 4  # Per round.
  c.surp.lr = 1e-3
  c.surp.refine = 0.0  # Extra refinement iterations, as a fraction of those to reach sparsity.
  c.surp.bias_rel_step = 0.1  # Uniform grid of the other leaves (biases) / their std.

  c.miracle = ml_collections.ConfigDict()
  c.miracle.bits = 10  # Per block: the index of one of 2**bits candidates (paper's LeNet-5: 10).
  c.miracle.block_size = 10  # Variables per block (ibid.: 30); the rate knob with max_vars.
  c.miracle.max_vars = 40000  # Hashing: a leaf of n weights gets ~min(n, max_vars) variables.
  c.miracle.pretrain_epochs = 1  # Cross-entropy only.
  c.miracle.kl_epochs = 20  # Cross-entropy + adaptive KL penalties.
  c.miracle.blocks_per_round = 32  # Blocks coded between retraining rounds.
  c.miracle.retrain_steps = 8  # Steps per retraining round.
  c.miracle.lr = 1e-3
  c.miracle.init_log_sigma = -6.0
  c.miracle.beta_init = 1e-5  # Initial KL penalty per nat (~1/num_train, the ELBO's weight).
  c.miracle.beta_step = 1.002  # Per-step factor of the adaptive KL penalties.

  c.export = ml_collections.ConfigDict()
  c.export.table = 'empirical'  # Coding tables: latents' histogram, or 'prior' (learned).
  c.export.float_dtype = 'float32'  # Precision of uncompressed leaves in the file.
  c.export.run_config = False  # Also store the config diff and erp version in the file.
  return c


def to_json(config):
  return json.dumps(config.to_dict(), sort_keys=True, default=list)


def config_hash(config):
  return hashlib.sha256(to_json(config).encode()).hexdigest()[:16]


def flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = list(v) if isinstance(v, tuple) else v
  return out


def diff_from_base(config):
  """{dotted.key: value} of the fields where config differs from base_config()."""
  base = flatten(base_config().to_dict())
  return {k: v for k, v in flatten(config.to_dict()).items() if base.get(k, object()) != v}


def from_diff(diff):
  """base_config() with a diff_from_base applied: the config a file's run used.

  The config is metadata, never needed to decode: keys this erp does not know
  (renamed or removed since the file was written) and values of the wrong type
  are skipped, so an old file still loads.
  """
  config = base_config()
  for key, value in diff.items():
    *parents, leaf = str(key).split('.')
    node = config
    try:
      for p in parents:
        node = node[p]
      old = node[leaf]
      node[leaf] = tuple(value) if isinstance(old, tuple) else value
    except (KeyError, TypeError, ValueError, AttributeError):
      continue
  return config


def _number(config, key, minimum=0.0):
  node = config
  for part in key.split('.'):
    node = node[part]
  if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node) \
      or node < minimum:
    raise ErpError(f'{key} must be a finite number >= {minimum:g}, got {node!r}')
  return node


def group_lmbda(spec):
  """[(compiled regex, scale)] of rd.group_lmbda ('REGEX=SCALE,...'; '' gives [])."""
  out = []
  for item in filter(None, (part.strip() for part in spec.split(','))):
    pattern, sep, scale = item.rpartition('=')
    try:
      value = float(scale)
      compiled = re.compile(pattern)
    except (ValueError, re.error) as e:
      raise ErpError(f'rd.group_lmbda: {item!r} is not REGEX=SCALE ({e})') from None
    if not sep or not pattern or not math.isfinite(value) or value < 0:
      raise ErpError(f'rd.group_lmbda: {item!r} must be REGEX=SCALE with a finite SCALE >= 0')
    out.append((compiled, value))
  return out


def group_lmbda_scales(spec, groups):
  """{group: scale} for the group paths of a model under rd.group_lmbda; a pattern that
  finds no group is refused (a misspelt layer would silently train at one lambda)."""
  parsed = group_lmbda(spec)
  unused = [r.pattern for r, _ in parsed if not any(r.search(g) for g in groups)]
  if unused:
    raise ErpError(f'rd.group_lmbda: {unused} match no group of this model; its groups: '
                   f'{sorted(groups)}')
  return {g: next((s for r, s in parsed if r.search(g)), 1.0) for g in groups}


def validate(config):
  """Refuses settings that would silently train something other than what was asked."""
  lmbda = _number(config, 'rd.lmbda')
  if group_lmbda(config.rd.get('group_lmbda', '')) and not config.rd.enabled:
    raise ErpError('rd.group_lmbda is set but rd.enabled=False: a float run has no rate to '
                   'scale; add --config.rd.enabled=True')
  if config.rd.enabled and lmbda == 0:
    raise ErpError('rd.enabled=True with rd.lmbda=0 trains without the rate term: '
                   'set --config.rd.lmbda (e.g. 0.1; larger gives smaller files)')
  if not config.rd.enabled and lmbda != 0:
    raise ErpError(f'rd.lmbda={lmbda:g} is set but rd.enabled=False, which trains a float '
                   'model and writes no file: add --config.rd.enabled=True')
  for key in ('rd.lmbda_warmup_epochs', 'optim.lr', 'rd.latent_lr', 'rd.decoder_lr',
              'rd.prior_lr', 'optim.weight_decay'):
    _number(config, key)
  _number(config, 'train.num_steps')
  if not config.train.num_steps:
    _number(config, 'train.num_epochs', 1)
  _number(config, 'train.batch_size', 1)
  if config.train.get('compute_dtype', 'float32') not in ('float32', 'bfloat16'):
    raise ErpError(f"train.compute_dtype must be 'float32' or 'bfloat16', got "
                   f'{config.train.compute_dtype!r}')
  for key in ('data.image_size', 'data.workers', 'rd.prior_spikes'):
    _number(config, key)
  _number(config, 'data.threads', 1)
  if not 0 <= _number(config, 'train.distill_weight') <= 1:
    raise ErpError(f'train.distill_weight must be in [0, 1], got {config.train.distill_weight}')
  if not _number(config, 'train.distill_temperature') > 0:
    raise ErpError('train.distill_temperature must be > 0')
  _number(config, 'rd.prior_samples')
  if not isinstance(config.rd.adaptive_rate_max_latents, int) or isinstance(
      config.rd.adaptive_rate_max_latents, bool) or config.rd.adaptive_rate_max_latents < 0:
    raise ErpError('rd.adaptive_rate_max_latents must be an integer >= 0 (0: no group), got '
                   f'{config.rd.adaptive_rate_max_latents!r}')
  if config.rd.adaptive_rate_gradient not in rate_term.ADAPTIVE_GRADIENTS:
    raise ErpError(f'rd.adaptive_rate_gradient must be one of {rate_term.ADAPTIVE_GRADIENTS}, '
                   f'got {config.rd.adaptive_rate_gradient!r}')
  every = config.rd.get('rate_every', 1)
  if not isinstance(every, int) or isinstance(every, bool) or every < 1:
    raise ErpError(f'rd.rate_every must be an integer >= 1, got {every!r}')
  fit, gradient = config.rd.prior_fit, config.rd.get('latent_gradient', 'noisy')
  if fit not in rate_term.FITS:
    raise ErpError(f'rd.prior_fit must be one of {rate_term.FITS}, got {fit!r}')
  if gradient not in rate_term.LATENT_GRADIENTS or (gradient != 'noisy' and fit == 'noisy'):
    raise ErpError(f'rd.latent_gradient must be one of {rate_term.LATENT_GRADIENTS} '
                   f"('interpolated' with rd.prior_fit other than 'noisy'), got {gradient!r} "
                   f'with rd.prior_fit={fit!r}')
  if every > 1 and gradient != 'interpolated':
    raise ErpError(f"rd.rate_every={every} needs rd.latent_gradient='interpolated': the steps "
                   "between reuse the latents' rate gradient, which must be the expected one, "
                   "not one noise draw's (LeNet-300-100, rate_every=4: 38 % larger files)")
  if _number(config, 'rd.rate_table_points'):
    rate_table.mantissa_bits(config.rd.rate_table_points)  # Refuses too small a table.
  if config.train.distill_weight and not config.train.distill_from:
    raise ErpError('train.distill_weight > 0 needs train.distill_from (a float run on the '
                   'same data)')


def differing_keys(a, b):
  """Dotted keys whose values differ between two config dicts (or exist in one only)."""
  fa, fb = flatten(a), flatten(b)
  return sorted(k for k in set(fa) | set(fb) if fa.get(k, object()) != fb.get(k, object()))
