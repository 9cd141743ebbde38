"""python -m erp.inspect FILE [--json]: per-leaf table of what an .erp file holds.

Works from the file alone (any erp file: a run's, or one a user saved with
erp.save): every leaf is decoded through its codec first, so a bad file fails
with one clear error before anything is printed.
"""
import json
import sys


from erp import codecs
from erp import file as file_lib


def leaf_rows(path):
  """(metadata, [one dict per leaf: path, shape, codec, section bytes, coded bits, zeros]), num_bytes."""
  blob = file_lib.read_file(path)
  found, payloads, metadata = file_lib.parse(blob)
  rows = []
  values = codecs.read_all(found, payloads)  # Full validation of every leaf.
  for leaf, payload, stats in zip(found, payloads, codecs.describe_all(found, payloads, values)):
    rows.append({'path': leaf.name, 'shape': list(leaf.shape),
                 'codec': f'{leaf.codec}:{leaf.variant}' if leaf.variant else leaf.codec,
                 'section_bytes': len(payload), **stats})
  return metadata, rows, len(blob)


def main(argv):
  from absl import flags
  del argv
  path = flags.FLAGS.file
  metadata, rows, num_bytes = leaf_rows(path)
  if flags.FLAGS.json:
    print(json.dumps({'file': path, 'num_bytes': num_bytes, 'metadata': metadata,
                      'leaves': rows}, default=float))
    return
  what = ' '.join(str(metadata[k]) for k in ('method', 'model', 'dataset') if k in metadata)
  print(f'{path}: {what or "erp file"}')
  print(f'{"leaf":42s} {"shape":18s} {"codec":12s} {"bytes":>8s} {"bits/value":>10s} '
        f'{"coded bits":>10s} {"zeros":>6s}')
  for r in rows:
    per = f'{r["bits_per_value"]:.3f}' if 'bits_per_value' in r else ''
    coded = f'{r["coded_bits"]}' if 'coded_bits' in r else ''
    zeros = f'{r["zero_fraction"]:.3f}' if 'zero_fraction' in r else ''
    print(f'{r["path"]:42s} {str(tuple(r["shape"])):18s} {r["codec"]:12s} '
          f'{r["section_bytes"]:8d} {per:>10s} {coded:>10s} {zeros:>6s}')
  total = sum(r['section_bytes'] for r in rows)
  print(f'sections {total} bytes; whole file {num_bytes} bytes')


if __name__ == '__main__':
  from absl import flags
  from erp import cli
  flags.DEFINE_string('file', None, 'An .erp file (or give it as the only argument).')
  flags.DEFINE_bool('json', False, 'Print one JSON document (and nothing else) on stdout.')
  if len(sys.argv) >= 2 and not sys.argv[1].startswith('-'):  # python -m erp.inspect FILE
    sys.argv = [sys.argv[0], f'--file={sys.argv[1]}'] + sys.argv[2:]
  flags.mark_flag_as_required('file')
  cli.run(main)
