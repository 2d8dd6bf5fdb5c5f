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

# Agreement required of OpenVINO against TensorFlow on the first batch.
# f32 differs from TensorFlow only by summation order (~1e-6); bf16 keeps 8
# mantissa bits, so it is judged on decisions (docs/performance.md, Precision).
THRESHOLDS = {
    'f32': {'max_abs_diff': 1e-4, 'argmax_agreement': 1.0},
    'bf16': {'max_abs_diff': 1e-2, 'argmax_agreement': 0.995},
}


class TensorFlowBackend:
  name = TENSORFLOW

  def __init__(self, model_path: str, spec, threads: Optional[int] = None):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if threads:
      try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(
            max(1, min(2, threads)))
      except RuntimeError:
        pass  # TF already initialised in this process: keep its settings
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
               threads: Optional[int] = None,
               batch_size: Optional[int] = None):
    ov = import_openvino()
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
    threads = threads or os.cpu_count() or 1
    self._streams = streams_for(threads, batch_size)
    # One single-threaded stream per core, each taking an equal part of the
    # batch: no stream waits at a barrier for a thread that a decode thread
    # has preempted (measured here: docs/performance.md, "Levers").
    config = {'INFERENCE_PRECISION_HINT': precision,
              'INFERENCE_NUM_THREADS': threads,
              'PERFORMANCE_HINT': 'THROUGHPUT' if self._streams > 1 else
                                  'LATENCY',
              'NUM_STREAMS': self._streams,
              # OpenVINO pins its threads to the first cores, whoever else
              # runs there: two single-threaded workers on one machine both
              # landed on core 0, 42 img/s each against 81 unpinned
              # (docs/performance.md, "Levers"). Only a process that has
              # every core may pin.
              'ENABLE_CPU_PINNING': threads >= (os.cpu_count() or 1)}
    self._compiled = core.compile_model(model, 'CPU', config)
    self._output = self._compiled.outputs[
        [i for i, o in enumerate(self._compiled.outputs)
         if o.get_names() & outputs[0].get_names()][0]]
    self._requests = [self._compiled.create_infer_request()
                      for _ in range(self._streams)]
    self.name = f'{OPENVINO}-{precision}'

  def scores(self, batch: np.ndarray) -> np.ndarray:
    parts = streams_for(self._streams, len(batch))
    if parts == 1:
      result = self._requests[0].infer([batch])[self._output]
      return np.asarray(result, dtype=np.float32).reshape(len(batch), -1)
    size = len(batch) // parts
    requests = self._requests[:parts]
    for i, request in enumerate(requests):
      request.start_async([batch[i * size:(i + 1) * size]])
    out = []
    for request in requests:
      request.wait()
      # The request reuses its output buffer: copy.
      out.append(np.array(request.get_tensor(self._output).data,
                          dtype=np.float32).reshape(size, -1))
    return np.concatenate(out)


def default_batch_size(cores: int) -> int:
  """Images per model call when -Dbatch_size is not given: 4 per core, 8 to
  64 (4 per OpenVINO stream; see pipeline.graph.plan for the measurements)."""
  return min(64, max(8, 4 * cores))


def streams_for(threads: int, batch_size: Optional[int]) -> int:
  """Streams for a batch: the most, up to one per thread, that split it into
  equal parts (equal parts keep each image's result independent of where in
  the batch it sits)."""
  if not batch_size:
    return max(1, threads)
  return max(d for d in range(1, min(threads, batch_size) + 1)
             if batch_size % d == 0)


def _model_identity(model_path: str) -> tuple:
  """This model directory as it is now: every file's name, size, times and
  inode, through linked folders. New weights under variables/ with the
  graph's saved_model.pb untouched (a fine-tuned model copied in) are
  another model: the converted IR holds the weights, and the verdict was on
  them. ctime and the inode change with any rewrite, even one that keeps
  the size and the mtime (cp -p, rsync -a, fixed build timestamps)."""
  files, seen = [], set()
  for folder, dirs, names in os.walk(model_path, followlinks=True):
    real = os.path.realpath(folder)
    if real in seen:          # a link loop
      dirs[:] = []
      continue
    seen.add(real)
    for name in names:
      path = os.path.join(folder, name)
      try:
        st = os.stat(path)
        files.append((os.path.relpath(path, model_path), st.st_size,
                      st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
      except OSError:         # a dangling link, a file gone meanwhile
        files.append((os.path.relpath(path, model_path), None))
  return os.path.abspath(model_path), tuple(sorted(files, key=repr))


def _versions() -> tuple:
  """Both backends' versions, without importing either (None: unknown)."""
  from importlib import metadata  # pylint: disable=import-outside-toplevel

  def version(*names):
    for name in names:
      try:
        return metadata.version(name)
      except metadata.PackageNotFoundError:
        continue
    return None
  return (version('openvino', 'openvino-nightly'),
          version('tensorflow', 'tensorflow-cpu', 'tensorflow-intel',
                  'intel-tensorflow', 'tensorflow-aarch64', 'tf-nightly',
                  'tensorflow-macos'))


def _cpu() -> str:
  """This machine's CPU, as the kernels both backends pick depend on it (a
  cache on a home shared by other machines must not carry a verdict
  there)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      text = f.read(1 << 20)
  except OSError:
    return platform_machine()
  fields = {}
  for line in text.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  return repr((fields.get('model name'), fields.get('flags'),
               platform_machine()))


def platform_machine() -> str:
  import platform  # pylint: disable=import-outside-toplevel
  return platform.machine()


def verdict_key(model_path: str, spec, precision: str, multilabel: bool,
                threads: Optional[int], batch_size: Optional[int]
                ) -> Optional[str]:
  """What `auto`'s first-batch verdict holds for: the model as it is (its
  files and its signature as this job reads it), both backends' versions,
  this CPU, the precision and thresholds, how scores are read, and how the
  batch is split into streams. None: not to be kept (a version unknown)."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms import modelcache  # pylint: disable=import-outside-toplevel
  versions = _versions()
  if None in versions:
    return None
  return modelcache.fact_key(
      _model_identity(model_path), versions, _cpu(), precision, multilabel,
      dataclasses.astuple(spec), threads or os.cpu_count(), batch_size,
      THRESHOLDS[precision], 2)


# A verdict is kept only when the batch it was reached on had this many
# different images (a 1-image job's batch is one image padded).
VERDICT_IMAGES = 8


def _converted(ov, model_path: str) -> str:
  """OpenVINO IR for the SavedModel, converted once per machine and version."""
  key = hashlib.sha256(repr((*_model_identity(model_path), ov.__version__)
                            ).encode()).hexdigest()[:24]
  from ev_predict.transforms.modelcache import cache_root  # pylint: disable=import-outside-toplevel
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


def import_openvino():
  """``import openvino``, with its telemetry off.

  Unless a user opted out on that machine, OpenVINO reports to Google
  Analytics when it is imported and on each conversion: per event it forks
  the worker process (a gigabyte, with TensorFlow's threads running) and waits
  up to 3 s for a network that air-gapped clusters do not have. Its modules
  fall back to OpenVINO's own no-op stand-in when openvino-telemetry is not
  installed; here they are made to see it as not installed."""
  # pylint: disable=import-outside-toplevel
  import sys
  if 'openvino' not in sys.modules:
    # None in sys.modules makes that import raise ImportError.
    hidden = sys.modules.setdefault('openvino_telemetry', None) is None
    try:
      import openvino
    finally:
      if hidden and sys.modules.get('openvino_telemetry', 0) is None:
        del sys.modules['openvino_telemetry']
  # Imported earlier by someone else: swap the stand-in in after the fact.
  from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils
  from openvino.tools.ovc import utils as ovc_utils
  for module in (convert_impl, telemetry_utils, ovc_utils):
    module.tm = telemetry_stub
  import openvino
  return openvino


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
