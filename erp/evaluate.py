"""Test error of a model, in memory or decoded from an exported .erp file.

python -m erp.evaluate --model DIR/model.erp [--json] [--data_dir DIR]
"""
import jax
import jax.numpy as jnp
import numpy as np

from erp import data
from erp import pipeline


def make_predict(model, ds):
  """jit(variables, uint8 images [b, h, w, c]) -> predicted labels [b]."""

  @jax.jit
  def predict(variables, images):
    logits = model.apply(variables, data.preprocess(images, ds), train=False)
    return jnp.argmax(logits, -1)

  return predict


def error_pct(predict, variables, source, batch_size=1000, threads=1, workers=0):
  """Top-1 error in percent over a source's examples (erp.data.source), in order.

  The tail batch is padded to batch_size (one compiled shape), then cut.
  """
  n, correct = len(source), 0
  for images, labels in pipeline.eval_batches(source, batch_size, threads, workers):
    images, labels = pipeline.host_array(images), pipeline.host_array(labels)
    real = len(labels)
    if real < batch_size:
      images = np.concatenate([images, np.zeros((batch_size - real,) + images.shape[1:],
                                                images.dtype)])
    pred = np.asarray(predict(variables, images))[:real]
    correct += int((pred == labels).sum())
  return 100.0 * (n - correct) / n


def split_error_pct(predict, variables, split, data_config):
  """error_pct over a data.source split with the config's pipeline threads and workers;
  None for an empty split."""
  if not len(split):
    return None
  return error_pct(predict, variables, split, threads=data_config.threads,
                   workers=data_config.workers)


def evaluate_file(path, data_dir=None, model_class=None, max_values=None, val=None,
                  fit=False):
  """The evaluate CLI's JSON record for one erp run's file, on its dataset's test split.

  The data location comes from the caller (data_dir, else $ERP_DATA_DIR), never
  from the file. val: the run's validation split (a data.source), also
  evaluated ('val_error_pct'; None when empty), from the same decode. fit: also
  the error on the split the run trained on and on its held-out val, as the file's
  config (else erp's defaults) cuts them ('train_error_pct', 'val_error_pct'): a
  compressed model far above its float's training error is short of capacity at
  its size, not overfit, so regularizing it cannot help.
  """
  import time
  from erp import file as file_lib, loader, reparam
  blob = file_lib.read_file(path)
  t0 = time.time()
  variables, metadata = file_lib.decode_bytes(blob, max_values or file_lib.DEFAULT_MAX_VALUES)
  model, variables, config = loader.from_decoded(variables, metadata, model_class)
  decode_seconds = time.time() - t0
  method = metadata.get('method', 'epr')
  ds = data.info(config.data.name)
  config.data.dir = data_dir or ''
  test = data.source(config.data, 'test')
  predict = make_predict(model, ds)
  error = error_pct(predict, variables, test, threads=config.data.threads,
                    workers=config.data.workers)
  if fit and val is None:
    val = data.source(config.data, 'val')
  extra = {} if val is None else {
      'val_error_pct': split_error_pct(predict, variables, val, config.data)}
  if fit:
    extra['train_error_pct'] = split_error_pct(
        predict, variables, data.source(config.data, 'train'), config.data)
  return {**extra,
      'model': config.model.name,
      'dataset': ds.name,
      'method': method,
      'num_examples': len(test),
      'error_pct': error,
      'accuracy_pct': 100.0 - error,
      'num_bytes': len(blob),
      'num_params': reparam.num_params(variables['params']),
      'decode_seconds': decode_seconds,
  }


def main(argv):
  import json
  from absl import flags
  del argv
  record = evaluate_file(flags.FLAGS.model, flags.FLAGS.data_dir, flags.FLAGS.model_class,
                         flags.FLAGS.max_values, fit=flags.FLAGS.fit)
  if flags.FLAGS.json:
    print(json.dumps(record))
  else:
    print(f'{record["model"]} on {record["dataset"]}: test error {record["error_pct"]:.2f}% '
          f'({record["num_examples"]} examples), file {record["num_bytes"]} bytes, '
          f'decoded in {record["decode_seconds"]:.3f} s')
    if 'train_error_pct' in record:
      val = record['val_error_pct']
      print(f'train error {record["train_error_pct"]:.2f}%, val error '
            + ('(no val split)' if val is None else f'{val:.2f}%'))


if __name__ == '__main__':
  from absl import flags
  from erp import cli
  flags.DEFINE_string('model', None, 'An .erp model file written by an erp run.')
  flags.DEFINE_bool('json', False, 'Print one JSON record (and nothing else) on stdout.')
  flags.DEFINE_string('data_dir', None, 'Dataset root; default $ERP_DATA_DIR.')
  flags.DEFINE_string('model_class', None, "The model as 'package.module:Class', for a file "
                      'made with a model defined outside erp.')
  flags.DEFINE_integer('max_values', None, 'Most values a file may make erp allocate; '
                       'default 2**25 (erp.file.DEFAULT_MAX_VALUES). Raise it for larger models.')
  flags.DEFINE_bool('fit', False, 'Also the error on the training split the run trained on '
                    'and on its held-out val split (train_error_pct, val_error_pct).')
  flags.mark_flag_as_required('model')
  cli.run(main)
