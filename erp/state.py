"""The EPR state of any params pytree: reparameterize, decode, rate, optimizer.

EPR (Oktay et al. 2020, sec. 2) holds every compressible leaf theta as an
integer latent phi and a decoder, theta = f(round(phi)), and prices the
latents with one learned density per leaf (erp.priors). The state is a pytree
of arrays: take ``jax.grad`` with respect to it, ``tx.init`` it and
``optax.apply_updates`` to it under ``jax.jit``. Which leaf is which
(decoder kinds, the input's tree structure) is static data of the pytree.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from erp import active
from erp import adaptive_rate
from erp import leaves
from erp import packed
from erp import priors
from erp import rate_term
from erp import reparam
from erp.errors import ErpError


@flax.struct.dataclass
class EprState:
  """Latents, decoders and priors of the compressed leaves; the float leaves as they are.

  Each field is a dict keyed by leaf path (erp.leaves.path_name).
  """
  latents: dict  # {path: phi}, same shape as the leaf (its DFT for 'dft' leaves).
  decoders: dict  # {path: {'log_step', ['shift']}}.
  priors: dict  # {path: deep factorized density params, erp.packed.Packed}.
  floats: dict  # {path: theta}: leaves left uncompressed.
  kinds: tuple = flax.struct.field(pytree_node=False)  # ((path, 'affine'|'dft'|'float'), ...).
  treedef: Any = flax.struct.field(pytree_node=False)  # Structure of the params given.


def reparameterize(params, *, seed=0, model=None, keep_float=None, conv_decoder='dft',
                   init_levels=4.0, min_init_step=0.01, prior_filters=(3, 3, 3),
                   prior_init_scale=10.0, prior_spikes=0):
  """EprState of a params pytree (random init or trained weights).

  Args:
    params: any pytree of arrays: linen params, an nnx State, a plain dict.
    seed: initializes the priors.
    model: optional nnx model: its normalization modules stay float by type.
    keep_float: a regex of paths, or a callable (path, value) -> True/False/None,
      overriding which leaves stay float (erp.leaves.float_paths).
    conv_decoder: 'dft' (the paper's frequency-domain decoder) or 'affine'.
    init_levels, min_init_step: initial step = max(std(theta) / init_levels,
      min_init_step), so latents start at a few integer levels.
    prior_filters, prior_init_scale: shape of each deep factorized density.
    prior_spikes: K > 0 mixes a categorical over the integers -K..K into each
      prior (erp.priors.probability_mass), which prices the few-level
      histograms trained latents take (e.g. 0, -5 and 4) that a deep factorized
      density cannot follow.
  """
  paths, values, treedef = leaves.flatten(params)
  for path, value in zip(paths, values):
    if not np.all(np.isfinite(np.asarray(value, np.float64))):
      raise ErpError(f'reparameterize: leaf {path} has non-finite values')
  stay_float = leaves.float_paths(paths, values, keep_float, model)
  kinds, latents, decoders, floats = [], {}, {}, {}
  for path, value in zip(paths, values):
    value = jnp.asarray(value)
    if path in stay_float or not jnp.issubdtype(value.dtype, jnp.floating):
      kinds.append((path, 'float'))
      floats[path] = value
      continue
    kind = reparam.choose_decoder(value, conv_decoder)
    kinds.append((path, kind))
    latents[path], decoders[path] = reparam.init_group(value, kind, init_levels, min_init_step)
  names = sorted(latents)
  keys = jax.random.split(jax.random.PRNGKey(seed), max(len(names), 1))
  # One compile for every group (op by op, each group's init took ~0.3 s on CPU).
  init = jax.jit(lambda key: packed.Packed.of(priors.init(
      key, filters=tuple(prior_filters), init_scale=prior_init_scale, spikes=prior_spikes)))
  prior_params = {path: init(key) for key, path in zip(keys, names)}
  return EprState(latents=latents, decoders=decoders, priors=prior_params, floats=floats,
                  kinds=tuple(kinds), treedef=treedef)


def decode_flat(state, quantize=True):
  """{path: theta}; quantize=True rounds the latents with the straight-through estimator."""
  out = {}
  for path, kind in state.kinds:
    if kind == 'float':
      out[path] = state.floats[path]
    else:
      latent = state.latents[path]
      if quantize and kind == 'affine':
        out[path] = reparam.decode_affine_ste(latent, state.decoders[path])
        continue
      latent = reparam.round_ste(latent) if quantize else latent
      out[path] = reparam.decode_group(kind, latent, state.decoders[path])
  return out


def decode(state, quantize=True, exact=False):
  """The params pytree, same structure as reparameterize's input, differentiable.

  quantize=False decodes the unrounded latents (reproduces the input params).
  exact=True gives, as NumPy arrays, exactly the params that the state's saved
  file decodes to on any machine (reparam.decode_exact, with the decoders
  snapped to the file's grid, reparam.file_decoder; not differentiable). They
  differ from the default decode by that snapping (steps within 0.4 %).
  """
  if exact:
    if not quantize:
      raise ErpError('exact=True decodes the rounded latents; it needs quantize=True')
    flat = {path: np.asarray(state.floats[path]) if kind == 'float' else reparam.decode_exact(
        kind, np.round(np.asarray(state.latents[path], np.float32)),
        reparam.file_decoder(state.decoders[path])[0]) for path, kind in state.kinds}
  else:
    flat = decode_flat(state, quantize)
  return jax.tree_util.tree_unflatten(state.treedef, [flat[p] for p, _ in state.kinds])


def rate(state, rng=None, *, per_group=False, prior_samples=4096, table_points=2048,
         prior_fit='rounded', latent_gradient='noisy', adaptive_max_latents=0,
         adaptive_gradient='prior'):
  """Bits of the latents under their priors (EPR eq. 1's rate term).

  With rng: the training-time rate, differentiable to latents (at latents +
  U(-1/2, 1/2)) and priors (erp.rate_term.training_bits; prior_samples and
  table_points trade exactness of large groups' gradients for speed, 0: exact;
  prior_fit: 'rounded' fits the priors to the rounded latents the file codes
  and values their bits, 'active' to those of each group's ACTIVE block, the
  zeros outside it free as in the file, 'active_base' that block less each kernel's most
  frequent value as format 8 codes it, 'noisy' the noisy ones as in the paper;
  latent_gradient: 'noisy' or 'interpolated', the latents' rate gradient).
  Without: the bits of the rounded latents, what the priors would spend coding
  them. Either way a group of at most adaptive_max_latents latents is priced by its
  adaptive code's length instead, the cheapest of its codes, ACTIVE ones included
  (erp.adaptive_rate; its latents' gradient: the prior's scaled to that length,
  adaptive_gradient='prior', or the code's own, 'code'). Returns the
  total, or {path: bits} with per_group=True.
  """
  views = {path: active.coded_view(kind, state.latents[path].shape)
           for path, kind in state.kinds if kind != 'float'}
  small = {k: v for k, v in state.latents.items() if v.size <= adaptive_max_latents}
  references = references_of(state, views) if small else None
  if rng is None:
    rounded = {k: jnp.round(v) for k, v in state.latents.items() if k not in small}
    bits = rate_term.group_bits(rounded, state.priors)
    if small:
      bits.update(adaptive_rate.rounded_bits(small, rate_term.FIT_HALF_WIDTH, views,
                                             references))
  else:
    bits = rate_term.training_bits(state.latents, state.priors, rng, prior_samples, table_points,
                                   prior_fit, views, latent_gradient, adaptive_max_latents,
                                   adaptive_gradient, references)
  if per_group:
    return bits
  return sum(bits.values()) if bits else jnp.zeros((), jnp.float32)


def references_of(state, views):
  """erp.active.references of the state's rounded latents (no gradient): what the file's
  ACTIVE_REF code predicts each group's input mask from."""
  nonzero = {path: (jnp.round(jax.lax.stop_gradient(state.latents[path])) != 0).reshape(view)
             for path, view in views.items()}
  return active.references(views, nonzero)


PARTS = ('latents', 'decoders', 'priors', 'floats')


def optimizer(*, latents=0.05, decoders=1e-3, priors=1e-2, floats=1e-3, schedule=None,
              base=optax.adam):
  """One optax transformation for an EprState, with a learning rate per part.

  Each part is a learning rate for `base` (Adam by default; scaled by
  schedule(step) if given, except the priors') or an optax
  GradientTransformation; the decoders' and the priors' see their part as one
  vector (optax.flatten), which changes nothing for per-element rules. Latents
  move in integer steps, so their rate is larger (0.05: ~20 steps per level).
  Priors must keep up with the latents they price, so theirs is large and never
  decays: at 1e-3 and a cosine decay a LeNet5 run's priors priced its latents
  at 1.66x the bits the file spent on them.
  """
  def make(value, scheduled=True):
    if isinstance(value, optax.GradientTransformation):
      return value
    lr = float(value)
    if not np.isfinite(lr) or lr < 0:
      raise ErpError(f'learning rate must be finite and >= 0, got {value}')
    return base(lr if schedule is None or not scheduled else (lambda step: lr * schedule(step)))

  transforms = {k: make(v, k != 'priors') for k, v in
                dict(latents=latents, decoders=decoders, priors=priors, floats=floats).items()}
  # The decoders (a number or two a leaf) and the priors (~45 numbers a leaf), each
  # part updated as one vector: a few XLA ops where every leaf took several, each
  # costing more to launch than to run (LeNet-300-100 on a 2-core CPU).
  flat = {k: optax.flatten(transforms[k]) for k in ('decoders', 'priors')}

  def transform(k, part):
    return flat[k] if k in flat and jax.tree.leaves(part) else transforms[k]

  # Each part goes to its own transformation as a plain subtree. (optax.multi_transform
  # would hold a masked copy of the whole state per part: on LeNet-300-100, ~570 Python
  # placeholder objects built per step and several hundred more XLA ops.)
  def init(params):
    return {k: transform(k, getattr(params, k)).init(getattr(params, k)) for k in PARTS}

  def update(updates, opt_state, params=None):
    new_updates, new_state = {}, {}
    for k in PARTS:
      new_updates[k], new_state[k] = transform(k, getattr(updates, k)).update(
          getattr(updates, k), opt_state[k], None if params is None else getattr(params, k))
    return updates.replace(**new_updates), new_state

  return optax.GradientTransformation(init, update)
