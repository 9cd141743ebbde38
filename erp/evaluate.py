"""Test error of a model, in memory or decoded from an exported .erp file.

python -m erp.evaluate --model DIR/model.erp [--json] [--data_dir DIR]
"""
import jax
import jax.numpy as jnp
import numpy as np

from erp import data


def make_predict(model, ds):
  """jit(variables, uint8 images [b, h, w, c]) -> predicted labels [b]."""

  @jax.jit
  def predict(variables, images):
    logits = model.apply(variables, data.preprocess(images, ds), train=False)
    return jnp.argmax(logits, -1)

  return predict


def test_error(predict, variables, images, labels, batch_size=1000):
  """Top-1 error in percent over all examples (the last batch is padded, then cut)."""
  n = len(labels)
  correct = 0
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    real = len(batch)
    if real < batch_size:  # One compiled shape: pad the tail batch.
      batch = np.concatenate([batch, np.zeros((batch_size - real,) + batch.shape[1:],
                                              batch.dtype)])
    pred = np.asarray(predict(variables, batch))[:real]
    correct += int((pred == labels[start:start + real]).sum())
  return 100.0 * (n - correct) / n


def evaluate_file(path, data_dir=None):
  """The evaluate CLI's JSON record for one .erp file, on its dataset's test split."""
  import time
  from erp import container, loader, reparam
  blob = loader.read_file(path)
  t0 = time.time()
  model, variables, config = loader.load_bytes(blob)
  decode_seconds = time.time() - t0
  method = container.read(blob)[0].get('method', 'epr')
  ds = data.info(config.data.name)
  images, labels = data.load(ds.name, 'test', data_dir or config.data.dir or None)
  error = test_error(make_predict(model, ds), variables, images, labels)
  return {
      'model': config.model.name,
      'dataset': ds.name,
      'method': method,
      'num_examples': int(len(labels)),
      'error_pct': error,
      'accuracy_pct': 100.0 - error,
      'num_bytes': len(blob),
      'num_params': reparam.num_params(variables['params']),
      'decode_seconds': decode_seconds,
  }


def main(argv):
  import json
  import sys
  from absl import flags
  from erp.errors import ErpError
  del argv
  try:
    record = evaluate_file(flags.FLAGS.model, flags.FLAGS.data_dir)
  except ErpError as e:
    print(f'erp: error: {e}', file=sys.stderr)
    sys.exit(1)
  print(f'{record["model"]} on {record["dataset"]}: test error {record["error_pct"]:.2f}% '
        f'({record["num_examples"]} examples), file {record["num_bytes"]} bytes, '
        f'decoded in {record["decode_seconds"]:.3f} s')
  if flags.FLAGS.json:
    print(json.dumps(record))


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_string('model', None, 'An .erp model file.')
  flags.DEFINE_bool('json', False, 'Print one JSON record as the last line.')
  flags.DEFINE_string('data_dir', None, 'Dataset root; default the file\'s config, '
                      'then $ERP_DATA_DIR.')
  flags.mark_flag_as_required('model')
  app.run(main)
