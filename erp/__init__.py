"""erp: neural-network weight compression by Entropy Penalized Reparameterization.

The library (Oktay, Balle, Singh, Shrivastava, ICLR 2020) for any Flax params pytree:

    state = erp.reparameterize(params)          # latents + decoders + one prior per leaf
    params = erp.decode(state)                  # rounded (straight-through), differentiable
    bits = erp.rate(state, rng)                 # training-time rate (noisy relaxation)
    tx = erp.optimizer()                        # per-part learning rates, one optax transform
    erp.save('model.erp', state, extra={'batch_stats': bs})
    variables = erp.load_variables('model.erp') # from the file alone

erp.load (model, variables, config) reads files written by erp's own runs.
"""
from erp.errors import ErpError
from erp.file import load_metadata
from erp.file import load_variables
from erp.file import save
from erp.state import EprState
from erp.state import decode
from erp.state import optimizer
from erp.state import rate
from erp.state import reparameterize

__version__ = '0.3.0'
__all__ = ['EprState', 'ErpError', 'decode', 'load', 'load_metadata', 'load_variables',
           'optimizer', 'rate', 'reparameterize', 'save']


def load(path, model_class=None, **kwargs):
  """(model, variables, config) of a file written by an erp run (erp.loader.load)."""
  from erp import loader  # The harness: models, configs, datasets.
  return loader.load(path, model_class, **kwargs)
