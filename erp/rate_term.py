"""The rate term in training: the priors' bits of noisy latents and the priors' fit.

EPR (Oktay et al. 2020, sec. 2.2) trains on the bits of latents + U(-1/2, 1/2)
under each group's prior (erp.priors): cheap uniform noise, large groups read
from a table of the density, and the priors' gradient fitted to the rounded
latents the file codes (training_bits).
"""
import jax
import jax.numpy as jnp
import numpy as np

from erp import active
from erp import adaptive_rate
from erp import materialize
from erp import packed
from erp import priors
from erp import rate_table
from erp.noise import uniform_noise
from erp.priors import bits_of


def group_bits(latents, prior_params, rng=None):
  """{group: total bits} of the latents; with rng, at latents + U(-1/2, 1/2) (training)."""
  out = {}
  names = sorted(latents)
  keys = jax.random.split(rng, len(names)) if rng is not None else [None] * len(names)
  for name, key in zip(names, keys):
    x = latents[name]
    if key is not None:
      x = x + uniform_noise(jax.random.bits(key, (2,), jnp.uint32), x.shape)
    out[name] = bits_of(prior_params[name], x).sum()
  return out


def _stack(trees):
  """The groups' params stacked [G, ...] (a plain dict, unpacked once if packed)."""
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
  return stacked.unpacked() if isinstance(stacked, packed.Packed) else stacked


# The density of G groups at once: params stacked [G, ...], x [G, n]. Each group's
# density fused forward and backward takes XLA ~1.5 s to compile on CPU, so the rate
# evaluates them in a few batched calls, whatever the number of groups.
_batched_bits = jax.vmap(bits_of)


FITS = ('rounded', 'noisy', 'active', 'active_base')
ACTIVE_FITS = ('active', 'active_base')  # The fits that price each group's ACTIVE block.
LATENT_GRADIENTS = ('noisy', 'interpolated')
ADAPTIVE_GRADIENTS = ('prior', 'code')  # erp.adaptive_rate: small groups' latents' gradient.
FIT_HALF_WIDTH = 128  # fit='rounded' prices the integers [-128, 128) from a histogram.


def training_bits(latents, prior_params, rng, prior_samples, table_points=0, fit='rounded',
                  views=None, latent_gradient='noisy', adaptive_max_latents=0,
                  adaptive_gradient='prior', references=None):
  """{group: bits}, the rate term of training: its value and its gradients.

  The latents' gradient is that of the bits at latents + U(-1/2, 1/2) (EPR
  sec. 2.2), every element; latent_gradient='interpolated' (fits but 'noisy'):
  its mean over the noise, of the bits of the integers the fit prices joined by
  lines (rate_table.expected_slope_only; no noise, no tables). fit says what the
  priors' gradient fits, and so what the value is:
  * 'rounded': the bits of round(latents), the integers the file codes, so the
    priors price the file, not a blurred proxy of it; the value is those bits
    too. Computed from each group's histogram over [-FIT_HALF_WIDTH,
    FIT_HALF_WIDTH) (one density evaluation per integer, whatever the group's
    size; latents beyond count at the edge: trained LeNets' stay within +-33),
    counted on `prior_samples` elements, evenly spaced from a random start, in
    larger groups (rounded_bits, sample_indices).
  * 'active': as 'rounded', over the block of each group's ACTIVE code only (the
    file stores which slices along each axis hold a nonzero and codes the
    block they cut out, erp.latent_code; the zeros outside cost nothing), plus
    the masks' bits (active_block); views {group: shape} gives the axes the
    code sees (erp.active.coded_view). 'rounded' priced those outside zeros too: on a
    LeNet5 file at 1.5 KB, fc1's 390k of them cost ~410 bits of the 450 by
    which the priors' estimate exceeded the code.
  * 'active_base': as 'active', a group of >= 2 axes less its most frequent
    value (modes), as format 8's ACTIVE_BASE code: its latents' gradient is
    that of latents - base, and the priors fit the block of round(latents) -
    base (LeNet5 fc2 kernels drift to -1: with 'active', est / coded was
    1.14-1.19 on them).
  * 'noisy' (as the paper, after Balle et al. 2018): the value and the priors'
    fit are the bits at the same latents + noise, i.e. the unrounded latents'
    histogram blurred by one bin; the priors' gradient is estimated without bias
    from `prior_samples` elements per larger group (backpropagating into ~60
    prior parameters over a whole group cost 4x the rest of a LeNet-300-100
    step on CPU). Measured on LeNet5: these priors priced the file's latents at
    1.3-1.7x the bits the coder spent.
  With table_points > 0, the latents' part reads each (frozen) density from a
  table of at most that many points (erp.rate_table): every group's with
  'rounded' (small groups too: one compiled density fewer, which took LeNet-300-
  100's first step from ~22 s to ~17 s on a loaded 2-core CPU), with 'noisy'
  those larger than prior_samples (the smaller ones need the density's
  gradient to the priors). All tables come from one batched call; groups
  evaluated exactly are batched too, zero-padded to the largest and masked.
  Groups of at most adaptive_max_latents latents are priced by their adaptive code instead
  (the cheapest, ACTIVE ones included, of those views shows; with references
  {group: bool mask} (erp.active.references) ACTIVE_REF ones too), with adaptive_gradient's
  gradient (erp.adaptive_rate).
  """
  if fit not in FITS:
    raise ValueError(f'unknown prior fit {fit!r}; known: {FITS}')
  active = fit in ACTIVE_FITS
  if active and views is None:
    raise ValueError(f"prior fit {fit!r} needs each group's coded view (views)")
  if latent_gradient not in LATENT_GRADIENTS or (latent_gradient != 'noisy' and fit == 'noisy'):
    raise ValueError(f'latent gradient {latent_gradient!r} with prior fit {fit!r}')
  if adaptive_gradient not in ADAPTIVE_GRADIENTS:
    raise ValueError(f'unknown adaptive rate gradient {adaptive_gradient!r}')
  small = {n: v for n, v in latents.items() if v.size <= adaptive_max_latents}
  if small:  # Priced by their adaptive code (erp.adaptive_rate), the others by their priors.
    rest = {n: v for n, v in latents.items() if n not in small}
    out = training_bits(latents if adaptive_gradient == 'prior' else rest, prior_params,
                        rng, prior_samples, table_points, fit, views, latent_gradient)
    return {**out, **(adaptive_rate.prior_shaped_bits(small, out, FIT_HALF_WIDTH, views,
                                                      references)
                      if adaptive_gradient == 'prior'
                      else adaptive_rate.training_bits(small, FIT_HALF_WIDTH, views, references))}
  names = sorted(latents)
  if not names:
    return {}
  # All the step's randomness from one threefry draw (each draw is a few XLA ops).
  seeds = jax.random.bits(rng, (len(names) + 1, 2), jnp.uint32)
  sizes = [latents[n].size for n in names]
  offsets = np.cumsum([0] + sizes)
  bases = modes(latents, names, views, seeds[1:], prior_samples) if fit == 'active_base' else None
  if latent_gradient == 'interpolated':
    fit_bits, grid = rounded_bits(latents, prior_params, names, seeds[1:], prior_samples,
                                  views if active else None, bases, return_grid=True)
    # Dependent on the fit's bits for the order of reads explained at `tables` below.
    slopes = rate_table.integer_slopes(
        jax.lax.stop_gradient(grid) + 0.0 * jax.lax.stop_gradient(fit_bits.sum()))
    return {n: fit_bits[i] + rate_table.expected_slope_only(
        slopes[i], latents[n] if bases is None else latents[n] - bases[i])
            for i, n in enumerate(names)}
  large = [n for n in names if prior_samples and latents[n].size > prior_samples]
  tabled = [n for n in names if table_points and (fit != 'noisy' or n in large)]
  batched = [n for n in names if n not in tabled and n not in large]
  # One draw for all groups, in its own pass (erp.materialize): inside the slope's, whose
  # gathers keep XLA:CPU from vectorizing, the hash cost more (LeNet-300-100's 235k
  # latents, one thread: 0.32 ms with the hash inside, 0.23 ms with it outside).
  noise = materialize.materialized(uniform_noise(seeds[0], (int(offsets[-1]),)), 0)
  noisy = {n: latents[n] + noise[offsets[i]:offsets[i + 1]].reshape(latents[n].shape)
           for i, n in enumerate(names)}
  if bases is not None:
    noisy = {n: noisy[n] - bases[i] for i, n in enumerate(names)}
  params = {n: prior_params[n] if fit == 'noisy' else jax.lax.stop_gradient(prior_params[n])
            for n in names}
  fit_bits = (rounded_bits(latents, prior_params, names, seeds[1:], prior_samples,
                           views if active else None, bases)
              if fit != 'noisy' else None)
  out = {}
  if batched:
    sizes = [latents[n].size for n in batched]
    width = max(sizes)
    mask = (np.arange(width) < np.array(sizes)[:, None]).astype(np.float32)
    x = jnp.stack([jnp.pad(noisy[n].ravel(), (0, width - size))
                   for n, size in zip(batched, sizes)])
    bits = (_batched_bits(_stack([params[n] for n in batched]), x) * mask).sum(-1)
    out.update({n: bits[i] for i, n in enumerate(batched)})
  if tabled:
    frozen = jax.lax.stop_gradient(_stack([prior_params[n] for n in tabled]))
    points = rate_table.points(rate_table.mantissa_bits(table_points))
    tables = _batched_bits(frozen, jnp.broadcast_to(points, (len(tabled),) + points.shape))
    if fit_bits is not None:
      # A data dependence (adding 0): the fit's reads of the latents come before their
      # gradient, so before the optimizer's in-place update of them; else XLA:CPU may
      # copy every latent first (0.4 ms a step on LeNet-300-100's 235k, 2-core CPU).
      tables = tables + 0.0 * jax.lax.stop_gradient(fit_bits.sum())
    inner, change = rate_table.segments(tables)
    for i, n in enumerate(tabled):
      segments = (inner[i], change[i])
      out[n] = (rate_table.slope_only(segments, noisy[n]) if fit != 'noisy'
                else rate_table.interpolate(segments, noisy[n]).sum())
  for n in large:
    if n not in tabled:
      out[n] = bits_of(jax.lax.stop_gradient(prior_params[n]), noisy[n]).sum()
  if large and fit == 'noisy':  # The priors' gradient, from samples.
    idx = [sample_indices(seeds[1 + names.index(n)], prior_samples, latents[n].size)
           for n in large]
    x = jnp.stack([jax.lax.stop_gradient(noisy[n].ravel()[idx[i]]) for i, n in enumerate(large)])
    estimates = _batched_bits(_stack([prior_params[n] for n in large]), x).sum(-1)
    for i, n in enumerate(large):
      estimate = estimates[i] * (latents[n].size / prior_samples)
      out[n] = out[n] + estimate - jax.lax.stop_gradient(estimate)
  if fit_bits is not None:  # The value: bits of the rounded latents; the priors' gradient.
    out = {n: fit_bits[i] + out[n] - jax.lax.stop_gradient(out[n])
           for i, n in enumerate(names)}
  return out


def modes(latents, names, views, seeds=None, samples=0):
  """[len(names)] float32: each group's most frequent rounded latent (ties go to 0) if its
  view has >= 2 axes, the base erp.latent_code's ACTIVE_BASE subtracts; else 0. Counted on
  the elements rounded_bits counts (sample_indices, same seeds): one histogram for all."""
  half = FIT_HALF_WIDTH
  indices = []
  for i, n in enumerate(names):
    if len(views[n]) < 2:
      continue
    values = jax.lax.stop_gradient(latents[n]).ravel()
    if seeds is not None and samples and values.size > samples:
      values = values[sample_indices(seeds[i], samples, values.size)]
    indices.append(jnp.clip(jnp.round(values).astype(jnp.int32) + half, 0, 2 * half - 1)
                   + i * 2 * half)
  if not indices:
    return jnp.zeros(len(names), jnp.float32)
  hists = jnp.bincount(jnp.concatenate(indices), length=len(names) * 2 * half)
  return active.histogram_base(hists.reshape(len(names), 2 * half), half).astype(jnp.float32)


def rounded_bits(latents, prior_params, names, seeds=None, samples=0, views=None, bases=None,
                 return_grid=False):
  """[len(names)] bits of round(latents) under each group's prior, from histograms over
  [-FIT_HALF_WIDTH, FIT_HALF_WIDTH) (values beyond count at the edges); gradient to the
  priors only. With seeds (uint32 [len(names), 2]) and samples > 0, a group larger than
  samples is counted on that many elements (sample_indices) and scaled: an
  unbiased histogram at a fraction of the scatter's cost. rd.prior_samples=4096 fits
  as well as every latent: a prior fitted for 6000 steps to a trained LeNet-300-100
  file's first layer (235k latents, 99 % zeros) priced it at 1.0421x its histogram's
  bits, against 1.0420 counting them all, and 3 training runs matched those at 16384
  (experiments/results, `_fast3_`). One histogram counts every group (each group's
  bins offset by its index): per-group scatters were ~60 of the step's XLA ops.
  With views ({group: shape}, fit='active'), each group counts the elements of
  its ACTIVE block only, and adds the masks' bits (active_block); with bases
  ([len(names)], modes), of round(latents) - base. return_grid: also the bits of the
  integers [len(names), 2 * FIT_HALF_WIDTH]."""
  half = FIT_HALF_WIDTH
  indices, inside, mask_bits = [], [], []
  for i, n in enumerate(names):
    values = jax.lax.stop_gradient(latents[n]).ravel()
    if bases is not None:
      values = values - bases[i]
    block, bits = (active_block(values, views[n]) if views is not None
                   else (jnp.ones(values.shape, jnp.float32), 0.0))
    weight = 1.0
    if seeds is not None and samples and values.size > samples:
      index = sample_indices(seeds[i], samples, values.size)
      values, block = values[index], block[index]
      weight = latents[n].size / samples
    indices.append(jnp.clip(jnp.round(values).astype(jnp.int32) + half, 0, 2 * half - 1)
                   + i * 2 * half)
    inside.append(block * np.float32(weight))
    mask_bits.append(bits)
  hists = jnp.bincount(jnp.concatenate(indices), jnp.concatenate(inside),
                       length=len(names) * 2 * half).reshape(len(names), 2 * half)
  bits = jax.vmap(lambda p: priors.integer_grid_bits(p, -half, 2 * half))(
      _stack([prior_params[n] for n in names]))
  total = (bits * hists).sum(-1) + jnp.stack([jnp.float32(b) for b in mask_bits])
  return (total, bits) if return_grid else total


def active_block(values, view):
  """(float 1/0 [values.size]: inside the ACTIVE block, masks' bits) of the rounded values
  (flat, C order) seen in shape view: the block is the product of the slices along each
  axis that hold a nonzero (erp.latent_code.active_masks); the masks cost about their
  binary entropy, sum(n) H(active / sum(n)) over the axes' lengths n. A group of
  fewer than two axes is one block (the coder codes it whole), no masks."""
  if len(view) < 2:
    return jnp.ones(values.shape, jnp.float32), jnp.float32(0.0)
  masks, block = active.masks_and_block((jnp.round(values) != 0).reshape(view))
  total = float(sum(view))
  fraction = sum(m.sum() for m in masks).astype(jnp.float32) / total
  p = jnp.clip(fraction, 1e-6, 1 - 1e-6)
  entropy = -(p * jnp.log2(p) + (1 - p) * jnp.log2(1 - p))
  bits = jnp.where((fraction > 0) & (fraction < 1), total * entropy, 0.0)
  return block.reshape(-1).astype(jnp.float32), bits


def sample_indices(seed, num, size):
  """num indices into [0, size), evenly spaced from a start drawn from seed (two uint32
  words, e.g. jax.random.bits(key, (2,), jnp.uint32)), wrapping around.

  A systematic sample: each index is uniform over [0, size) (bias < size / 2**32),
  so a histogram of the sampled values, scaled by size / num, is unbiased; the
  sample spreads over the whole group (no element drawn twice), and the reads go
  through memory in order.
  """
  start = (seed[0] % jnp.uint32(size)).astype(jnp.int32)
  offsets = jnp.floor(jax.lax.iota(jnp.float32, num) * np.float32(size / num)).astype(jnp.int32)
  index = start + jnp.minimum(offsets, size - 1)
  return jnp.where(index >= size, index - size, index)
