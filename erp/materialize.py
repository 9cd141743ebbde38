"""Keep XLA from recomputing a value in each of its consumers.

XLA fuses cheap elementwise producers into every consumer, so a value read by
several fusions (a decoded weight, a table of bits, the rate's slope) is
recomputed in each, and a late recomputation from the latents can force a copy
of them before the optimizer's in-place update. XLA:CPU drops optimization
barriers before fusing; an in-place update of one element holds: the value is
then computed once, into its own buffer.
"""

# Below this many elements recomputing costs less than the extra op (each XLA:CPU op
# costs ~2-3 us to launch, as much as a few thousand elementwise operations).
MIN_ELEMENTS = 4096


def materialized(x, min_elements=MIN_ELEMENTS):
  """x, written once to its own buffer if it has at least min_elements elements."""
  if x.size < min_elements:
    return x
  first = (0,) * x.ndim
  return x.at[first].set(x[first])
