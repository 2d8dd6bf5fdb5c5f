"""Output lines in EasyVision's format: ``<input line>, <JSON>``."""
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
  import orjson
except ImportError:  # float.__repr__ gives the same text, slower
  orjson = None

from ev_predict.transforms.record import INFERENCE, Record, valid_text


# PAI's line: the input line, a comma and two spaces, then the JSON (the
# seed's example, byte for byte). Parse it by splitting at the first ','
# followed by whitespace and '{' (merge.split_output_line does it exactly).
SEPARATOR = b',  '
# -Dmodel_type of PAI's multi-label line (its help page "Multi-label image
# classification").
MULTILABEL = 'multilabel_classifier'


def labels_for(labels: Optional[Sequence[str]], width: int) -> Sequence[str]:
  """The class names for a row of width scores; a ValueError (the record's
  inference error) when the labels are not as many."""
  names = labels if labels is not None else [str(i) for i in range(width)]
  if len(names) != width:
    raise ValueError(f'model returned {width} scores for {len(names)} labels')
  return names


def top_indices(probs: np.ndarray, top_k: Optional[int]) -> np.ndarray:
  """The classes class_probs lists: all in class order, or the top_k highest
  first (ties in class order, so the first is argmax's)."""
  if not top_k:
    return np.arange(len(probs))
  return np.argsort(-probs, kind='stable')[:top_k]


def result_json(probs: np.ndarray, labels: Optional[Sequence[str]],
                top_k: Optional[int] = None) -> dict:
  """The result as a dict (the reference the fast formatter must match)."""
  names = labels_for(labels, len(probs))
  best = int(np.argmax(probs))
  # float() of a float32 keeps its exact value; json writes the shortest
  # repr that round-trips, as PAI does (e.g. 4.028851974258174e-10).
  return {
      'class': best,
      'class_name': names[best],
      'class_probs': {names[i]: float(probs[i])
                      for i in top_indices(probs, top_k).tolist()},
  }


def multilabel_json(probs: np.ndarray, labels: Optional[Sequence[str]],
                    thresholds, top_k: Optional[int] = None) -> dict:
  """PAI's multi-label result, keys in its order: class_probs (name ->
  score), classes (ids above their threshold, in id order), predictions (a
  bool per class), class_names (of classes), probs (a score per class)."""
  names = labels_for(labels, len(probs))
  limits = np.broadcast_to(np.asarray(thresholds, dtype=np.float64),
                           probs.shape)
  above = probs.astype(np.float64) > limits
  classes = np.flatnonzero(above).tolist()
  values = probs.astype(np.float64).tolist()
  return {
      'class_probs': {names[i]: values[i]
                      for i in top_indices(probs, top_k).tolist()},
      'classes': classes,
      'predictions': above.tolist(),
      'class_names': [names[i] for i in classes],
      'probs': values,
  }


# orjson writes the same shortest round-trip digits as repr(float) (both are
# the shortest string that reads back as the same double), laid out
# differently in two ranges only, for values 0 <= v < 1e15 (checked against
# repr on 20 million float32 values; tests/test_format.py: 400k and every
# float32 near each power of ten):
#   1e-5 <= v < 1e-4: orjson 0.0000123, repr 1.23e-05;
#   v < 1e-5:         orjson 2.5e-7,    repr 2.5e-07 (two exponent digits).
# Both are edited in the bytes at once with numpy. A regex took 0.65 ms for
# a 1000-class softmax (Python 3.11's re.sub calls back into Python for each
# of its ~700 matches), the bundle thread's largest cost per image.
_E, _MINUS, _COMMA, _ZERO, _DOT, _ONE, _NINE = b'e-,0.19'
_SMALL_PREFIX = np.frombuffer(b'0.0000', np.uint8)
_EXPONENT_05 = np.frombuffer(b'e-05', np.uint8)


def float_reprs(values: np.ndarray) -> List[str]:
  """[repr(float(v)) for v in values]: for a 1000-class softmax 0.29 ms
  through orjson against 0.61 ms through float.__repr__, which the rest
  still use (python -m bench.format_speed)."""
  values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
  if orjson is None or not len(values) or not (
      (values >= 0).all() and values.max() < 1e15):
    return list(map(float.__repr__, values.tolist()))
  raw = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
  # b'[a,b]' -> b'a,b,' (a comma after every value) and 8 bytes of padding,
  # so that every look ahead below stays inside the array.
  b = np.zeros(len(raw) + 7, np.uint8)
  b[:len(raw) - 1] = np.frombuffer(raw, np.uint8)[1:]
  b[len(raw) - 2] = _COMMA
  n = len(raw) - 1
  commas = np.flatnonzero(b[:n] == _COMMA)
  at, put = [], []
  # Short exponents: e-7, -> e-07, ('0' before the digit).
  short = np.flatnonzero((b[:n] == _E) & (b[1:n + 1] == _MINUS) &
                         (b[3:n + 3] == _COMMA))
  if len(short):
    at.append(short + 2)
    put.append(np.full(len(short), _ZERO, np.uint8))
  # 0.0000DREST, -> D.RESTe-05, (D is 1..9: the value is at least 1e-5).
  starts = np.concatenate(([0], commas[:-1] + 1))
  window = b[starts[:, None] + np.arange(7)]
  small = (window[:, :6] == _SMALL_PREFIX).all(axis=1) & \
      (window[:, 6] >= _ONE) & (window[:, 6] <= _NINE)
  drop = None
  if small.any():
    first, end = starts[small], commas[small]
    rest = end > first + 7
    at += [first[rest] + 7, np.repeat(end, 4)]
    put += [np.full(rest.sum(), _DOT, np.uint8),
            np.tile(_EXPONENT_05, len(end))]
    drop = (first[:, None] + np.arange(6)).reshape(-1)
  b = b[:n]
  if at:
    at, put = np.concatenate(at), np.concatenate(put)
    order = np.argsort(at, kind='stable')
    at, put = at[order], put[order]
    if drop is not None:
      # Where the dropped bytes are once the insertions are in.
      drop = drop + np.searchsorted(at, drop, side='right')
    b = np.insert(b, at, put)
    if drop is not None:
      b = np.delete(b, drop)
  return b[:-1].tobytes().decode().split(',')


class Formatter:
  """Formats records for one label set.

  A 1000-class result through json.dumps takes 0.77 ms of the bundle
  thread, the GIL held throughout. Here the class_probs object is a
  %-template built once (each label JSON-encoded once), filled with the
  scores' reprs from float_reprs: 0.34 ms a line (python -m
  bench.format_speed), byte for byte the same text as
  json.dumps(result_json(...), ensure_ascii=False)."""

  def __init__(self, labels: Optional[Sequence[str]],
               top_k: Optional[int] = None, thresholds=None):
    """thresholds: given (one for all classes, or one per class), the
    multi-label line."""
    self._labels = labels
    self._top_k = top_k
    self._thresholds = thresholds
    self._by_width: Dict[int, Optional[Tuple[List[str], str]]] = {}

  def _keys(self, width: int):
    """(JSON-encoded names, class_probs template), or None where duplicate
    names make a JSON object keep only the last (json.dumps decides)."""
    if width not in self._by_width:
      names = labels_for(self._labels, width)
      encoded = [json.dumps(n, ensure_ascii=False) for n in names]
      template = '{' + ', '.join(
          e.replace('%', '%%') + ': %s' for e in encoded) + '}'
      self._by_width[width] = (
          (encoded, template) if len(set(names)) == len(names) else None)
    return self._by_width[width]

  def result(self, probs: np.ndarray) -> str:
    if self._thresholds is not None:
      # Few classes and no hot path yet: json.dumps writes repr(float), the
      # same digits as the classifier line's.
      return json.dumps(multilabel_json(probs, self._labels, self._thresholds,
                                        self._top_k),
                        ensure_ascii=False, allow_nan=False)
    keys = self._keys(len(probs))
    if keys is None:
      return json.dumps(result_json(probs, self._labels, self._top_k),
                        ensure_ascii=False, allow_nan=False)
    encoded, template = keys
    best = int(np.argmax(probs))
    if self._top_k:
      # A 1000-class line is ~37 KB; the K highest keep a dict, highest first.
      top = top_indices(probs, self._top_k).tolist()
      scores = '{' + ', '.join(
          f'{encoded[i]}: {r}'
          for i, r in zip(top, float_reprs(probs[top]))) + '}'
    else:
      scores = template % tuple(float_reprs(probs))
    return (f'{{"class": {best}, "class_name": {encoded[best]}, '
            f'"class_probs": {scores}}}')

  def __call__(self, record: Record) -> Tuple[str, bytes]:
    """(outcome, output line without newline): outcome is 'ok' for the
    result file, else the error kind for the error file."""
    if record.ok:
      try:
        probs = np.asarray(record.probs, dtype=np.float32).reshape(-1)
        if not np.isfinite(probs).all():
          raise ValueError('model returned NaN or infinite scores')
        return 'ok', record.line + SEPARATOR + self.result(probs).encode('utf-8')
      except ValueError as e:
        record = record.fail(INFERENCE, str(e))
    return record.error, record.line + SEPARATOR + json.dumps(
        {'error': record.error, 'message': valid_text(record.message or '')},
        ensure_ascii=False, allow_nan=False).encode('utf-8')
