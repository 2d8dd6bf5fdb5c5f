"""The result line: PAI's format, byte for byte what json.dumps writes."""
import json

import numpy as np
import pytest

from ev_predict.transforms import format as fmt_module
from ev_predict.transforms.format import Formatter, float_reprs, result_json
from ev_predict.transforms.record import Record

# '%r' and '100%' would break a %-template that did not escape them.
ODD_LABELS = ['coho1', 'ü "quoted"', 'back\\slash', 'tab\there', '\u2028',
              'emoji 🐟', '', 'control \x01', '3', '%r', '100%', '%%s']


def _reference(probs, labels):
  return json.dumps(result_json(probs, labels), ensure_ascii=False,
                    allow_nan=False)


def _edge_float32s():
  """Every float32 within 64 ulps of each power of ten from 1e-45 to 1 (the
  layouts switch at 1e-4 and 1e-5), and signed zeros."""
  out = [np.array([0.0, -0.0, 1.0, 0.5, 1.001], np.float32)]
  for k in range(-45, 1):
    bits = np.float32(10.0 ** k).view(np.uint32).astype(np.int64)
    near = np.arange(bits - 64, bits + 65)
    out.append(near[near >= 0].astype(np.uint32).view(np.float32))
  return np.concatenate(out)


@pytest.mark.parametrize('seed', [1, 2])
def test_float_reprs_are_pythons_reprs(seed):
  # 200k random float32 bit patterns in [0, 1.001] (every exponent equally),
  # plus the edges where the layouts switch.
  rng = np.random.default_rng(seed)
  values = np.concatenate([
      rng.integers(0, 0x3F80_2000, 200_000, dtype=np.uint32).view(np.float32),
      _edge_float32s()])
  assert float_reprs(values) == list(map(repr, values.astype(float).tolist()))
  # Doubles that no float32 gives: one-digit values in [1e-5, 1e-4).
  doubles = np.array([1e-05, 5e-05, 9e-05, 1.5e-05, 2e-07, 1e-4, 0.1])
  assert float_reprs(doubles) == list(map(repr, doubles.tolist()))
  # Outside what the fast path is for, repr itself answers.
  odd = np.array([-0.5, 1e16, 3.4e38, 2.5e-7], np.float32)
  assert float_reprs(odd) == list(map(repr, odd.astype(float).tolist()))


@pytest.mark.parametrize('with_orjson', [True, False])
@pytest.mark.parametrize('labels', [None, ODD_LABELS])
def test_fast_formatter_writes_what_json_dumps_writes(labels, with_orjson,
                                                      monkeypatch):
  if not with_orjson:
    monkeypatch.setattr(fmt_module, 'orjson', None)
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
      b'oss://bucket/img/1.jpg,  {"class": 3, "class_name": "coho4", '
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
                          b'x.jpg,  {"error": "not_found", "message": "gone"}')


@pytest.mark.parametrize('labels', [None, ODD_LABELS])
@pytest.mark.parametrize('top_k', [1, 3, len(ODD_LABELS), 40])
def test_top_k_keeps_the_highest_first(labels, top_k):
  rng = np.random.default_rng(top_k)
  fmt = Formatter(labels, top_k)
  tied = np.array([0.1] * 4 + [0.3, 0.3] + [0.0] * 6, np.float32)
  for probs in [tied] + [rng.dirichlet(np.ones(len(ODD_LABELS))).astype(
      np.float32) for _ in range(50)]:
    text = fmt.result(probs)
    assert text == _reference_top(probs, labels, top_k)
    got = json.loads(text)
    full = json.loads(Formatter(labels).result(probs))
    assert (got['class'], got['class_name']) == (full['class'],
                                                 full['class_name'])
    names = list(got['class_probs'])
    assert len(names) == min(top_k, len(probs))
    assert names[0] == full['class_name']
    scores = list(got['class_probs'].values())
    assert scores == sorted(scores, reverse=True)
    assert all(full['class_probs'][n] == got['class_probs'][n] for n in names)
    # Nothing left out scores above what was kept.
    assert max([v for n, v in full['class_probs'].items() if n not in names],
               default=-1) <= scores[-1]
  # Ties keep class order: the two 0.3 first (4 before 5), then 0.1s from 0.
  assert list(json.loads(Formatter(None, 3).result(tied))['class_probs']) == [
      '4', '5', '0']


def _reference_top(probs, labels, top_k):
  return json.dumps(result_json(probs, labels, top_k), ensure_ascii=False,
                    allow_nan=False)


def test_line_sizes_the_docs_quote():
  """parameters.py's top_k row: ~0.4/3.7/37 KB a line at 10/100/1000
  classes, ~0.3 KB with top_k=5 (a 40-byte path, 10-character names)."""
  rng = np.random.default_rng(0)
  line = b'oss://bucket/images/2026/12/000123.jpg'
  sizes = {}
  for width in (10, 100, 1000):
    labels = [f'class_{i:04d}' for i in range(width)]
    probs = rng.dirichlet(np.ones(width)).astype(np.float32)
    for k in (None, 5):
      sizes[width, k] = len(Formatter(labels, k)(
          Record(line=line, probs=probs))[1])
  assert 350 < sizes[10, None] < 550 and 3300 < sizes[100, None] < 4100
  assert 33000 < sizes[1000, None] < 41000
  assert all(200 < sizes[w, 5] < 350 for w in (10, 100, 1000))
