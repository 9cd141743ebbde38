"""A benchmark's record: printed as one JSON line and written to a file (the committed result)."""
import json
import os


def write(record, path):
  print(json.dumps(record))
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    json.dump(record, f, indent=1)
