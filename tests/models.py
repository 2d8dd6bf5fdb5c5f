"""Small real SavedModels for tests: built with TensorFlow, saved, loaded back.

Each model flattens its (resized) pixels and applies one dense layer, so any
change in decoding, orientation or resizing changes its output."""
import numpy as np
import tensorflow as tf

SIZE = 8          # pixels per side the models take
LABELS = ['cat', 'dog', 'fish', 'bird']


def _weights(num_classes: int, seed: int = 7):
  rng = np.random.default_rng(seed)
  w = rng.normal(0, 0.05, (SIZE * SIZE * 3, num_classes)).astype(np.float32)
  b = rng.normal(0, 0.1, (num_classes,)).astype(np.float32)
  return tf.Variable(w), tf.Variable(b)


class _Dense(tf.Module):

  def __init__(self, num_classes):
    super().__init__()
    self.w, self.b = _weights(num_classes)

  def logits(self, pixels_float):
    flat = tf.reshape(pixels_float, [-1, SIZE * SIZE * 3])
    return tf.matmul(flat, self.w) + self.b


def save_uint8_model(path: str, num_classes: int = 4, labels=None,
                     output_name: str = 'probabilities') -> str:
  """uint8 [N,8,8,3] -> softmax probabilities."""
  module = _Dense(num_classes)

  @tf.function(input_signature=[
      tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name='images')])
  def serve(images):
    x = tf.cast(images, tf.float32) / 255.0
    return {output_name: tf.nn.softmax(module.logits(x) * 8.0)}

  tf.saved_model.save(module, path, signatures={'serving_default': serve})
  if labels:
    with open(f'{path}/labels.txt', 'w', encoding='utf-8') as f:
      f.write('\n'.join(labels) + '\n')
  return path


def save_float_logits_model(path: str, num_classes: int = 4) -> str:
  """float32 [N,8,8,3] (0-1 expected) -> raw logits under one output name."""
  module = _Dense(num_classes)

  @tf.function(input_signature=[
      tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name='x')])
  def serve(x):
    return {'logits': module.logits(x) * 8.0}

  tf.saved_model.save(module, path, signatures={'serving_default': serve})
  return path


def save_string_model(path: str, num_classes: int = 4) -> str:
  """string [N] encoded images -> decoded in-graph -> several outputs."""
  module = _Dense(num_classes)

  def decode_one(data):
    img = tf.io.decode_image(data, channels=3, expand_animations=False)
    img = tf.image.resize(img, [SIZE, SIZE], method='bilinear')
    return tf.cast(img, tf.float32) / 255.0

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def serve(image_bytes):
    x = tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.float32)
    probs = tf.nn.softmax(module.logits(x) * 8.0)
    return {'probabilities': probs, 'classes': tf.argmax(probs, axis=1)}

  tf.saved_model.save(module, path, signatures={'serving_default': serve})
  assets = tf.io.gfile.join(path, 'assets')
  tf.io.gfile.makedirs(assets)
  with open(f'{assets}/labels.txt', 'w', encoding='utf-8') as f:
    f.write('\n'.join(LABELS[:num_classes]) + '\n')
  return path


def direct_call(path: str, batch) -> np.ndarray:
  """The signature called directly, without any of our code."""
  fn = tf.saved_model.load(path).signatures['serving_default']
  name = list(fn.structured_input_signature[1])[0]
  out = fn(**{name: tf.constant(batch)})
  key = 'probabilities' if 'probabilities' in out else list(out)[0]
  return out[key].numpy()


def save_keras_model(path: str, num_classes: int = 4) -> str:
  """A Keras 3 model exported with model.export(): uint8 input, softmax."""
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(3)
  inputs = keras.Input(shape=(SIZE, SIZE, 3), dtype='uint8', name='images')
  x = keras.layers.Rescaling(1 / 255.0)(keras.ops.cast(inputs, 'float32'))
  x = keras.layers.Conv2D(4, 3, activation='relu')(x)
  x = keras.layers.Flatten()(x)
  outputs = keras.layers.Dense(num_classes, activation='softmax')(x)
  keras.Model(inputs, outputs).export(path, verbose=False)
  return path


def identity_red(class_id: int, num_classes: int) -> int:
  """The red value of every pixel of an image that save_identity_model
  classifies as class_id."""
  return class_id * (255 // (num_classes - 1))


def save_identity_model(path: str, num_classes: int = 128) -> str:
  """uint8 [N,8,8,3] -> probabilities whose class is the image's id: an
  image whose red channel is identity_red(k) everywhere is class k.

  The other classes get a little mass from the green channel, so every image
  has its own probabilities. All arithmetic is on integers below 2**24 and
  the row total is 2**23, so the result is exact in float32 whatever the
  backend, the batch or the summation order: a result can be traced to its
  image bit for bit."""
  if not 2 <= num_classes <= 256:
    raise ValueError('num_classes must be 2..256')
  step = float(255 // (num_classes - 1))
  centers = tf.constant(np.arange(num_classes) * step, tf.float32)
  ranks = tf.constant(np.arange(1, num_classes + 1), tf.float32)
  total = float(1 << 23)
  module = tf.Module()

  @tf.function(input_signature=[
      tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name='images')])
  def serve(images):
    x = tf.cast(images, tf.float32)
    red = tf.reduce_sum(x[..., 0], axis=[1, 2]) / float(SIZE * SIZE)
    green = tf.reduce_sum(x[..., 1], axis=[1, 2])
    # 1 for the class whose center is the mean red, 0 for the others.
    hit = tf.maximum(0.0, step - tf.abs(red[:, None] - centers)) / step
    other = (1.0 - hit) * (green[:, None] + ranks)
    rest = tf.reduce_sum(other, axis=1, keepdims=True)
    scores = other + hit * (total - rest)
    return {'probabilities': scores * (1.0 / total)}

  tf.saved_model.save(module, path, signatures={'serving_default': serve})
  return path


MULTILABELS = ['Sketch', 'Life moment', 'Landscape', 'Portrait']
# A class is on when the image's mean brightness is above its cut: a grey of
# 5 % has no label, 30 % one, 50 % two, 90 % all four.
_CUTS = np.array([0.2, 0.4, 0.6, 0.8], np.float32)


def save_multilabel_model(path: str, logits: bool = False) -> str:
  """uint8 [N,8,8,3] -> independent per-class scores (sigmoid), or the raw
  logits with logits=True. A small dense term keeps every pixel in play."""
  module = _Dense(len(MULTILABELS))

  @tf.function(input_signature=[
      tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name='images')])
  def serve(images):
    x = tf.cast(images, tf.float32) / 255.0
    mean = tf.reduce_mean(x, axis=[1, 2, 3])[:, None]
    raw = 12.0 * (mean - _CUTS) + 0.1 * module.logits(x)
    return {'logits': raw} if logits else {'scores': tf.sigmoid(raw)}

  tf.saved_model.save(module, path, signatures={'serving_default': serve})
  with open(f'{path}/labels.txt', 'w', encoding='utf-8') as f:
    f.write('\n'.join(MULTILABELS) + '\n')
  return path
