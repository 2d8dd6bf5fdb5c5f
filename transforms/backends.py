"""Inference backends for one SavedModel: TensorFlow itself, or OpenVINO reading
the same SavedModel (measured here about 2x TensorFlow's throughput on CPU).

``auto`` converts with OpenVINO and keeps it only if, on the first real batch,
its probabilities agree with TensorFlow's (thresholds below); otherwise, or if
conversion fails (string inputs, unsupported ops), TensorFlow runs. The model
format stays the SavedModel; converted models are cached per worker machine.
"""
import hashlib
import logging
import os
from typing import Optional

import numpy as np

_LOG = logging.getLogger(__name__)

TENSORFLOW, OPENVINO, AUTO = 'tensorflow', 'openvino', 'auto'
BACKENDS = (AUTO, TENSORFLOW, OPENVINO)
PRECISIONS = ('f32', 'bf16')

# Agreement required of OpenVINO against TensorFlow on the first batch.
# f32 differs from TensorFlow only by summation order (~1e-6); bf16 keeps 8
# mantissa bits, so it is judged on decisions, as the README states.
THRESHOLDS = {
    'f32': {'max_abs_diff': 1e-4, 'argmax_agreement': 1.0},
    'bf16': {'max_abs_diff': 1e-2, 'argmax_agreement': 0.995},
}


class TensorFlowBackend:
  name = TENSORFLOW

  def __init__(self, model_path: str, spec):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self._tf = tf
    self._spec = spec
    self._module = tf.saved_model.load(model_path)
    self._fn = self._module.signatures[spec.signature_name]

  def scores(self, batch: np.ndarray) -> np.ndarray:
    dtype = self._tf.string if self._spec.encoded_input else None
    tensor = self._tf.constant(batch, dtype=dtype)
    out = self._fn(**{self._spec.input_name: tensor})[self._spec.output_key]
    return np.asarray(out.numpy(), dtype=np.float32).reshape(len(batch), -1)


class OpenVinoBackend:
  name = OPENVINO

  def __init__(self, model_path: str, spec, precision: str = 'f32',
               threads: Optional[int] = None):
    import openvino as ov  # pylint: disable=import-outside-toplevel
    if spec.encoded_input:
      raise ValueError('OpenVINO cannot take encoded image bytes')
    if spec.signature_name != 'serving_default':
      raise ValueError('OpenVINO converts the serving_default signature only')
    core = ov.Core()
    model = core.read_model(_converted(ov, model_path))
    outputs = [o for o in model.outputs if spec.output_key in o.get_names()]
    if not outputs and len(model.outputs) == 1:
      outputs = list(model.outputs)
    if len(outputs) != 1:
      raise ValueError(f'no OpenVINO output named {spec.output_key!r}')
    config = {'INFERENCE_PRECISION_HINT': precision,
              'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1}
    if threads:
      config['INFERENCE_NUM_THREADS'] = threads
    self._compiled = core.compile_model(model, 'CPU', config)
    self._output = self._compiled.outputs[
        [i for i, o in enumerate(self._compiled.outputs)
         if o.get_names() & outputs[0].get_names()][0]]
    self._request = self._compiled.create_infer_request()
    self.name = f'{OPENVINO}-{precision}'

  def scores(self, batch: np.ndarray) -> np.ndarray:
    result = self._request.infer([batch])[self._output]
    return np.asarray(result, dtype=np.float32).reshape(len(batch), -1)


def _converted(ov, model_path: str) -> str:
  """OpenVINO IR for the SavedModel, converted once per machine and version."""
  pb = os.path.join(model_path, 'saved_model.pb')
  stat = os.stat(pb)
  key = hashlib.sha256(repr((os.path.abspath(model_path), stat.st_size,
                             stat.st_mtime_ns, ov.__version__)).encode()
                       ).hexdigest()[:24]
  from transforms.modelcache import cache_root  # pylint: disable=import-outside-toplevel
  xml = os.path.join(cache_root(), f'openvino-{key}', 'model.xml')
  if not os.path.exists(xml):
    tmp_dir = os.path.join(cache_root(), f'openvino-{key}.tmp-{os.getpid()}')
    ov.save_model(ov.convert_model(model_path),
                  os.path.join(tmp_dir, 'model.xml'), compress_to_fp16=False)
    try:
      os.rename(tmp_dir, os.path.dirname(xml))
    except OSError:
      pass   # another process finished first: use theirs
  return xml


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
  return {
      'max_abs_diff': float(np.max(np.abs(reference - candidate))),
      'argmax_agreement': float(np.mean(
          reference.argmax(axis=1) == candidate.argmax(axis=1))),
  }


def passes(stats: dict, precision: str) -> bool:
  limits = THRESHOLDS[precision]
  return (stats['max_abs_diff'] <= limits['max_abs_diff'] and
          stats['argmax_agreement'] >= limits['argmax_agreement'])
