"""-Dmodel_type=multilabel_classifier: PAI's multi-label line, independent
scores (a sigmoid for logits, never a softmax), thresholds, on real
multi-label SavedModels compared with direct signature calls."""
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from ev_predict.transforms.format import Formatter, multilabel_json
from ev_predict.transforms.inference import (ModelError, load_thresholds,
                                             looks_like_softmax,
                                             to_independent_scores)
from tests import models
from tests.helpers import run_job, split_output_line

KEYS = ['class_probs', 'classes', 'predictions', 'class_names', 'probs']


@pytest.fixture(scope='module')
def multilabel_models(tmp_path_factory):
  root = tmp_path_factory.mktemp('multilabel')
  return {
      'sigmoid': models.save_multilabel_model(str(root / 'sigmoid')),
      'logits': models.save_multilabel_model(str(root / 'logits'),
                                             logits=True),
  }


def _grey(path, level):
  """A flat grey image: the models' labels follow its brightness."""
  Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(path)
  return str(path)


def _sigmoid(x):
  return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32)


# ------------------------------------------------------------ scores


def test_scores_in_range_are_kept_logits_get_a_sigmoid():
  probs = np.array([[0.0, 0.25, 1.0, 0.999], [0.9, 0.8, 0.7, 0.6]],
                   np.float32)
  kept = to_independent_scores(probs)
  assert kept.tobytes() == probs.tobytes()
  logits = np.array([[-3.0, 0.5, 2.0, 7.5]], np.float32)
  np.testing.assert_array_equal(to_independent_scores(logits),
                                _sigmoid(logits))
  # Never a softmax: the scores of a row do not sum to 1.
  assert to_independent_scores(logits).sum() > 2
  # Rows are judged each on its own.
  mixed = np.concatenate([probs[:1], logits])
  out = to_independent_scores(mixed)
  assert out[0].tobytes() == probs[0].tobytes()
  np.testing.assert_array_equal(out[1], _sigmoid(logits)[0])


def test_a_softmax_head_is_recognised():
  assert looks_like_softmax(np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]))
  assert not looks_like_softmax(np.array([[0.9, 0.8, 0.1]]))
  assert not looks_like_softmax(np.array([[0.4, 0.6]]))   # two classes: either


# ------------------------------------------------------------ the line


def test_pais_multilabel_line():
  probs = np.array([0.0008, 0.7316, 0.0005, 0.2], np.float32)
  body = multilabel_json(probs, models.MULTILABELS, 0.5)
  assert list(body) == KEYS
  assert body['classes'] == [1]
  assert body['predictions'] == [False, True, False, False]
  assert body['class_names'] == ['Life moment']
  assert body['probs'] == [float(p) for p in probs]
  assert body['class_probs'] == dict(zip(models.MULTILABELS, body['probs']))
  # Per-class thresholds; "above" is strict.
  body = multilabel_json(probs, models.MULTILABELS, [0.0008, 0.9, 0.0, 0.1])
  assert body['classes'] == [2, 3]
  line = Formatter(models.MULTILABELS, thresholds=0.5).result(probs)
  assert line == json.dumps(multilabel_json(probs, models.MULTILABELS, 0.5),
                            ensure_ascii=False)
  assert line.startswith('{"class_probs": {"Sketch": 0.0007999999797903001, ')
  # top_k shortens class_probs only.
  short = json.loads(Formatter(models.MULTILABELS, 2, 0.5).result(probs))
  assert list(short['class_probs']) == ['Life moment', 'Portrait']
  assert len(short['probs']) == 4 and short['classes'] == [1]


def test_threshold_files(tmp_path):
  labels = ['a', 'b', 'c']
  f = tmp_path / 't.txt'
  f.write_text('0.1\n0.5\n\n0.9\n')
  assert load_thresholds(str(f), labels, 0.5) == [0.1, 0.5, 0.9]
  f.write_text('a 0.2\nb 0.3\nc 1\n')
  assert load_thresholds(str(f), labels, 0.5) == [0.2, 0.3, 1.0]
  assert load_thresholds(None, labels, 0.7) == 0.7
  for text, needle in [('0.1\n0.2\n', '2 thresholds for 3 classes'),
                       ('a 0.1\nc 0.2\nb 0.3\n', 'names must be'),
                       ('0.1\n2\n0.3\n', 'in [0, 1]'),
                       ('0.1\nhigh\n0.3\n', '`name value` or `value`')]:
    f.write_text(text)
    with pytest.raises(ModelError, match=re.escape(needle)):
      load_thresholds(str(f), labels, 0.5)


# ------------------------------------------------------------ jobs


@pytest.mark.parametrize('kind', ['sigmoid', 'logits'])
def test_multilabel_job_matches_the_signature(tmp_path, multilabel_models,
                                              kind):
  model = multilabel_models[kind]
  levels = {'none': 13, 'one': 77, 'two': 128, 'all': 230}
  paths = {k: _grey(tmp_path / f'{k}.png', v) for k, v in levels.items()}
  results, errors, summary = run_job(
      tmp_path, list(paths.values()) + [str(tmp_path / 'gone.png')], model,
      model_type='multilabel_classifier')
  assert (summary['succeeded'], summary['failed']) == (4, 1)
  assert len(errors) == 1
  got = {}
  for line, (name, path) in zip(results, paths.items()):
    value, body = split_output_line(line)
    assert line.startswith(path.encode() + b',  {"class_probs": {')
    assert value.decode() == path and list(body) == KEYS
    pixels = np.asarray(Image.open(path).convert('RGB').resize(
        (models.SIZE, models.SIZE)))[None]
    direct = models.direct_call(model, pixels)[0]
    expected = _sigmoid(direct) if kind == 'logits' else direct
    # OpenVINO's f32 sums in another order than TensorFlow: 2.1e-6 relative
    # on one CPU here, under 1e-6 on another. A wrong activation or class
    # order is off by orders of magnitude more.
    np.testing.assert_allclose(body['probs'], expected, rtol=1e-5, atol=1e-6)
    assert body['predictions'] == [bool(p > 0.5) for p in body['probs']]
    assert body['classes'] == [i for i, on in enumerate(body['predictions'])
                               if on]
    assert body['class_names'] == [models.MULTILABELS[i]
                                   for i in body['classes']]
    got[name] = body['classes']
  assert got == {'none': [], 'one': [0], 'two': [0, 1], 'all': [0, 1, 2, 3]}


def test_threshold_parameters_in_a_job(tmp_path, multilabel_models):
  model = multilabel_models['sigmoid']
  path = _grey(tmp_path / 'two.png', 128)
  results, _, _ = run_job(tmp_path, [path], model, name='low',
                          model_type='multilabel_classifier', threshold=0.01)
  assert split_output_line(results[0])[1]['classes'] == [0, 1, 2, 3]
  thresholds = tmp_path / 'thresholds.txt'
  thresholds.write_text(''.join(f'{n} {t}\n' for n, t in zip(
      models.MULTILABELS, [0.99, 0.5, 0.0, 0.99])))
  results, _, _ = run_job(tmp_path, [path], model, name='file',
                          model_type='multilabel_classifier',
                          threshold_file=str(thresholds))
  assert split_output_line(results[0])[1]['classes'] == [1, 2]


def test_a_softmax_model_under_multilabel_warns(tmp_path, model_dirs, caplog):
  path = _grey(tmp_path / 'x.png', 100)
  with caplog.at_level(logging.WARNING):
    results, _, _ = run_job(tmp_path, [path], model_dirs['uint8'],
                            model_type='multilabel_classifier')
  assert 'sum to 1 like a softmax' in caplog.text
  body = split_output_line(results[0])[1]
  assert list(body) == KEYS and abs(sum(body['probs']) - 1) < 1e-3


def test_hostile_threshold_and_label_files(tmp_path, multilabel_models):
  """A FIFO (would block), /dev/zero (never ends), a file past the cap, a
  non-UTF-8 one, a bad value: refused at once, naming the line; a label
  with a form feed or U+2028 inside stays one name."""
  fifo = tmp_path / 'fifo'
  os.mkfifo(fifo)
  huge = tmp_path / 'huge.txt'
  with open(huge, 'wb') as f:
    f.truncate(17 << 20)
  (tmp_path / 'gbk.txt').write_bytes(b'Sketch 0.5\n\xb9\xb7 0.5\n')
  (tmp_path / 'bad.txt').write_text('0.5\n0.5\n' + 'x' * 500 + '\n0.5\n')
  (tmp_path / 'range.txt').write_text('0.5\nnan\n0.5\n0.5\n')
  cases = [
      (fifo, f'threshold file {fifo} is not a regular file'),
      ('/dev/zero', 'threshold file /dev/zero is not a regular file'),
      (huge, f'threshold file {huge} is 17825792 bytes; more than the 16 MiB'),
      (tmp_path / 'gbk.txt', 'is not UTF-8 (byte 0xb9 on line 2); save it '
       'as UTF-8'),
      (tmp_path / 'bad.txt', f"{tmp_path / 'bad.txt'} line 3: '" + 'x' * 40 +
       "' is not a number"),
      (tmp_path / 'range.txt', f"{tmp_path / 'range.txt'} line 2: 'nan': a "
       'threshold is in [0, 1]'),
  ]
  for path, message in cases:
    with pytest.raises(ModelError, match=re.escape(message)):
      load_thresholds(str(path), models.MULTILABELS, 0.5)
  names = tmp_path / 'names.txt'
  names.write_text('a\x0cb\nc\u2028d\ne\nf\n')
  from ev_predict.transforms.inference import load_labels  # pylint: disable=import-outside-toplevel
  assert load_labels('/none', str(names), 4) == ['a\x0cb', 'c\u2028d', 'e', 'f']
  # The model's own labels.txt, unreadable: an error, not classes 0..3.
  model = tmp_path / 'model'
  shutil.copytree(multilabel_models['sigmoid'], model)
  for name in ('labels.txt', 'assets/labels.txt'):
    if (model / name).exists():
      (model / name).write_bytes('猫\n狗\n鱼\n鸟\n'.encode('utf-16'))
  with pytest.raises(ModelError, match='is not UTF-8'):
    load_labels(str(model), None, 4)
