"""The package's shape: no import cycles among erp's modules (deferred imports count too),
the library never imports the harness, and every module stays under ~300 lines."""
import ast
import os

from conftest import REPO

PACKAGE = os.path.join(REPO, 'erp')
LIBRARY = ('erp', 'erp.errors', 'erp.exact', 'erp.state', 'erp.leaves', 'erp.reparam', 'erp.priors',
           'erp.packed', 'erp.materialize',
           'erp.rate_term', 'erp.rate_table', 'erp.adaptive_rate', 'erp.active', 'erp.noise',
           'erp.file', 'erp.coding', 'erp.container', 'erp.header_dictionary',
           'erp.adaptive', 'erp.binarized', 'erp.latent_code', 'erp.flat_code', 'erp.codecs',
           'erp.codecs.epr', 'erp.codecs.float', 'erp.codecs.surp', 'erp.codecs.surp_global',
           'erp.codecs.miracle')


def _modules():
  out = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        module = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
        out[module.removesuffix('.__init__')] = path
  return out


def _imports(path, modules):
  """erp modules imported anywhere in the file (top level or inside functions)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    found |= {n for n in names if n in modules}
  return found


def test_no_import_cycles_and_the_library_never_imports_the_harness():
  modules = _modules()
  graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
  graph['erp'] -= {'erp.loader'}  # erp.load: a lazy convenience over the harness loader.
  for m in LIBRARY:
    assert graph[m] <= set(LIBRARY), (m, graph[m] - set(LIBRARY))
  # The package __init__ is imported by every submodule, so it is not an edge back.
  graph = {m: {d for d in deps if d != 'erp' and not (m.startswith(d + '.')
                                                      and modules[d].endswith('__init__.py'))}
           for m, deps in graph.items()}
  state = {}

  def visit(m, stack):
    state[m] = 'open'
    for d in graph[m]:
      assert state.get(d) != 'open', f'import cycle: {" -> ".join(stack + [m, d])}'
      if d not in state:
        visit(d, stack + [m])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [])


def test_modules_stay_small():
  long = {m: n for m, p in _modules().items() if (n := len(open(p).readlines())) > 300}
  assert not long, long
