"""A benchmark's record: printed as one JSON line and written to a file (the committed result)."""
import json
import os
import platform

import jax


def machine():
  """The fields that say where a benchmark ran."""
  return {'device': str(jax.devices()[0].device_kind), 'cpu_count': os.cpu_count(),
          'jax_version': jax.__version__, 'platform': platform.platform()}


def write(record, path):
  print(json.dumps(record))
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    json.dump(record, f, indent=1)
