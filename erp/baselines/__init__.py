"""Competing compression methods on erp's harness: same models, data, coder and file format.

Each module trains or transforms a float run (config.init_from) and writes an
.erp file (header method = the module's name) that erp.evaluate decodes.
"""
