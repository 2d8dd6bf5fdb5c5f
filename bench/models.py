"""The models the benchmark builds (MobileNetV2 with random weights, and a
tiny model of the same signature), each in a child process: the parent never
imports TensorFlow."""
import json
import shutil
from pathlib import Path

from bench import harness
from bench.config import IMAGE, log

MODEL_VERSION = 2


def model_dir(ctx, kind: str) -> Path:
  return ctx.work / {'mobilenetv2': 'model-mobilenetv2',
                     'mobilenetv2-pixels': 'model-mobilenetv2-pixels'}.get(
                         kind, 'model-tiny')


def ensure_model(ctx, kind: str) -> Path:
  path = model_dir(ctx, kind)
  stamp = path / 'bench-stamp.json'
  if stamp.exists() and json.loads(stamp.read_text()).get(
      'version') == MODEL_VERSION:
    return path
  log(f'building {kind} SavedModel in {path}')
  res = harness.run_child(ctx, 'build-model', {'kind': kind, 'path': str(path)},
                          f'build-model-{kind}')
  if res['rc'] != 0:
    raise SystemExit(f'building the {kind} model failed; see {res["log"]}')
  return path


def child_build_model(arg: dict) -> dict:
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  path = Path(arg['path'])
  if path.exists():
    shutil.rmtree(path)
  keras.utils.set_random_seed(7)
  inputs = keras.Input((IMAGE, IMAGE, 3), dtype='uint8', name='images')
  if arg['kind'] in ('mobilenetv2', 'mobilenetv2-pixels'):
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(IMAGE, IMAGE, 3), classes=1000,
        classifier_activation=None if arg['kind'] != 'mobilenetv2' else
        'softmax')
    # MobileNet's preprocess_input (x / 127.5 - 1) inside the graph.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    outputs = base(x)
    if arg['kind'] == 'mobilenetv2-pixels':
      # With random weights MobileNetV2 answers one class for every image;
      # a random linear read of the 8x8 mean colours (no compute to speak
      # of) makes the answer depend on the pixels, so that peers' classes
      # can be checked against ours image by image.
      y = keras.layers.AveragePooling2D(pool_size=28)(
          keras.layers.Rescaling(1 / 255.0)(inputs))
      y = keras.layers.Dense(1000, kernel_initializer=keras.initializers
                             .RandomNormal(stddev=3.0))(
                                 keras.layers.Flatten()(y))
      outputs = keras.layers.Softmax()(keras.layers.Add()([outputs, y]))
  else:
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.AveragePooling2D(pool_size=28)(x)     # 8x8x3
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1000, activation='softmax')(x)
  model = keras.Model(inputs, outputs)
  model.export(str(path))
  with open(path / 'labels.txt', 'w', encoding='utf-8') as f:
    f.write(''.join(f'class_{i:04d}\n' for i in range(1000)))
  # Check that the export loads and answers like the Keras model.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  sig = tf.saved_model.load(str(path)).signatures['serving_default']
  batch = np.random.default_rng(0).integers(0, 256, (2, IMAGE, IMAGE, 3),
                                            dtype=np.uint8)
  out = sig(tf.constant(batch))
  (key, value), = out.items()
  probs = value.numpy()
  assert probs.shape == (2, 1000), probs.shape
  np.testing.assert_allclose(probs, model.predict(batch, verbose=0),
                             rtol=1e-3, atol=1e-5)
  info = {'version': MODEL_VERSION, 'kind': arg['kind'],
          'params': int(model.count_params()),
          'input': {k: str(v) for k, v in
                    sig.structured_input_signature[1].items()},
          'output_key': key,
          'saved_model_mb': round(sum(
              f.stat().st_size for f in path.rglob('*') if f.is_file())
                                  / 2**20, 1)}
  (path / 'bench-stamp.json').write_text(json.dumps(info, indent=1))
  return info
