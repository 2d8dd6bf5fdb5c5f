"""Inference: a Beam ModelHandler over ``tf.saved_model.load`` and its serving
signature (Beam's own TF handlers load through Keras, which rejects SavedModel
directories under Keras 3).

The signature alone decides what the model is fed, so no configuration is needed
for the common cases: uint8 [N,H,W,3] gets resized RGB pixels, float32
[N,H,W,3] gets pixels scaled as documented, string [N] gets the encoded bytes.
"""
import dataclasses
import hashlib
import logging
import os
import stat
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple)

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from ev_predict.transforms import backends, modelcache, progress
from ev_predict.transforms import record as rec
from ev_predict.transforms.metrics import NAMESPACE, StageMetrics
from ev_predict.transforms.record import Record

_LOG = logging.getLogger(__name__)

PROBABILITY_OUTPUTS = ('probabilities', 'probs', 'class_probs')
UINT8, FLOAT, STRING = 'uint8', 'float', 'string'


class ModelError(ValueError):
  """The model cannot be used as configured; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the serving signature asks for and returns."""
  signature_name: str
  input_name: str
  input_kind: str                     # UINT8, FLOAT or STRING
  height: Optional[int]
  width: Optional[int]
  output_key: str
  num_classes: Optional[int]

  @property
  def encoded_input(self) -> bool:
    return self.input_kind == STRING

  @property
  def image_size(self) -> Tuple[int, int]:
    """(width, height), as Pillow wants it."""
    return (self.width, self.height)


@dataclasses.dataclass(frozen=True)
class PixelScaling:
  """How uint8 pixels become float inputs (float32 signatures only)."""
  mode: str = '0-255'
  mean: Tuple[float, ...] = ()
  std: Tuple[float, ...] = ()

  def apply(self, pixels: np.ndarray) -> np.ndarray:
    x = pixels.astype(np.float32)
    if self.mode == '0-1':
      return x * np.float32(1.0 / 255.0)
    if self.mode == '-1-1':
      return x * np.float32(2.0 / 255.0) - np.float32(1.0)
    if self.mode == 'mean_std':
      return (x - np.asarray(self.mean, np.float32)) / np.asarray(
          self.std, np.float32)
    return x


def _read_bytes(path: str) -> bytes:
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return f.read()


# A label map or threshold file: a name a line, for at most a few hundred
# thousand classes.
_SMALL_FILE = 16 << 20


def _read_small(path: str, what: str) -> str:
  """A small text file of the user's, as text: only a regular file (a FIFO
  would block, /dev/zero never end), at most _SMALL_FILE bytes, UTF-8."""
  if '://' not in path or path.startswith('file://'):
    local = path[len('file://'):] if path.startswith('file://') else path
    try:
      info = os.stat(local)
    except OSError as e:
      raise ModelError(f'cannot read {what} {path}: {type(e).__name__}') \
          from e
    if not stat.S_ISREG(info.st_mode):
      raise ModelError(f'{what} {path} is not a regular file')
    size = info.st_size
  else:
    found = FileSystems.match([path])[0].metadata_list
    if not found:
      raise ModelError(f'cannot read {what} {path}: not found')
    size = found[0].size_in_bytes
  if size > _SMALL_FILE:
    raise ModelError(f'{what} {path} is {size} bytes; more than the '
                     f'{_SMALL_FILE >> 20} MiB a {what} may hold')
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      data = f.read(_SMALL_FILE + 1)
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError(f'cannot read {what} {path}: {type(e).__name__}') from e
  if len(data) > _SMALL_FILE:
    raise ModelError(f'{what} {path} grew past {_SMALL_FILE >> 20} MiB')
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise ModelError(f'{what} {path} is not UTF-8 (byte 0x{data[e.start]:02x}'
                     f' on line {line}); save it as UTF-8') from e


def _lines(text: str) -> List[str]:
  """Lines as a text editor shows them: split at newlines only (a name may
  hold a form feed or U+2028, which str.splitlines would split at)."""
  return [line.rstrip('\r') for line in text.split('\n')]


def _join(base: str, name: str) -> str:
  return FileSystems.join(base.rstrip('/'), name)


def inspect_saved_model(model_path: str, signature_name: str = 'serving_default',
                        image_size: Optional[Tuple[int, int]] = None,
                        output_key: Optional[str] = None) -> ModelSpec:
  """Reads the signature from saved_model.pb without loading any variables."""
  pb_path = _join(model_path, 'saved_model.pb')
  try:
    raw = _read_bytes(pb_path)
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError(
        f'no SavedModel at {model_path} (cannot read saved_model.pb: '
        f'{type(e).__name__})') from e
  signatures = _signatures(raw, pb_path)
  if signature_name not in signatures:
    raise ModelError(
        f'model has no signature {signature_name!r}; it has '
        f'{sorted(signatures) or "none"} (set -Dsignature_name)')
  sig = signatures[signature_name]
  if len(sig['inputs']) != 1:
    raise ModelError(
        f'signature {signature_name!r} takes {len(sig["inputs"])} inputs '
        f'({sorted(sig["inputs"])}); a classifier needs exactly one image '
        'input')
  input_name, info = next(iter(sig['inputs'].items()))
  dims = info['dims']
  if info['dtype'] == 'DT_STRING':
    kind, height, width = STRING, None, None
  elif info['dtype'] in ('DT_UINT8', 'DT_FLOAT'):
    kind = UINT8 if info['dtype'] == 'DT_UINT8' else FLOAT
    if info['unknown_rank'] or len(dims) != 4 or dims[3] != 3:
      raise ModelError(
          f'input {input_name!r} has shape {dims}; expected [N, H, W, 3]')
    height, width = dims[1], dims[2]
    if image_size:
      width, height = image_size
    if height is None or width is None or height <= 0 or width <= 0:
      raise ModelError(
          f'input {input_name!r} has no fixed height/width {dims}; '
          'set -Dimage_size=WIDTHxHEIGHT')
  else:
    raise ModelError(
        f'input {input_name!r} has dtype {info["dtype"]}; supported: uint8, '
        'float32 pixels [N,H,W,3] or string [N] encoded images')

  outputs = sig['outputs']
  if output_key:
    if output_key not in outputs:
      raise ModelError(f'no output {output_key!r}; outputs: {sorted(outputs)}')
    key = output_key
  else:
    named = [k for k in PROBABILITY_OUTPUTS if k in outputs]
    if named:
      key = named[0]
    elif len(outputs) == 1:
      key = next(iter(outputs))
    else:
      raise ModelError(
          f'cannot tell which output holds class scores among '
          f'{sorted(outputs)}; name it probabilities or set -Doutput_key')
  out_dims = outputs[key]
  num_classes = out_dims[-1] if out_dims and out_dims[-1] > 0 else None
  return ModelSpec(signature_name, input_name, kind, height, width, key,
                   num_classes)


def _signatures(raw: bytes, pb_path: str) -> Dict[str, dict]:
  """The serving signatures of a saved_model.pb, as plain data: {name:
  {inputs: {name: {dtype, dims, unknown_rank}}, outputs: {name: dims}}}.
  Parsing needs TensorFlow's protobuf classes, whose import is TensorFlow's
  (seconds); the answer is kept by the bytes' hash, so a warm start reads
  it without TensorFlow."""
  key = modelcache.fact_key(hashlib.sha256(raw).hexdigest(), 1)
  known = modelcache.recall('signatures', key)
  if _signatures_shaped(known):
    return known
  from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel
  saved = saved_model_pb2.SavedModel()
  try:
    saved.ParseFromString(raw)
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError(f'{pb_path} is not a SavedModel protobuf') from e
  graphs = [g for g in saved.meta_graphs if 'serve' in g.meta_info_def.tags] \
      or list(saved.meta_graphs)
  found = {}
  for graph in graphs:
    for name, sig in graph.signature_def.items():
      found[name] = {
          'inputs': {k: {'dtype': _dtype_name(types_pb2, v.dtype),
                         'dims': [d.size for d in v.tensor_shape.dim],
                         'unknown_rank': v.tensor_shape.unknown_rank}
                     for k, v in sig.inputs.items()},
          'outputs': {k: [d.size for d in v.tensor_shape.dim]
                      for k, v in sig.outputs.items()}}
  modelcache.remember('signatures', key, found)
  return found


def _dtype_name(types_pb2, value: int) -> str:
  try:
    return types_pb2.DataType.Name(value)
  except ValueError:          # a dtype newer than this TensorFlow
    return f'DT_{value}'


def _signatures_shaped(known) -> bool:
  """A kept signature list as _signatures writes it (else learnt again)."""
  def dims(d):
    return isinstance(d, list) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in d)
  try:
    return isinstance(known, dict) and all(
        isinstance(sig['inputs'], dict) and isinstance(sig['outputs'], dict)
        and all(isinstance(i['dtype'], str) and dims(i['dims']) and
                isinstance(i['unknown_rank'], bool)
                for i in sig['inputs'].values())
        and all(dims(o) for o in sig['outputs'].values())
        for sig in known.values())
  except (KeyError, TypeError, AttributeError):
    return False


def load_labels(model_path: str, label_map_path: Optional[str],
                num_classes: Optional[int]) -> Optional[List[str]]:
  """Class names: label map, else labels.txt in the model, else '0'..'C-1'.

  Returns None when neither a file exists nor the class count is known yet
  (the worker then numbers classes from the output width)."""
  candidates = [label_map_path] if label_map_path else [
      _join(model_path, 'assets/labels.txt'), _join(model_path, 'labels.txt')]
  for path in candidates:
    # The model's own candidates are skipped only when they are not there:
    # one that is there but unreadable is an error, not numbered classes.
    if not label_map_path and not FileSystems.exists(path):
      continue
    text = _read_small(path, 'label map')
    labels = [line.strip() for line in _lines(text)]
    while labels and not labels[-1]:
      labels.pop()
    if not labels or any(not name for name in labels):
      raise ModelError(f'{path}: empty label names (one name per line)')
    if len(set(labels)) != len(labels):
      seen = set()
      twice = next(n for n in labels if n in seen or seen.add(n))
      raise ModelError(f'{path}: duplicate class name {twice[:80]!r} (names '
                       'are compared without surrounding spaces)')
    if num_classes is not None and len(labels) != num_classes:
      raise ModelError(
          f'{path} has {len(labels)} labels but the model outputs '
          f'{num_classes} classes')
    return labels
  if num_classes is None:
    return None
  return [str(i) for i in range(num_classes)]


def load_thresholds(path: Optional[str], labels: Optional[List[str]],
                    default: float):
  """A multi-label job's thresholds: default for every class, or a file of
  one line per class, `name value` (names as the labels) or only `value`
  (in class order). Returns a float or a list with one per class."""
  if not path:
    return default
  text = _read_small(path, 'threshold file')
  rows, values = [], []
  for number, line in enumerate(_lines(text), 1):
    if not line.strip():
      continue
    row = line.strip().rsplit(None, 1)
    try:
      value = float(row[-1])
    except ValueError:
      raise ModelError(f'{path} line {number}: {row[-1][:40]!r} is not a '
                       'number (a line is `name value` or `value`)') from None
    if not 0 <= value <= 1:   # NaN too
      raise ModelError(f'{path} line {number}: {row[-1][:40]!r}: a '
                       'threshold is in [0, 1]')
    rows.append(row)
    values.append(value)
  if labels is not None and len(values) != len(labels):
    raise ModelError(f'{path} has {len(values)} thresholds for '
                     f'{len(labels)} classes')
  named = [row[0] for row in rows if len(row) == 2]
  if named:
    if len(named) != len(rows) or labels is None or named != list(labels):
      raise ModelError(f'{path}: names must be the class names, in class '
                       'order')
  return values


def to_probabilities(scores: np.ndarray) -> np.ndarray:
  """Rows that are not already probabilities (a negative value, or not
  summing to 1) get a softmax; the others are kept bit for bit."""
  scores = np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)
  sums = scores.sum(axis=1, dtype=np.float64)
  is_prob = (scores.min(axis=1) >= 0) & (np.abs(sums - 1.0) <= 1e-3)
  if is_prob.all():
    return scores
  out = scores.copy()
  logits = scores[~is_prob].astype(np.float64)
  logits -= logits.max(axis=1, keepdims=True)
  exp = np.exp(logits)
  out[~is_prob] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
  return out


def to_independent_scores(scores: np.ndarray) -> np.ndarray:
  """Multi-label rows: scores in [0, 1] are kept bit for bit; a row with any
  value outside (logits) gets a sigmoid per class, never a softmax."""
  scores = np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)
  inside = (scores.min(axis=1) >= 0) & (scores.max(axis=1) <= 1)
  if inside.all():
    return scores
  out = scores.copy()
  logits = scores[~inside].astype(np.float64)
  out[~inside] = (1 / (1 + np.exp(-logits))).astype(np.float32)
  return out


def looks_like_softmax(scores: np.ndarray) -> bool:
  """Every row of more than two classes in [0, 1] and summing to 1: a
  softmax head, which a multi-label job would read as independent scores."""
  scores = np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)
  if scores.shape[1] <= 2 or not len(scores):
    return False
  sums = scores.sum(axis=1, dtype=np.float64)
  return bool(((scores.min(axis=1) >= 0) &
               (np.abs(sums - 1.0) <= 1e-3)).all())


class LoadedModel:
  """The model behind one backend, callable on a numpy batch.

  With backend 'auto' both TensorFlow and OpenVINO are loaded; the first
  batch runs on both and decides (see transforms.backends), then the loser
  is dropped."""

  def __init__(self, model_path: str, spec: ModelSpec, backend: str = 'auto',
               precision: str = 'f32', threads: Optional[int] = None,
               batch_size: Optional[int] = None,
               phase: Callable[[str], None] = lambda _text: None,
               multilabel: bool = False):
    """phase: told what the worker is doing while it starts (the live
    status shows it). multilabel: scores are independent per class (a
    sigmoid for logits), not a distribution (a softmax)."""
    self._spec = spec
    self._normalise = (to_independent_scores if multilabel
                       else to_probabilities)
    self._multilabel = multilabel
    self._warned_softmax = False
    self._precision = precision
    self._candidate = None
    self._reference = None
    self._verdict_key = None
    self._recalled = False       # OpenVINO chosen by a kept verdict
    self._fallback = (model_path, spec, threads)
    requested = backend
    if backend == backends.AUTO and not spec.encoded_input:
      # A verdict this machine reached before for this exact model, these
      # versions and settings: no second backend to load (TensorFlow's
      # import and load are most of a warm start).
      try:
        self._verdict_key = backends.verdict_key(
            model_path, spec, precision, multilabel, threads, batch_size)
      except Exception:  # pylint: disable=broad-except
        self._verdict_key = None  # judged again, as before the cache
      verdict = modelcache.recall('verdicts', self._verdict_key) \
          if self._verdict_key else None
      if isinstance(verdict, dict) and isinstance(verdict.get('passes'), bool):
        backend = backends.OPENVINO if verdict['passes'] else \
            backends.TENSORFLOW
        self._recalled = verdict['passes']
        _LOG.info('backend: %s (this machine\'s verdict for this model: %s)',
                  backend, verdict.get('stats'))
    if backend in (backends.OPENVINO, backends.AUTO) and not \
        spec.encoded_input:
      phase('converting to OpenVINO')
      try:
        self._candidate = backends.OpenVinoBackend(model_path, spec,
                                                   precision, threads,
                                                   batch_size)
      except Exception as e:  # pylint: disable=broad-except
        if requested == backends.OPENVINO:
          raise
        _LOG.warning('OpenVINO cannot run this model (%s: %s); using '
                     'TensorFlow', type(e).__name__, str(e)[:200])
        backend = backends.TENSORFLOW
    if backend != backends.OPENVINO:
      phase('loading model (TensorFlow)')
      self._reference = backends.TensorFlowBackend(model_path, spec, threads)
    self._recalled = self._recalled and self._candidate is not None
    self.backend = None if self._undecided else self._chosen.name

  @property
  def _undecided(self) -> bool:
    return self._candidate is not None and self._reference is not None

  @property
  def _chosen(self):
    return self._candidate or self._reference

  def scores(self, batch: np.ndarray) -> np.ndarray:
    """Raw output rows for a batch of model inputs (already scaled)."""
    if self._recalled:
      return self._first_recalled(batch)
    if not self._undecided:
      return self._chosen.scores(batch)
    reference = self._reference.scores(batch)
    try:
      candidate = self._candidate.scores(batch)
      stats = backends.agreement(self._normalise(reference),
                                 self._normalise(candidate))
    except Exception as e:  # pylint: disable=broad-except
      stats = {'error': f'{type(e).__name__}: {e}'}
    passed = 'error' not in stats and backends.passes(stats, self._precision)
    if self._verdict_key and 'error' not in stats and \
        len(np.unique(batch.reshape(len(batch), -1), axis=0)) >= \
        backends.VERDICT_IMAGES:
      modelcache.remember('verdicts', self._verdict_key,
                          {'passes': passed, 'stats': stats})
    if passed:
      self._reference = None
    else:
      _LOG.warning('OpenVINO disagrees with TensorFlow on the first batch '
                   '(%s); using TensorFlow', stats)
      self._candidate = None
    self.backend = self._chosen.name
    _LOG.info('backend: %s (%s)', self.backend, stats)
    # This batch's answer comes from the chosen backend, like every other.
    return candidate if self._candidate else reference

  def _first_recalled(self, batch: np.ndarray) -> np.ndarray:
    """The first batch of OpenVINO chosen by a kept verdict: should it fail
    (what the verdict was on no longer holds), TensorFlow takes over, as
    it would have on a first batch judged here."""
    self._recalled = False
    try:
      return self._candidate.scores(batch)
    except Exception as e:  # pylint: disable=broad-except
      _LOG.warning('OpenVINO failed on the first batch (%s: %s); using '
                   'TensorFlow', type(e).__name__, str(e)[:200])
      model_path, spec, threads = self._fallback
      self._reference = backends.TensorFlowBackend(model_path, spec, threads)
      self._candidate = None
      self.backend = self._reference.name
      if self._verdict_key:
        modelcache.forget('verdicts', self._verdict_key)
      return self._reference.scores(batch)

  def predict(self, batch: np.ndarray) -> np.ndarray:
    scores = self.scores(batch)
    if self._multilabel and not self._warned_softmax and \
        looks_like_softmax(scores):
      self._warned_softmax = True
      _LOG.warning('ev-predict: warning: the model\'s scores sum to 1 like a '
                   'softmax; -Dmodel_type=multilabel_classifier reads them as '
                   'independent per-class scores')
    return self._normalise(scores)


class BatchByChunk(beam.DoFn):
  """Records -> the batches SavedModelHandler classifies, cut by the list
  alone: the good records of one chunk (transforms/state.py), batch_size at
  a time in input order, the last of a chunk holding the rest. A failed
  record goes on at once, alone (the model never sees it).

  An image's probabilities depend on its row in the batch, not only on the
  batch's shape: the CPU kernels treat the rows of a tile and its remainder
  differently (measured with an 8-row batch: rows 6-7 differ from rows 0-5
  in the last bits). Batches cut as records arrive (Beam's BatchElements)
  would give a line other bits when a failure overtook it, on another worker,
  or in a resumed run that starts mid-list; these give it the same ones.
  Good records arrive in input order (ThreadedMap), and a chunk's records in
  one bundle (transforms/write.py, CommitChunks)."""

  def __init__(self, batch_size: int, counts: Sequence[int]):
    self._batch_size = batch_size
    self._counts = tuple(counts)

  def start_bundle(self):
    self._open: Dict[int, List] = {}   # chunk -> [records seen, good ones]

  def process(self, record: Record):
    seen = self._open.setdefault(record.chunk, [0, []])
    seen[0] += 1
    if record.ok:
      seen[1].append(record)
    else:
      yield [record]
    whole = seen[0] == self._counts[record.chunk]
    if seen[1] and (whole or len(seen[1]) == self._batch_size):
      yield seen[1]
      seen[1] = []
    if whole:
      del self._open[record.chunk]

  def finish_bundle(self):
    # A chunk cut short lost records upstream: CommitChunks fails the bundle;
    # what did arrive is still classified and passed on.
    for _, rows in self._open.values():
      if rows:
        yield WindowedValue(rows, MIN_TIMESTAMP, [GlobalWindow()])
    self._open = {}


class SavedModelHandler(ModelHandler[Record, Record, LoadedModel]):
  """Batches of records with input tensors in (BatchByChunk's: RunInference
  does no batching of its own), records with probabilities out.

  Batches are padded to ``batch_size`` so every call has the same shape:
  oneDNN picks kernels by shape. Which rows a batch holds is BatchByChunk's
  (an image's row changes its last bits), so results are identical however
  lines are spread across workers or runs.
  """

  def __init__(self, model_path: str, spec: ModelSpec,
               scaling: PixelScaling = PixelScaling(), batch_size: int = 32,
               intra_op_threads: Optional[int] = None,
               local_model_path: Any = None, backend: str = 'auto',
               precision: str = 'f32', accelerator: Optional[str] = None,
               progress_dir: Optional[str] = None, multilabel: bool = False):
    super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
    self._multilabel = multilabel
    self._progress_dir = progress_dir
    self._accelerator = accelerator
    self._backend = backend
    self._precision = precision
    self._model_path = model_path
    self._spec = spec
    self._scaling = scaling
    self._batch_size = batch_size
    self._threads = intra_op_threads
    # Callable that returns a local directory for the model (OSS caches it).
    self._local_model_path = local_model_path
    self._metrics = None

  def load_model(self) -> LoadedModel:
    phase = (progress.reporter(self._progress_dir).phase
             if self._progress_dir else lambda _text: None)
    phase('loading model')
    path = self._local_model_path(self._model_path) \
        if self._local_model_path else self._model_path
    return LoadedModel(path, self._spec, self._backend, self._precision,
                       self._threads, self._batch_size, phase,
                       multilabel=self._multilabel)

  def model_input(self, tensors: Sequence[Any]) -> np.ndarray:
    """Stacks record tensors into one padded batch the signature accepts."""
    rows = list(tensors)
    rows.extend([rows[0]] * (self._batch_size - len(rows)))
    if self._spec.encoded_input:
      return np.array(rows, dtype=object)
    batch = np.stack(rows)
    if self._spec.input_kind == FLOAT:
      return self._scaling.apply(batch)
    return batch

  def run_inference(self, batch: Sequence[Record], model: LoadedModel,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[Record]:
    """The guard of this stage: failed records keep their place, untouched
    and never sent to the model (every line reaches the sink through this
    one stage); the others are classified."""
    del inference_args
    batch = list(batch)
    out = list(batch)
    ready = [i for i, r in enumerate(out) if r.ok]
    if ready:
      for i, r in zip(ready, self._classify([out[i] for i in ready], model)):
        out[i] = r
    metrics = self._stage_metrics()
    for before, after in zip(batch, out):
      if before.ok:
        metrics.completed(after)
      else:
        metrics.passed()
    return out

  def _stage_metrics(self) -> StageMetrics:
    # Made on first use, on the bundle thread: a handler has no setup() of
    # its own (Beam's RunInference times the batches itself).
    if self._metrics is None:
      self._metrics = StageMetrics(self.get_metrics_namespace(), 'classify')
    return self._metrics

  def _classify(self, batch: List[Record], model: LoadedModel) -> List[Record]:
    try:
      probs = model.predict(self.model_input([r.tensor for r in batch]))
      return [r.but(tensor=None, probs=p, backend=model.backend)
              for r, p in zip(batch, probs)]
    except Exception as e:  # pylint: disable=broad-except
      if len(batch) == 1:
        return [batch[0].fail(rec.INFERENCE, f'{type(e).__name__}: {e}')]
      # One bad input (e.g. a corrupt image the model decodes itself) must not
      # fail its neighbours: retry one by one to isolate it.
      _LOG.warning('batch of %d failed (%s); retrying one by one',
                   len(batch), type(e).__name__)
      return [out for r in batch for out in self._classify([r], model)]

  def should_skip_batching(self) -> bool:
    return True   # BatchByChunk made the batches

  def get_num_bytes(self, batch: Sequence[Record]) -> int:
    return sum(len(r.tensor) if isinstance(r.tensor, bytes)
               else getattr(r.tensor, 'nbytes', 0) for r in batch
               if r.tensor is not None)

  def get_resource_hints(self) -> dict:
    # Runners that place work by hints (Dataflow, Prism) put inference on a
    # GPU machine; TensorFlow then uses the GPU it finds.
    return {'accelerator': self._accelerator} if self._accelerator else {}

  def get_metrics_namespace(self) -> str:
    return NAMESPACE
