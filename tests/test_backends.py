"""Inference backends: OpenVINO agrees with TensorFlow or is not used."""
import numpy as np
import pytest

from tests import models
from tests.conftest import write_image
from tests.helpers import run_job, split_output_line
from transforms import backends
from transforms.decode import DecodeConfig, decode_image

SIZE = DecodeConfig(size=(models.SIZE, models.SIZE))


def _probs(results):
  out = {}
  for l in results:
    line, body = split_output_line(l)
    out[line.decode()] = np.array(list(body['class_probs'].values()))
  return out


@pytest.fixture
def images(tmp_path):
  return [write_image(tmp_path / f'{i}.png', 300 + i) for i in range(20)]


def test_openvino_matches_tensorflow_on_keras_export(tmp_path, model_dirs,
                                                     images):
  model = model_dirs['keras']
  ov = run_job(tmp_path, images, model, name='ov', backend='openvino',
               batch_size=8)
  tf = run_job(tmp_path, images, model, name='tf', backend='tensorflow',
               batch_size=8)
  auto = run_job(tmp_path, images, model, name='auto', batch_size=8)
  assert ov[2]['backends'] == {'openvino-f32': 20}
  assert tf[2]['backends'] == {'tensorflow': 20}
  assert auto[2]['backends'] == {'openvino-f32': 20}
  p_ov, p_tf = _probs(ov[0]), _probs(tf[0])
  assert p_ov.keys() == p_tf.keys() and len(p_ov) == 20
  for path, probs in p_tf.items():
    with open(path, 'rb') as f:
      direct = models.direct_call(model, decode_image(f.read(), SIZE)[None])[0]
    np.testing.assert_allclose(probs, direct, atol=1e-6, rtol=0)
    np.testing.assert_allclose(p_ov[path], probs, atol=1e-5, rtol=0)
    assert np.argmax(p_ov[path]) == np.argmax(probs)


def test_auto_falls_back_when_openvino_disagrees(tmp_path, model_dirs, images,
                                                 monkeypatch):
  monkeypatch.setitem(backends.THRESHOLDS, 'f32',
                      {'max_abs_diff': -1.0, 'argmax_agreement': 1.0})
  _, _, summary = run_job(tmp_path, images, model_dirs['keras'],
                          batch_size=8)
  assert summary['backends'] == {'tensorflow': 20}


def test_auto_uses_tensorflow_for_encoded_input(tmp_path, model_dirs, images):
  _, _, summary = run_job(tmp_path, images[:4], model_dirs['string'])
  assert summary['backends'] == {'tensorflow': 4}


def test_agreement_rule():
  ref = np.array([[0.7, 0.3], [0.4, 0.6]], np.float32)
  assert backends.passes(backends.agreement(ref, ref + 5e-5), 'f32')
  assert not backends.passes(backends.agreement(ref, ref + 2e-4), 'f32')
  assert backends.passes(backends.agreement(ref, ref + 5e-3), 'bf16')
  flipped = ref[:, ::-1]
  assert not backends.passes(backends.agreement(ref, flipped), 'bf16')
