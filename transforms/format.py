"""Output lines in EasyVision's format: ``<input line>, <JSON>``."""
import json
from typing import Optional, Sequence, Tuple

import numpy as np

from transforms.record import INFERENCE, Record


def labels_for(labels: Optional[Sequence[str]], width: int) -> Sequence[str]:
  return labels if labels is not None else [str(i) for i in range(width)]


def result_json(probs: np.ndarray, labels: Optional[Sequence[str]]) -> dict:
  names = labels_for(labels, len(probs))
  if len(names) != len(probs):
    raise ValueError(
        f'model returned {len(probs)} scores for {len(names)} labels')
  best = int(np.argmax(probs))
  # float() of a float32 keeps its exact value; json writes the shortest
  # repr that round-trips, as PAI does (e.g. 4.028851974258174e-10).
  return {
      'class': best,
      'class_name': names[best],
      'class_probs': {name: float(p) for name, p in zip(names, probs)},
  }


def format_record(record: Record,
                  labels: Optional[Sequence[str]]) -> Tuple[str, bytes]:
  """(outcome, output line without newline): outcome is 'ok' for the result
  file, else the error kind for the error file."""
  if record.ok:
    try:
      probs = np.asarray(record.probs, dtype=np.float32)
      if not np.isfinite(probs).all():
        raise ValueError('model returned NaN or infinite scores')
      return 'ok', _line(record, result_json(probs, labels))
    except ValueError as e:
      record = record.fail(INFERENCE, str(e))
  return record.error, _line(
      record, {'error': record.error, 'message': record.message or ''})


def _line(record: Record, body: dict) -> bytes:
  return record.line + b', ' + json.dumps(
      body, ensure_ascii=False, allow_nan=False).encode('utf-8')
