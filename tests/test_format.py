"""The result line: PAI's format, byte for byte what json.dumps writes."""
import json

import numpy as np
import pytest

from transforms.format import Formatter, result_json
from transforms.record import Record

# '%r' and '100%' would break a %-template that did not escape them.
ODD_LABELS = ['coho1', 'ü "quoted"', 'back\\slash', 'tab\there', '\u2028',
              'emoji 🐟', '', 'control \x01', '3', '%r', '100%', '%%s']


def _reference(probs, labels):
  return json.dumps(result_json(probs, labels), ensure_ascii=False,
                    allow_nan=False)


@pytest.mark.parametrize('labels', [None, ODD_LABELS])
def test_fast_formatter_writes_what_json_dumps_writes(labels):
  rng = np.random.default_rng(5)
  width = len(ODD_LABELS)
  fmt = Formatter(labels)
  special = np.array([0.0, -0.0, 1.0, 1e-45, 3.4e38, 4.028852e-10, 0.1,
                      1 / 3, 2.5e-7, 1e-5, 1e16, 0.5], np.float32)
  for probs in [special] + [
      rng.dirichlet(np.ones(width)).astype(np.float32) for _ in range(200)]:
    assert fmt.result(probs) == _reference(probs, labels)


def test_pai_line_golden():
  record = Record(line=b'oss://bucket/img/1.jpg', source='oss://bucket/img/1.jpg',
                  probs=np.array([4.0e-10, 0.48, 5.1e-07, 0.52], np.float32))
  outcome, line = Formatter(['coho1', 'coho2', 'coho3', 'coho4'])(record)
  assert outcome == 'ok'
  assert line == (
      b'oss://bucket/img/1.jpg, {"class": 3, "class_name": "coho4", '
      b'"class_probs": {"coho1": 4.000000053405728e-10, '
      b'"coho2": 0.47999998927116394, "coho3": 5.100000066704524e-07, '
      b'"coho4": 0.5199999809265137}}')


def test_duplicate_labels_and_bad_scores():
  fmt = Formatter(['a', 'b', 'a'])
  probs = np.array([0.2, 0.3, 0.5], np.float32)
  # A JSON object keeps one "a": the same choice json.dumps makes.
  assert fmt.result(probs) == _reference(probs, ['a', 'b', 'a'])
  record = Record(line=b'x.jpg', source='x.jpg')
  kind, line = fmt(record.but(probs=np.array([0.5, np.nan, 0.5], np.float32)))
  assert kind == 'inference' and b'NaN or infinite' in line
  kind, line = Formatter(['a', 'b'])(record.but(probs=probs))
  assert kind == 'inference' and b'3 scores for 2 labels' in line
  kind, line = fmt(record.fail('not_found', 'gone'))
  assert (kind, line) == ('not_found',
                          b'x.jpg, {"error": "not_found", "message": "gone"}')
