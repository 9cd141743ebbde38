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
    print(f'erp: error: {unknown_key_message(sys.argv[1:], e)}', file=sys.stderr)
    sys.exit(2)
  except ErpError as e:
    print(f'erp: error: {e}', file=sys.stderr)
    sys.exit(1)


def unknown_key_message(args, error):
  """'unknown config key 'lmda' (did you mean 'rd.lmbda'?)' for the first bad --config.KEY."""
  import difflib
  from erp.config import flatten, base_config
  known = set(flatten(base_config().to_dict()))
  for arg in args:
    if arg.startswith('--config.'):
      key = arg[len('--config.'):].partition('=')[0]
      if key not in known:
        leaf = key.rpartition('.')[2]
        close = difflib.get_close_matches(key, known, 1) or difflib.get_close_matches(
            leaf, {k.rpartition('.')[2]: k for k in known}, 1)
        if close and close[0] not in known:
          close = [k for k in known if k.rpartition('.')[2] == close[0]][:1]
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        return f"unknown config key '{key}'{hint}"
  return f'bad config override: {str(error).strip(chr(34) + chr(39))}'
