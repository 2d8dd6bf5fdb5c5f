"""oss:// everywhere, against the local OSS server over real HTTP with the
real oss2 client and verified signatures."""
import collections
import io
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pytest
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from tests import models
from tests.conftest import OSS_ID, OSS_SECRET, write_image
from tests.helpers import run_job, split_output_line
from ev_predict.transforms.oss import client as oss_client
from ev_predict.transforms.oss import io as oss_io

EV_PREDICT = os.path.join(os.path.dirname(sys.executable), 'ev-predict')


def upload_tree(server, bucket, prefix, local_dir):
  for root, _, files in os.walk(local_dir):
    for name in files:
      full = os.path.join(root, name)
      rel = os.path.relpath(full, local_dir).replace(os.sep, '/')
      with open(full, 'rb') as f:
        server.put(bucket, f'{prefix}/{rel}', f.read())


def test_filesystem_operations(oss_env, monkeypatch):
  server = oss_env
  monkeypatch.setattr(oss_io, 'PART_SIZE', 128 << 10)
  big = os.urandom(300 << 10)   # three parts when uploaded
  with FileSystems.create('oss://data/fs/big.bin') as f:
    for i in range(0, len(big), 50_000):
      f.write(big[i:i + 50_000])
  assert server.get('data', 'fs/big.bin') == big
  assert server.requests.count(op='UploadPart') == 3
  with FileSystems.create('oss://data/fs/a b,c ü+%.txt') as f:
    f.write(b'hello')
  assert server.requests.count(op='PutObject') == 1
  with FileSystems.open('oss://data/fs/big.bin') as f:
    f.seek(1000)
    assert f.read(10) == big[1000:1010]
    f.seek(-5, io.SEEK_END)
    assert f.read() == big[-5:]
  assert FileSystems.open('oss://data/fs/a b,c ü+%.txt').read() == b'hello'
  match = FileSystems.match(['oss://data/fs/*'])[0].metadata_list
  assert sorted(m.path for m in match) == ['oss://data/fs/a b,c ü+%.txt',
                                           'oss://data/fs/big.bin']
  assert FileSystems.exists('oss://data/fs/big.bin')
  assert not FileSystems.exists('oss://data/fs/nope')
  assert FileSystems.checksum('oss://data/fs/big.bin') == \
      server.object_info('data', 'fs/big.bin')['etag'].strip('"')
  FileSystems.copy(['oss://data/fs/big.bin'], ['oss://out/fs/copy.bin'])
  FileSystems.rename(['oss://out/fs/copy.bin'], ['oss://out/fs/moved.bin'])
  assert server.get('out', 'fs/moved.bin') == big
  assert server.get('out', 'fs/copy.bin') is None
  fs = FileSystems.get_filesystem('oss://out/x')
  assert fs.concatenate(['oss://data/fs/big.bin', 'oss://out/fs/moved.bin'],
                        'oss://out/fs/joined.bin')
  assert server.get('out', 'fs/joined.bin') == big + big
  # 3 even parts per source (100 KiB each, none below OSS's minimum).
  assert server.requests.count(op='UploadPartCopy') == 6
  FileSystems.delete(['oss://data/fs'])
  assert server.keys('data') == [k for k in server.keys('data')
                                 if not k.startswith('fs/')]
  with pytest.raises(BeamIOError):
    fs.size('oss://data/fs/big.bin')
  assert not server.uploads('data') and not server.uploads('out')


def test_wrong_secret_is_refused_with_signature_error(oss_env, monkeypatch):
  monkeypatch.setenv('OSS_ACCESS_KEY_SECRET', 'wrong')
  oss_client._clients.clear()  # pylint: disable=protected-access
  oss_env.put('data', 'x.txt', b'x')
  with pytest.raises(Exception) as info:
    FileSystems.open('oss://data/x.txt').read()
  assert 'SignatureDoesNotMatch' in str(info.value)
  assert oss_env.requests.count(status=403) >= 1


def _job_inputs(tmp_path, server, model_dirs, http_server=None):
  model_local = model_dirs['uint8']
  upload_tree(server, 'models', 'm/uint8', model_local)
  lines, local_lines = [], []
  for i in range(12):
    path = write_image(tmp_path / f'img {i}.jpg', 200 + i, size=(30 + i, 20))
    with open(path, 'rb') as f:
      server.put('data', f'img/img {i}.jpg', f.read())
    lines.append(f'oss://data/img/img {i}.jpg')
    local_lines.append(path)
  server.put('data', 'img/broken.jpg', b'not an image')
  (tmp_path / 'broken.jpg').write_bytes(b'not an image')
  lines += ['oss://data/img/broken.jpg', 'oss://data/img/missing.jpg']
  local_lines += [str(tmp_path / 'broken.jpg'), str(tmp_path / 'missing.jpg')]
  server.put('data', 'lists/list.txt', ('\n'.join(lines) + '\n').encode())
  return model_local, lines, local_lines


def _strip(lines, prefix):
  """Output lines with the image location reduced to its file name."""
  out = set()
  for l in lines:
    line, body = split_output_line(l)
    body.pop('message', None)
    out.add((os.path.basename(line.decode()), repr(body)))
  return out


def test_everything_on_oss_equals_local(tmp_path, oss_env, model_dirs):
  server = oss_env
  model_local, lines, local_lines = _job_inputs(tmp_path, server, model_dirs)
  local = run_job(tmp_path, local_lines, model_local, name='local')
  summary = _run_oss_job(server, tmp_path, 'run1')
  results = server.get('out', 'run1/result.txt').splitlines()
  errors = server.get('out', 'run1/result.txt.errors').splitlines()
  assert _strip(results, 'oss://') == _strip(local[0], '')
  assert _strip(errors, 'oss://') == _strip(local[1], '')
  assert len(results) == 12 and len(errors) == 2
  assert summary['accounting_ok'] and summary['records'] == 14
  # Shards were joined server-side, and nothing temporary is left.
  assert server.requests.count(op='UploadPartCopy') >= 2
  assert [k for k in server.keys('out') if k.startswith('run1/')] == [
      'run1/result.txt', 'run1/result.txt.errors',
      'run1/result.txt.report.html', 'run1/result.txt.summary.json']
  assert not server.uploads('out')
  # The model was copied once into the private cache and reused.
  cache = os.environ['EV_PREDICT_CACHE']
  assert oct(os.stat(cache).st_mode & 0o777) == '0o700'
  model_gets = server.requests.count(op='GetObject', bucket='models')
  _run_oss_job(server, tmp_path, 'run2')
  model_gets_after = server.requests.count(op='GetObject', bucket='models')
  # Only the launcher's signature/label reads repeat, never the variables.
  assert not [r for r in server.requests.filter(op='GetObject',
                                                bucket='models')[
                                                    model_gets:]
              if 'variables' in r.key]
  assert model_gets_after - model_gets <= 3


def _run_oss_job(server, tmp_path, name, extra=()):
  from ev_predict.pipeline import launcher
  return launcher.run([
      '-Dmodel_path=oss://models/m/uint8',
      '-Dinput_oss_file=oss://data/lists/list.txt',
      f'-Doutput_oss_file=oss://out/{name}/result.txt',
      f'-DossHost={server.endpoint}', '-Dmax_error_ratio=1',
      '-Dbuckets=oss://models/m/,oss://data/,oss://out/',
  ] + list(extra))


def test_faults_are_retried_without_loss_or_duplicates(tmp_path, oss_env,
                                                       model_dirs):
  server = oss_env
  _job_inputs(tmp_path, server, model_dirs)
  server.error_rate = 0.3
  server.reset_rate = 0.2
  server.fault_filter = lambda r: r.op == 'GetObject' and (
      r.key.startswith('img/'))
  summary = _run_oss_job(server, tmp_path, 'faulty',
                         extra=['-Dfetch_retries=8'])
  server.reset_faults()
  results = server.get('out', 'faulty/result.txt').splitlines()
  errors = server.get('out', 'faulty/result.txt.errors').splitlines()
  assert summary['records'] == summary['lines_read'] == 14
  names = [split_output_line(l)[0].decode() for l in results + errors]
  assert len(names) == len(set(names)) == 14
  assert len(results) == 12
  assert sorted(split_output_line(l)[1]['error'] for l in errors) == [
      'decode', 'not_found']
  faulted = [r for r in server.requests if r.fault]
  assert {r.fault for r in faulted} == {'error', 'reset'}
  # Every image GET that failed was retried until one succeeded.
  for r in faulted:
    assert server.requests.count(op='GetObject', key=r.key, status=200) \
        or r.key == 'img/missing.jpg'


def test_permanent_failure_becomes_error_record(tmp_path, oss_env,
                                                model_dirs):
  server = oss_env
  _job_inputs(tmp_path, server, model_dirs)
  server.fail_first = 1000
  server.fault_filter = lambda r: r.op == 'GetObject' and r.key == 'img/img 3.jpg'
  summary = _run_oss_job(server, tmp_path, 'perm',
                         extra=['-Dfetch_retries=1'])
  server.reset_faults()
  errors = {split_output_line(l)[0].decode(): split_output_line(l)[1]
            for l in server.get('out', 'perm/result.txt.errors').splitlines()}
  assert errors['oss://data/img/img 3.jpg']['error'] == 'fetch'
  assert summary['succeeded'] == 11


def test_allow_list(tmp_path, oss_env, model_dirs):
  server = oss_env
  _job_inputs(tmp_path, server, model_dirs)
  server.put('data', 'lists/list.txt', server.get('data', 'lists/list.txt') +
             b'oss://secret/payroll.jpg\noss://data/../secret/x.jpg\n')
  server.requests.clear()
  from ev_predict.pipeline import launcher
  summary = launcher.run([
      '-Dmodel_path=oss://models/m/uint8',
      '-Dinput_oss_file=oss://data/lists/list.txt',
      '-Doutput_oss_file=oss://out/allow/result.txt',
      f'-DossHost={server.endpoint}', '-Dmax_error_ratio=1',
      '-Dbuckets=oss://models/m/,oss://data/img/,oss://data/lists/,oss://out/'])
  errors = {split_output_line(l)[0].decode(): split_output_line(l)[1]['error']
            for l in server.get('out', 'allow/result.txt.errors').splitlines()}
  assert errors['oss://secret/payroll.jpg'] == 'forbidden'
  assert errors['oss://data/../secret/x.jpg'] == 'forbidden'
  assert summary['failed_by_kind']['forbidden'] == 2
  assert server.requests.count(bucket='secret') == 0
  # Job-level paths outside the list are refused before any work.
  for bad in (['-Dmodel_path=oss://models/other'],
              ['-Doutput_oss_file=oss://data/out.txt']):
    argv = ['-Dmodel_path=oss://models/m/uint8',
            '-Dinput_oss_file=oss://data/lists/list.txt',
            '-Doutput_oss_file=oss://out/allow2/result.txt',
            f'-DossHost={server.endpoint}',
            '-Dbuckets=oss://models/m/,oss://data/lists/,oss://out/']
    key = bad[0].split('=')[0]
    argv = [a for a in argv if not a.startswith(key + '=')] + bad
    with pytest.raises(launcher.UsageError, match='outside -Dbuckets'):
      launcher.run(argv)


def test_secret_never_leaks(tmp_path, oss_env, model_dirs):
  """A whole job in a subprocess (two worker processes): the secret is in
  its environment only, never in output, logs, options or the job graph."""
  server = oss_env
  _job_inputs(tmp_path, server, model_dirs)
  # Presigned URLs (V1 and V4) read over http(s): urllib3 logs their query.
  import oss2
  signed = [oss2.Bucket(auth, server.endpoint, 'data', region='cn-hangzhou')
            .sign_url('GET', 'img/img 0.jpg', 600) for auth in (
                oss2.Auth(OSS_ID, OSS_SECRET),
                oss2.ProviderAuthV4(oss2.credentials.StaticCredentialsProvider(
                    OSS_ID, OSS_SECRET)))]
  server.put('data', 'lists/list.txt', server.get('data', 'lists/list.txt') +
             ''.join(u + '\n' for u in signed).encode())
  env = dict(os.environ)
  argv = ['-Dmodel_path=oss://models/m/uint8',
          '-Dinput_oss_file=oss://data/lists/list.txt',
          '-Doutput_oss_file=oss://out/leak/result.txt',
          f'-DossHost={server.endpoint}', '-Dmax_error_ratio=1',
          '-Dnum_worker=2', '--default_sdk_harness_log_level=DEBUG']
  proc = subprocess.run([EV_PREDICT] + argv, env=env, capture_output=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]
  secret = OSS_SECRET.encode()
  assert secret not in proc.stdout and secret not in proc.stderr
  # Nor anything that replays a request: every Authorization header and URL
  # signature the server received (oss2 and urllib3 log them at DEBUG).
  assert b'oss2.http:Send request' in proc.stderr   # DEBUG did reach stderr
  material = _signatures(server)
  assert len(material) > 20
  assert not [m for m in material if m.encode() in proc.stderr]
  assert f'OSS {OSS_ID}:'.encode() not in proc.stderr
  assert not re.search(rb'Signature=(?!<redacted>)', proc.stderr, re.I)
  results = server.get('out', 'leak/result.txt').splitlines()
  assert sorted(u.encode() for u in signed) == sorted(
      split_output_line(l)[0] for l in results if b'?' in l)
  for key in server.keys('out'):
    assert secret not in server.get('out', key), key
  from ev_predict.pipeline import launcher, graph
  import apache_beam as beam
  options = launcher.make_options(argv)
  assert OSS_SECRET not in repr(options.get_all_options())
  p = beam.Pipeline(options=options)
  graph.build_pipeline(p, options)
  blobs = _graph_blobs(p.to_runner_api())
  assert not [b for b in blobs if secret in b]
  # The search reaches inside pickled DoFns: the model path is found there.
  assert any(b'oss://models/m/uint8' in b for b in blobs)


def _signatures(server):
  found = set()
  for r in server.requests:
    auth = r.headers.get('authorization')
    if auth:
      found.update([auth, auth.rpartition(':')[2]])
    for name in ('Signature', 'x-oss-signature'):
      if r.query.get(name):
        found.update([r.query[name], urllib.parse.quote(r.query[name],
                                                        safe='')])
  return found


def _graph_blobs(proto):
  """The serialized job graph, with every pickled DoFn unpickled and
  re-serialized uncompressed (Beam compresses pickles, which would hide
  any string inside them from a plain search)."""
  import cloudpickle
  from apache_beam.internal import pickler
  from apache_beam.portability.api import beam_runner_api_pb2
  blobs = [proto.SerializeToString()]
  for transform in proto.components.transforms.values():
    if transform.spec.urn != 'beam:transform:pardo:v1':
      continue
    payload = beam_runner_api_pb2.ParDoPayload.FromString(
        transform.spec.payload)
    try:
      obj = pickler.loads(payload.do_fn.payload)
    except Exception:  # pylint: disable=broad-except
      continue
    blobs.append(cloudpickle.dumps(obj))
  return blobs


def test_reuploaded_model_is_fetched_again(tmp_path, oss_env):
  from ev_predict.transforms import modelcache
  server = oss_env
  m1 = models.save_uint8_model(str(tmp_path / 'm1'))
  upload_tree(server, 'models', 'swap', m1)
  first = modelcache.local_model_dir('oss://models/swap')
  assert modelcache.local_model_dir('oss://models/swap') == first
  m2 = models.save_uint8_model(str(tmp_path / 'm2'), num_classes=3)
  upload_tree(server, 'models', 'swap', m2)
  second = modelcache.local_model_dir('oss://models/swap')
  assert second != first
  with open(os.path.join(second, 'saved_model.pb'), 'rb') as f:
    assert f.read() == server.get('models', 'swap/saved_model.pb')
  assert not [n for n in os.listdir(modelcache.cache_root()) if '.tmp-' in n]


def test_errors_are_classified_by_status_never_by_key(tmp_path, oss_env,
                                                      model_dirs):
  """Keys that spell '403', '404', 'not found' or 'AccessDenied': a 503 or a
  reset on them is retried like any other (the old classifier read the
  message, which holds the path, and made them final forbidden/not_found)."""
  server = oss_env
  names = ['2024/img_1403.jpg', '404/not found.jpg', 'AccessDenied/x.jpg',
           'NoSuchKey/403 Forbidden.jpg']
  for i, name in enumerate(names):
    with open(write_image(tmp_path / f'{i}.jpg', 300 + i), 'rb') as f:
      data = f.read()
    server.put('data', f'recover/{name}', data)
    server.put('data', f'stuck/{name}', data)
  gets, lock = collections.Counter(), threading.Lock()

  def faultable(r):
    # recover/: a 503, then a reset, then served; stuck/: 503 then resets
    # for ever.
    if r.op != 'GetObject':
      return False
    with lock:
      gets[r.key] += 1
      return r.key.startswith('stuck/') or gets[r.key] <= 2

  lines = [f'oss://data/{d}/{n}' for d in ('recover', 'stuck') for n in names]
  lines += ['oss://data/missing/403/img_1403.jpg']
  with server.faults(fail_first=1, error_status=503, reset_rate=1.0,
                     fault_filter=faultable):
    results, errors, _ = run_job(
        tmp_path, lines, model_dirs['uint8'], fetch_retries=3,
        ossHost=server.endpoint)
  ok = sorted(split_output_line(l)[0].decode() for l in results)
  assert ok == sorted(l for l in lines if '/recover/' in l)
  failed = {split_output_line(l)[0].decode(): split_output_line(l)[1]
            for l in errors}
  assert failed.pop('oss://data/missing/403/img_1403.jpg')['error'] == \
      'not_found'
  assert sorted(failed) == sorted(l for l in lines if '/stuck/' in l)
  for line, body in failed.items():
    assert body['error'] == 'fetch' and 'after 4 attempts' in \
        body['message'], (line, body)
    key = line[len('oss://data/'):]
    assert [r.fault for r in server.requests.filter(op='GetObject',
                                                   key=key)] == \
        ['error', 'reset', 'reset', 'reset']
  # The server never said 403, and 404 only for the missing key.
  assert not server.requests.count(status=403)
  assert {r.key for r in server.requests if r.status == 404} == {
      'missing/403/img_1403.jpg'}


def test_slow_body_is_stopped_at_the_deadline(tmp_path, oss_env, model_dirs):
  """-Dfetch_timeout bounds a whole object read: a body trickling in (each
  socket read well within any per-read timeout) is cut at the deadline."""
  server = oss_env
  server.put('data', 'slow/big.jpg', os.urandom(200_000))
  with open(write_image(tmp_path / 'small.jpg', 7), 'rb') as f:
    server.put('data', 'slow/small.jpg', f.read())
  with server.faults(slow_body=50_000):   # 4 s for the big body
    results, errors, _ = run_job(
        tmp_path, ['oss://data/slow/big.jpg', 'oss://data/slow/small.jpg'],
        model_dirs['uint8'], fetch_timeout=1, fetch_retries=1,
        ossHost=server.endpoint)
    assert [split_output_line(l)[0] for l in results] == [
        b'oss://data/slow/small.jpg']
    body = split_output_line(errors[0])[1]
    assert body['error'] == 'timeout' and 'after 2 attempts' in \
        body['message']
    assert server.requests.count(op='GetObject', key='slow/big.jpg') == 2
    fs = FileSystems.get_filesystem('oss://data/slow/big.jpg')
    start = time.monotonic()
    with pytest.raises(TimeoutError):
      fs.read_object('oss://data/slow/big.jpg', 1 << 20, timeout=1.0)
    assert time.monotonic() - start < 1.8
