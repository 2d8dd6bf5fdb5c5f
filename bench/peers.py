"""What users would otherwise run for offline classification, on the same
model, corpus and backend (bench.wave2 times them): Spark's
``pyspark.ml.functions.predict_batch_udf`` in local mode, and Ray Data
(``map_batches`` decode tasks feeding one model actor). Both decode with the
minimal reference decode (minimal_decode, the one the decode ceiling
measures) and write each image's class, so that their answers can be
checked against ev-predict's image by image.

They run in build/peers-venv (Ray and pandas, which the project venv does
not hold; it reads the project venv's packages through a .pth file), as
children of bench.child: ``peers-venv/bin/python -m bench.child spark ...``.
"""
import json
import os
import sys
import time
from pathlib import Path

from bench.config import CORES, IMAGE, ROOT

SPARK_HOME = ROOT / 'build' / 'spark' / 'spark-3.5.9'
PYSPARK = ROOT / 'build' / 'peers' / 'pyspark-3.5.9'
BATCH = 8


def minimal_decode(path: str):
  """The least a classifier's input needs: open, JPEG DCT scaling (draft),
  RGB, one bilinear resize (the pixels ev-predict's decode gives for an
  upright JPEG)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(path) as img:
    img.draft('RGB', (IMAGE, IMAGE))
    return np.asarray(img.convert('RGB').resize(
        (IMAGE, IMAGE), Image.Resampling.BILINEAR))


def backend(model: str, kind: str, threads: int, batch: int = BATCH):
  """batch -> probabilities: the SavedModel through TensorFlow's serving
  signature, or OpenVINO f32 configured as ev-predict configures it (its own
  backend class, so the comparison is of pipelines, not of backends)."""
  if kind == 'openvino':
    from ev_predict.transforms import backends, inference  # pylint: disable=import-outside-toplevel
    spec = inference.inspect_saved_model(model)
    return backends.OpenVinoBackend(model, spec, 'f32', threads, batch).scores
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  sig = tf.saved_model.load(model).signatures['serving_default']
  (name, _), = sig.structured_input_signature[1].items()

  def call(x):
    return next(iter(sig(**{name: tf.constant(x)}).values())).numpy()
  return call


def _write_classes(output: str, classes: dict) -> dict:
  Path(output).write_text(json.dumps(classes))
  return {'images': len(classes)}


# --- Spark -----------------------------------------------------------------

def child_spark(arg: dict) -> dict:
  """predict_batch_udf over a DataFrame of paths: local[cores], the model
  made once per Python worker (Spark's own caching), decode in the UDF."""
  os.environ['SPARK_HOME'] = str(SPARK_HOME)
  os.environ['PYSPARK_PYTHON'] = sys.executable
  os.environ['PYTHONPATH'] = os.pathsep.join(
      [str(PYSPARK), str(ROOT), os.environ.get('PYTHONPATH', '')])
  sys.path[:0] = [str(PYSPARK)]
  from pyspark.ml.functions import predict_batch_udf  # pylint: disable=import-outside-toplevel
  from pyspark.sql import SparkSession  # pylint: disable=import-outside-toplevel
  from pyspark.sql.types import ArrayType, FloatType  # pylint: disable=import-outside-toplevel
  started = time.time()
  spark = (SparkSession.builder.master(f'local[{CORES}]')
           .config('spark.driver.host', '127.0.0.1')
           .config('spark.driver.bindAddress', '127.0.0.1')
           .config('spark.ui.enabled', 'false')
           .config('spark.sql.shuffle.partitions', str(CORES))
           .config('spark.local.dir', arg['scratch'])
           .getOrCreate())
  model, kind = arg['model'], arg['backend']
  threads = 1   # one task per core, one core each

  def make_predict_fn():
    import numpy as np  # pylint: disable=import-outside-toplevel
    call = backend(model, kind, threads)

    def predict(paths):
      return call(np.stack([minimal_decode(p) for p in paths]))
    return predict

  classify = predict_batch_udf(make_predict_fn,
                               return_type=ArrayType(FloatType()),
                               batch_size=BATCH)
  paths = [l for l in Path(arg['filelist']).read_text().split('\n') if l]
  df = spark.createDataFrame([(p,) for p in paths], ['path']).repartition(
      CORES)
  out = arg['output'] + '.parquet'
  df.withColumn('probs', classify('path')).write.mode('overwrite').parquet(out)
  session_s = time.time() - started
  spark.stop()
  import numpy as np  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  table = pq.read_table(out).to_pydict()
  classes = {p: int(np.argmax(v)) for p, v in zip(table['path'],
                                                   table['probs'])}
  return dict(_write_classes(arg['output'], classes), session_s=session_s)


# --- Ray Data --------------------------------------------------------------

class _RayModel:
  """The model actor: loaded once, every decoded batch through it."""

  def __init__(self, model: str, kind: str, threads: int):
    self._call = backend(model, kind, threads)

  def __call__(self, batch):
    import numpy as np  # pylint: disable=import-outside-toplevel
    probs = self._call(np.stack(list(batch['image'])))
    return {'path': batch['path'], 'class': probs.argmax(axis=1)}


def _ray_decode(batch):
  import numpy as np  # pylint: disable=import-outside-toplevel
  return {'path': batch['path'],
          'image': np.stack([minimal_decode(p) for p in batch['path']])}


def child_ray(arg: dict) -> dict:
  """ray.data: decode tasks (map_batches, batch 8) feeding one model actor
  (map_batches with a class, concurrency 1, the model on every core as
  ev-predict runs it)."""
  os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
  import ray  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  # Ray's sockets live in its temp dir, whose path must fit AF_UNIX's 107
  # bytes: not under the checkout.
  ray.init(num_cpus=CORES, include_dashboard=False, log_to_driver=False,
           _temp_dir=tempfile.mkdtemp(prefix='ray-', dir='/tmp'),
           configure_logging=False)
  paths = [l for l in Path(arg['filelist']).read_text().split('\n') if l]
  ds = ray.data.from_items([{'path': p} for p in paths])
  # Decode tasks of half a core each: they run beside the actor (one core)
  # instead of being fused into it, which Ray does for equal requests.
  ds = ds.map_batches(_ray_decode, batch_size=BATCH, num_cpus=0.5)
  ds = ds.map_batches(_RayModel, fn_constructor_args=(
      arg['model'], arg['backend'], CORES), batch_size=BATCH,
                      concurrency=1, num_cpus=1)
  classes = {}
  for batch in ds.iter_batches(batch_size=None):
    for p, c in zip(batch['path'], batch['class']):
      classes[str(p)] = int(c)
  ray.shutdown()
  return _write_classes(arg['output'], classes)
