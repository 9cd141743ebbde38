"""Each method's front under the validation protocol, and methods compared at equal error.

Both read the seed means of runs with a validation split (tables.seed_means): a setting is
on its method's front when no other setting of that method has a file no larger and a
mean validation error no higher (one of them strictly better), so the front is chosen on
validation error alone and the test error is only reported. Published operating points of
the same dataset and model stand beside the front (they have no validation error).
"""


def _beats(a, b):
  """Whether seed-mean group a is no worse than b in size and val error, and better in one."""
  (sa, _), (va, _) = a['num_bytes'], a['val_error_pct']
  (sb, _), (vb, _) = b['num_bytes'], b['val_error_pct']
  return sa <= sb and va <= vb and (sa < sb or va < vb)


def val_fronts(groups):
  """{(dataset, model, method): [group, ...]} of the groups on their method's front, by size."""
  by_method = {}
  for g in groups:
    by_method.setdefault((g['dataset'], g['model'], g['method']), []).append(g)
  return {key: sorted((g for g in mine if not any(_beats(o, g) for o in mine)),
                      key=lambda g: g['num_bytes'][0])
          for key, mine in sorted(by_method.items())}


def fronts_markdown(fronts, pubs):
  lines = ['| dataset | model | method | setting | seeds | size (KB) | val error '
           '| test error |', '|' + '---|' * 8]
  keys = list(fronts)  # Sorted by (dataset, model, method): a panel's fronts are adjacent.
  for i, (dataset, model, method) in enumerate(keys):
    for g in fronts[(dataset, model, method)]:
      (b, bs), (v, vs), (e, es) = g['num_bytes'], g['val_error_pct'], g['error_pct']
      lines.append(f'| {dataset} | {model} | {method} | {g["setting"]} '
                   f'| {",".join(map(str, g["seeds"]))} | {b / 1000:.3f} ± {bs / 1000:.3f} '
                   f'| {v:.2f} ± {vs:.2f} % | {e:.2f} ± {es:.2f} % |')
    if i + 1 == len(keys) or keys[i + 1][:2] != (dataset, model):  # The panel's last front.
      lines += [f'| {dataset} | {model} | {p["method"]} | {p["cite"]} '
                f'| | {p["num_bytes"] / 1000:g} | | {p["error_pct"]:g} % |'
                for p in pubs if (p['dataset'], p['model']) == (dataset, model)]
  return '\n'.join(lines) + '\n'


def at_equal_error(fronts, groups, method, baseline):
  """For each setting on `method`'s front (fronts: val_fronts(groups)): the smallest
  `baseline` group (same dataset and model) whose mean val error is no higher, or None;
  [(group, match)] by panel and size."""
  out = []
  for (_, _, m), front in fronts.items():
    if m != method:
      continue
    for g in front:
      matches = [b for b in groups if b['method'] == baseline
                 and (b['dataset'], b['model']) == (g['dataset'], g['model'])
                 and b['val_error_pct'][0] <= g['val_error_pct'][0]]
      out.append((g, min(matches, key=lambda b: b['num_bytes'][0]) if matches else None))
  return out


def at_equal_error_markdown(pairs, method, baseline):
  lines = [f'| dataset | model | {method} setting | seeds | size (KB) | val error '
           f'| {baseline}: smallest with val error no higher | seeds | size (KB) | val error '
           f'| {baseline} size / {method} size |', '|' + '---|' * 11]
  for g, b in pairs:
    left = (f'| {g["dataset"]} | {g["model"]} | {g["setting"]} | {len(g["seeds"])} '
            f'| {g["num_bytes"][0] / 1000:.3f} | {g["val_error_pct"][0]:.2f} % ')
    if b is None:
      lines.append(left + '| none | | | | |')
    else:
      lines.append(left + f'| {b["setting"]} | {len(b["seeds"])} '
                   f'| {b["num_bytes"][0] / 1000:.3f} | {b["val_error_pct"][0]:.2f} % '
                   f'| {b["num_bytes"][0] / g["num_bytes"][0]:.2f} |')
  return '\n'.join(lines) + '\n'
