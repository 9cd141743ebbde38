"""The one exception erp raises for bad input (files, configs, data)."""


class ErpError(Exception):
  """A problem with user input: a model file, a config, a data directory."""
