"""Inference backends: OpenVINO agrees with TensorFlow or is not used."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import models
from tests.conftest import write_image
from tests.helpers import run_job, split_output_line
from ev_predict.transforms import backends
from ev_predict.transforms.decode import DecodeConfig, decode_image

ROOT = Path(__file__).resolve().parent.parent
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


def test_openvino_streams_split_batches_without_changing_results(model_dirs,
                                                                images):
  from ev_predict.transforms import inference
  model = model_dirs['keras']
  spec = inference.inspect_saved_model(model)
  batch = np.stack([decode_image(Path(p).read_bytes(), SIZE)
                    for p in images[:8]])
  one = backends.OpenVinoBackend(model, spec, threads=1, batch_size=8)
  two = backends.OpenVinoBackend(model, spec, threads=2, batch_size=8)
  assert [len(m._requests) for m in (one, two)] == [1, 2]
  whole = one.scores(batch)
  np.testing.assert_allclose(two.scores(batch), whole, rtol=0, atol=1e-6)
  assert (two.scores(batch).argmax(1) == whole.argmax(1)).all()
  # An odd batch cannot split evenly: it runs whole, with the same answers.
  np.testing.assert_allclose(two.scores(batch[:7]), whole[:7], rtol=0,
                             atol=1e-6)


_PINNED = r"""
import os, sys, threading, time
import numpy as np
from ev_predict.transforms import backends, inference
spec = inference.inspect_saved_model(sys.argv[1])
model = backends.OpenVinoBackend(sys.argv[1], spec, threads=int(sys.argv[2]),
                                 batch_size=8)
batch = np.zeros((8, spec.height, spec.width, 3), np.uint8)
stop = False
def run():
  while not stop:
    model.scores(batch)
worker = threading.Thread(target=run)
worker.start()
narrowest = len(os.sched_getaffinity(0))
for _ in range(100):   # OpenVINO pins a thread only while it infers
  time.sleep(0.01)
  for tid in os.listdir('/proc/self/task'):
    try:
      narrowest = min(narrowest, len(os.sched_getaffinity(int(tid))))
    except OSError:
      pass
stop = True
worker.join()
print(narrowest)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs 2 cores')
def test_a_worker_with_fewer_threads_than_cores_does_not_pin(model_dirs):
  # OpenVINO pins its threads to the first cores whoever else runs there:
  # two single-threaded workers (-Dnum_worker=2 on 2 cores) both landed on
  # core 0 and made half the images per second. A process with a core per
  # thread may pin.
  def narrowest(threads):
    run = subprocess.run([sys.executable, '-c', _PINNED, model_dirs['keras'],
                          str(threads)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ,
                                               OPENVINO_TELEMETRY='0'))
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stdout.split()[-1])
  assert narrowest(1) == len(os.sched_getaffinity(0))


def test_agreement_rule():
  ref = np.array([[0.7, 0.3], [0.4, 0.6]], np.float32)
  assert backends.passes(backends.agreement(ref, ref + 5e-5), 'f32')
  assert not backends.passes(backends.agreement(ref, ref + 2e-4), 'f32')
  assert backends.passes(backends.agreement(ref, ref + 5e-3), 'bf16')
  flipped = ref[:, ::-1]
  assert not backends.passes(backends.agreement(ref, flipped), 'bf16')


# Records every telemetry event, whoever loads openvino_telemetry and when.
_TELEMETRY_PROBE = """
import importlib.abc, importlib.machinery, json, sys
used = []

class Spy(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name != 'openvino_telemetry':
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    load = spec.loader.exec_module
    def exec_module(module):
      load(module)
      for method in ('start_session', 'send_event', 'end_session'):
        setattr(module.Telemetry, method,
                lambda *a, m=method, **k: used.append(m))
    spec.loader.exec_module = exec_module
    return spec

sys.meta_path.insert(0, Spy())
from ev_predict.transforms import backends, inference
spec = inference.inspect_saved_model(sys.argv[1])
name = backends.OpenVinoBackend(sys.argv[1], spec).name
print(json.dumps([name, used]))
"""


def test_openvino_reports_nothing_to_its_telemetry(tmp_path, model_dirs):
  # Unless a user opted out, importing OpenVINO and converting a model each
  # report to Google Analytics, forking the worker per event: clusters are
  # air-gapped. A fresh process, so the import itself is covered.
  env = dict(os.environ, EV_PREDICT_CACHE=str(tmp_path / 'cache'),
             HOME=str(tmp_path), PYTHONPATH=str(ROOT))
  env.pop('CI', None)   # OpenVINO keeps quiet on CI machines only
  out = subprocess.run(
      [sys.executable, '-c', _TELEMETRY_PROBE, model_dirs['keras']],
      env=env, capture_output=True, text=True, timeout=300, check=True)
  assert json.loads(out.stdout.splitlines()[-1]) == ['openvino-f32', []]
  assert list(tmp_path.glob('cache/openvino-*/model.xml'))  # converted here


_WARM_PROBE = """
import json, sys
from ev_predict.pipeline import launcher
summary = launcher.run(sys.argv[1:])
print(json.dumps(['tensorflow' in sys.modules, summary['backends']]))
"""


def test_a_warm_start_remembers_the_verdict_and_skips_tensorflow(
    tmp_path, model_dirs, images):
  """`auto`'s first-batch verdict and the model's signatures are kept per
  machine: the next job of the same model never imports TensorFlow, and
  writes the same bytes. A cached 'disagrees' runs TensorFlow alone; a
  rewritten model is judged again."""
  model = tmp_path / 'model'
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(model_dirs['keras'], model)
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(f'{i}\n' for i in images[:10]))
  env = dict(os.environ, EV_PREDICT_CACHE=str(tmp_path / 'cache'),
             PYTHONPATH=str(ROOT))

  def job(name):
    out = tmp_path / name / 'result.txt'
    run = subprocess.run(
        [sys.executable, '-c', _WARM_PROBE, f'-Dmodel_path={model}',
         f'-Dinput_oss_file={listing}', f'-Doutput_oss_file={out}',
         '-Dbatch_size=8', '-Dreport=false'],
        env=env, capture_output=True, text=True, timeout=300, check=True)
    tf_imported, used = json.loads(run.stdout.splitlines()[-1])
    return tf_imported, used, out.read_bytes()

  cold = job('cold')
  assert cold[:2] == (True, {'openvino-f32': 10})
  verdicts = list(tmp_path.glob('cache/verdicts/*.json'))
  assert len(verdicts) == 1 and json.loads(verdicts[0].read_text())['passes']
  warm = job('warm')
  assert warm == (False, {'openvino-f32': 10}, cold[2])
  # A verdict of 'disagrees' is kept too: TensorFlow alone.
  verdicts[0].write_text(json.dumps({'passes': False, 'stats': {}}))
  assert job('refused')[:2] == (True, {'tensorflow': 10})
  # The same model rewritten is another model: judged again (and passes).
  os.utime(model / 'saved_model.pb', ns=(1, 1))
  again = job('again')
  assert again[:2] == (True, {'openvino-f32': 10}) and again[2] == cold[2]
  assert len(list(tmp_path.glob('cache/verdicts/*.json'))) == 2
  # So is one with new weights and the same graph (saved_model.pb as it
  # was): converted and judged again, never the old weights' IR.
  weights = next((model / 'variables').glob('variables.data-*'))
  os.utime(weights, ns=(2, 2))
  assert job('weights')[0] is True
  assert len(list(tmp_path.glob('cache/verdicts/*.json'))) == 3
  assert len(list(tmp_path.glob('cache/openvino-*/model.xml'))) == 3


def test_a_kept_verdict_needs_eight_images_and_yields_to_a_failure(
    tmp_path, model_dirs, images, monkeypatch):
  """A first batch of one image padded is no verdict to keep; a kept one
  whose OpenVINO then fails on the first batch hands over to TensorFlow
  (the answer a judged first batch would have given) and is dropped."""
  from ev_predict.transforms import inference  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('EV_PREDICT_CACHE', str(tmp_path / 'cache'))
  model = model_dirs['keras']
  spec = inference.inspect_saved_model(model)
  pixels = np.stack([decode_image(open(p, 'rb').read(), SIZE)
                     for p in images[:8]])
  one = inference.LoadedModel(model, spec, 'auto', batch_size=8)
  one.predict(np.stack([pixels[0]] * 8))
  assert not list(tmp_path.glob('cache/verdicts/*.json'))
  eight = inference.LoadedModel(model, spec, 'auto', batch_size=8)
  want = eight.predict(pixels)
  assert eight.backend == 'openvino-f32'
  kept, = tmp_path.glob('cache/verdicts/*.json')
  recalled = inference.LoadedModel(model, spec, 'auto', batch_size=8)
  assert recalled.backend == 'openvino-f32'

  def broken(batch):
    raise RuntimeError('the IR no longer fits')
  monkeypatch.setattr(recalled._candidate, 'scores', broken)  # pylint: disable=protected-access
  got = recalled.predict(pixels)
  assert recalled.backend == 'tensorflow' and not kept.exists()
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_a_kept_signature_of_the_wrong_shape_is_learnt_again(
    tmp_path, model_dirs, monkeypatch):
  import hashlib  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms import inference, modelcache  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('EV_PREDICT_CACHE', str(tmp_path / 'cache'))
  model = model_dirs['uint8']
  want = inference.inspect_saved_model(model)
  raw = (Path(model) / 'saved_model.pb').read_bytes()
  key = modelcache.fact_key(hashlib.sha256(raw).hexdigest(), 1)
  path = tmp_path / 'cache' / 'signatures' / f'{key}.json'
  for bad in ('{"serving_default": {}}', '{"serving_default": {"inputs": [],'
              ' "outputs": {}}}', '[' * 100000, '{"x": {"inputs": {"a": '
              '{"dtype": "DT_UINT8", "dims": null, "unknown_rank": false}}, '
              '"outputs": {}}}'):
    path.write_text(bad)
    assert inference.inspect_saved_model(model) == want
