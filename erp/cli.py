"""The harness CLIs' error handling: bad input is one `erp: error:` line, never a traceback."""
import sys

from absl import app
from absl import flags
from absl import logging

from erp.errors import ErpError


def run(main_fn):
  """app.run(main_fn), turning config override errors and ErpErrors into one clear line.

  config_flags raises a bare AttributeError/KeyError while parsing
  `--config.unknown=...`; it happens before main runs, so it is a config error.
  """
  started = []
  try:
    def wrapped(argv):
      started.append(True)
      if not flags.FLAGS['verbosity'].present:  # jax logs its backend probing at INFO.
        logging.set_verbosity(logging.WARNING)
      main_fn(argv)

    app.run(wrapped)
  except (AttributeError, KeyError) as e:
    if started:
      raise
    bad = [a for a in sys.argv[1:] if a.startswith('--config.')]
    key = str(e).strip('"\'')
    print(f"erp: error: unknown config key '{key}' (overrides given: {' '.join(bad)})",
          file=sys.stderr)
    sys.exit(2)
  except ErpError as e:
    print(f'erp: error: {e}', file=sys.stderr)
    sys.exit(1)
