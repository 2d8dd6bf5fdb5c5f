"""Builds the demo model: a small, real digit classifier as a TF SavedModel.

Trains on scikit-learn's bundled ``load_digits`` (1,797 8x8 greyscale digits;
shipped inside the scikit-learn package, so nothing is downloaded). Each digit
is upscaled to 32x32 RGB uint8, the model casts and rescales its pixels itself,
and ``model.export`` writes a SavedModel whose ``serving_default`` signature
takes uint8 [None, 32, 32, 3] and returns [None, 10] softmax probabilities,
exactly what ``ev-predict`` feeds a uint8 classifier.

    python examples/build_demo_model.py --out build/demo_model [--force]

The held-out quarter of the data (``load_split``) never reaches training;
``make_sample_images.py`` draws the demo's images from it.
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image

# Before TensorFlow is imported: no C++ start-up chatter, no CUDA probe (CPU
# keeps the build reproducible). A user's own settings win.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

SIZE = 32                 # pixels per side the model takes
LABELS = ['zero', 'one', 'two', 'three', 'four',
          'five', 'six', 'seven', 'eight', 'nine']
SEED = 0
TEST_SIZE = 0.25
EPOCHS = 12
BATCH_SIZE = 32


def digit_to_image(digit: np.ndarray, size: int = SIZE) -> Image.Image:
  """One 8x8 digit (values 0..16) -> size x size RGB image (bilinear)."""
  grey = np.rint(np.asarray(digit, np.float64).reshape(8, 8) * (255.0 / 16.0))
  img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), 'L')
  return img.resize((size, size), Image.Resampling.BILINEAR).convert('RGB')


def load_split():
  """(train_digits, test_digits, train_labels, test_labels); fixed split.

  Digits are the raw 8x8 arrays (0..16); labels are ints 0..9."""
  # pylint: disable=import-outside-toplevel
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  data = load_digits()
  return train_test_split(data.images, data.target, test_size=TEST_SIZE,
                          random_state=SEED, stratify=None)


def to_pixels(digits: np.ndarray) -> np.ndarray:
  """[N,8,8] digits -> uint8 [N,32,32,3]."""
  return np.stack([np.asarray(digit_to_image(d), np.uint8) for d in digits])


def build_model():
  import keras  # pylint: disable=import-outside-toplevel
  from keras import layers  # pylint: disable=import-outside-toplevel
  inputs = keras.Input(shape=(SIZE, SIZE, 3), dtype='uint8', name='images')
  x = keras.ops.cast(inputs, 'float32')
  x = layers.Rescaling(1.0 / 255.0)(x)
  x = layers.Conv2D(16, 3, padding='same', activation='relu')(x)
  x = layers.MaxPooling2D()(x)                                   # 16x16
  x = layers.Conv2D(32, 3, padding='same', activation='relu')(x)
  x = layers.MaxPooling2D()(x)                                   # 8x8
  x = layers.Conv2D(32, 3, padding='same', activation='relu')(x)
  x = layers.MaxPooling2D()(x)                                   # 4x4
  x = layers.Flatten()(x)
  x = layers.Dropout(0.2)(x)
  outputs = layers.Dense(len(LABELS), activation='softmax',
                         name='probabilities')(x)
  model = keras.Model(inputs, outputs, name='demo_digits')
  model.compile(optimizer=keras.optimizers.Adam(2e-3),
                loss='sparse_categorical_crossentropy', metrics=['accuracy'])
  return model


def verify_export(out_dir: str, x_test: np.ndarray, y_test: np.ndarray) -> float:
  """Loads the export as ev-predict does and returns its test accuracy."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  serve = tf.saved_model.load(out_dir).signatures['serving_default']
  (name, spec), = serve.structured_input_signature[1].items()
  if spec.dtype != tf.uint8 or spec.shape.as_list() != [None, SIZE, SIZE, 3]:
    raise SystemExit(f'export check failed: input {name} is {spec}')
  outputs = serve(**{name: tf.constant(x_test)})
  if len(outputs) != 1:
    raise SystemExit(f'export check failed: outputs {sorted(outputs)}')
  (out_name, probs), = outputs.items()
  out_shape = serve.structured_outputs[out_name].shape.as_list()
  if out_shape != [None, len(LABELS)]:
    raise SystemExit(f'export check failed: output {out_name} {out_shape}')
  probs = probs.numpy()
  if probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
    raise SystemExit('export check failed: outputs are not probabilities')
  print(f'export: input {name!r} uint8 [None,{SIZE},{SIZE},3] -> output '
        f'{out_name!r} float32 [None,{len(LABELS)}] probabilities')
  return float(np.mean(probs.argmax(axis=1) == y_test))


def build(out_dir: str) -> float:
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(SEED)
  tf.config.experimental.enable_op_determinism()

  train_d, test_d, y_train, y_test = load_split()
  x_train, x_test = to_pixels(train_d), to_pixels(test_d)
  print(f'data: {len(x_train)} train / {len(x_test)} held-out test digits, '
        f'{SIZE}x{SIZE} RGB uint8')

  model = build_model()
  start = time.time()
  model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE,
            shuffle=True, verbose=2)
  train_s = time.time() - start
  _, keras_acc = model.evaluate(x_test, y_test, verbose=0)
  print(f'trained in {train_s:.1f} s; keras test accuracy {keras_acc:.4f}')

  # Export next to the target and move it in place: a failed build never
  # leaves a half-written model that a later run would skip rebuilding.
  tmp_dir = out_dir.rstrip('/') + '.tmp'
  shutil.rmtree(tmp_dir, ignore_errors=True)
  model.export(tmp_dir, verbose=False)
  with open(os.path.join(tmp_dir, 'labels.txt'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(LABELS) + '\n')
  accuracy = verify_export(tmp_dir, x_test, y_test)
  shutil.rmtree(out_dir, ignore_errors=True)
  os.replace(tmp_dir, out_dir)
  print(f'SavedModel test accuracy {accuracy:.4f} '
        f'({int(round(accuracy * len(y_test)))}/{len(y_test)})')
  print(f'wrote {out_dir}')
  return accuracy


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--out', default='build/demo_model',
                      help='SavedModel directory to write')
  parser.add_argument('--force', action='store_true',
                      help='rebuild even if the model already exists')
  args = parser.parse_args(argv)
  out_dir = args.out
  if (not args.force and
      os.path.isfile(os.path.join(out_dir, 'saved_model.pb')) and
      os.path.isfile(os.path.join(out_dir, 'labels.txt'))):
    print(f'{out_dir} already has a model; not rebuilding (use --force)')
    return 0
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  accuracy = build(out_dir)
  if accuracy < 0.9:
    print(f'error: test accuracy {accuracy:.4f} is below 0.9', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
