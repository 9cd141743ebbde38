"""erp: neural-network weight compression by Entropy Penalized Reparameterization."""
from erp.errors import ErpError
from erp.loader import load

__version__ = '0.1.0'
__all__ = ['ErpError', 'load']
