"""The input pipeline: batches made by grain, sharded per host, prefetched onto devices.

A source is random access: len(source) examples, and source.batch(indices, rng)
-> (uint8 images [b, h, w, c], int32 labels [b]), augmented from rng when the
source is a training one. Training batch t is the examples
order[s * B:(s + 1) * B] of epoch e = t // steps_per_epoch, s = t % steps_per_epoch,
order = data.epoch_permutation(seed, e, n), of which host p takes the p-th of
process_count equal slices. So the batches are the same for any number of hosts,
devices, threads or worker processes, and a run resumed at step t continues
exactly where it stopped. grain runs the batch function in threads
(ReadOptions) or worker processes (mp_prefetch) ahead of the step, so decoding
and augmentation stay off its critical path; to_device keeps the next batches'
transfers in flight.
"""
import collections

from absl import flags
import grain
import jax
import numpy as np

from erp import data
from erp.errors import ErpError


class _TrainBatch:
  """step -> this host's slice of training batch `step` (picklable for worker processes)."""

  def __init__(self, source, batch_size, seed, process_index, process_count):
    if batch_size % process_count:
      raise ErpError(f'batch size {batch_size} does not split over {process_count} hosts')
    self.source, self.batch_size, self.seed = source, batch_size, seed
    self.process_index, self.local = process_index, batch_size // process_count
    self.steps_per_epoch = len(source) // batch_size
    if self.steps_per_epoch == 0:
      raise ErpError(f'{len(source)} training examples make no batch of {batch_size}')
    self._order = (None, None)

  def __call__(self, step):
    epoch, s = divmod(int(step), self.steps_per_epoch)
    order = self._order  # One read: other threads may replace it at an epoch's end.
    if order[0] != epoch:  # One permutation per epoch, not per step.
      order = self._order = (epoch, data.epoch_permutation(self.seed, epoch, len(self.source)))
    start = s * self.batch_size + self.process_index * self.local
    indices = order[1][start:start + self.local]
    return self.source.batch(indices, np.random.default_rng([self.seed, int(step),
                                                             self.process_index]))


def _stream(dataset, threads, workers):
  it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                 prefetch_buffer_size=max(2 * threads, 2)))
  if workers:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller
      flags.FLAGS.mark_as_parsed()  # (no absl.app) has parsed none: use their defaults.
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it)


def train_batches(source, *, batch_size, seed, start_step, num_steps, threads=1, workers=0,
                  process_index=None, process_count=None):
  """Host batches (numpy) of training steps start_step .. num_steps - 1 (see the module doc)."""
  make = _TrainBatch(source, batch_size, seed,
                     jax.process_index() if process_index is None else process_index,
                     jax.process_count() if process_count is None else process_count)
  if start_step >= num_steps:
    return iter(())
  return _stream(grain.MapDataset.range(start_step, num_steps).map(make), threads, workers)


class _EvalBatch:

  def __init__(self, source, batch_size):
    self.source, self.batch_size = source, batch_size

  def __call__(self, j):
    indices = np.arange(j * self.batch_size, min((j + 1) * self.batch_size, len(self.source)))
    return self.source.batch(indices)


def eval_batches(source, batch_size, threads=1, workers=0):
  """The whole source in order, batch_size at a time (the last batch may be smaller)."""
  num_batches = -(-len(source) // batch_size)
  if not num_batches:
    return iter(())
  return _stream(grain.MapDataset.range(num_batches).map(_EvalBatch(source, batch_size)),
                 threads, workers)


def host_array(a):
  """A numpy array; a worker's shared-memory batch is copied out, then freed with it."""
  if hasattr(a, 'unlink_on_del'):
    a.unlink_on_del()
    return np.array(a)
  return np.asarray(a)


def to_device(batches, sharding, ahead=2):
  """Each host batch as global arrays laid out by sharding, `ahead` transfers in flight."""
  queue = collections.deque()
  for batch in batches:
    queue.append(tuple(jax.make_array_from_process_local_data(sharding, host_array(a))
                       for a in batch))
    del batch  # Frees a worker's shared memory now, not at the next batch.
    if len(queue) > ahead:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
