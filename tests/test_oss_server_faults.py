"""The fake OSS server through oss2: its fault knobs (errors, resets,
latency, slow bodies) as the client sees them, and its connections."""
import collections
import threading
import time

import oss2
import pytest
import requests

from tests.fakes.oss_server import OssServer
# The fixtures too: pytest finds them among the module's globals.
from tests.oss_server_helpers import (AK, SK, bucket, name, server,
                                      tree)


# ---- faults --------------------------------------------------------------------


def test_error_rate_one_fails_every_get_once(server, name, bucket):
  server.put(name, 'k', b'v')
  with server.faults(error_rate=1.0):
    for _ in range(4):
      with pytest.raises(oss2.exceptions.ServerError) as e:
        bucket.get_object('k')
      assert (e.value.status, e.value.code) in [
          (500, 'InternalError'), (503, 'ServiceUnavailable')]
    # only object GETs are faulted by default
    bucket.put_object('k2', b'w')
    assert bucket.head_object('k').content_length == 1
    assert [o.key for o in bucket.list_objects().object_list] == ['k', 'k2']
    with server.faults(error_status=500):
      with pytest.raises(oss2.exceptions.ServerError) as e:
        bucket.get_object('k')
      assert (e.value.status, e.value.code) == (500, 'InternalError')
  # oss2 does not retry a single get_object: one request per call.
  gets = server.requests.filter(op='GetObject')
  assert len(gets) == 5 and all(r.fault == 'error' for r in gets)
  assert bucket.get_object('k').read() == b'v'   # knobs restored on exit
  assert server.error_rate == 0.0


def test_error_rate_is_reproducible(name):
  def outcomes(seed):
    with OssServer(credentials={AK: SK}, buckets=[name], seed=seed) as srv:
      srv.put(name, 'k', b'v')
      bkt = oss2.Bucket(oss2.Auth(AK, SK), srv.endpoint, name)
      srv.error_rate = 0.5
      result = []
      for _ in range(20):
        try:
          result.append(bkt.get_object('k').read())
        except oss2.exceptions.ServerError as e:
          result.append(e.status)
      return result

  first = outcomes(7)
  assert first == outcomes(7)
  assert b'v' in first and (500 in first or 503 in first)


def test_fault_draws_do_not_depend_on_request_order(name):
  # A job's fetch threads interleave differently on every run; the faults a
  # key meets must not.
  def outcomes(order):
    with OssServer(credentials={AK: SK}, buckets=[name], seed=3) as srv:
      for key in 'abcd':
        srv.put(name, key, key.encode())
      bkt = oss2.Bucket(oss2.Auth(AK, SK), srv.endpoint, name)
      srv.error_rate = 0.5
      result = collections.defaultdict(list)
      for key in order:
        try:
          result[key].append(bkt.get_object(key).read())
        except oss2.exceptions.ServerError as e:
          result[key].append(e.status)
      return dict(result)

  forward = outcomes('abcd' * 5)
  assert forward == outcomes('dcba' * 5) == outcomes('aaaaabbbbbcccccddddd')
  assert any(isinstance(v, int) for seq in forward.values() for v in seq)


def test_fail_first_then_success(server, name, bucket):
  server.put(name, 'k', b'value')
  server.put(name, 'other', b'x')
  with server.faults(fail_first=2, error_status=503):
    for _ in range(2):
      with pytest.raises(oss2.exceptions.ServerError) as e:
        bucket.get_object('k')
      assert e.value.status == 503
    assert bucket.get_object('k').read() == b'value'      # 3rd request
    assert bucket.get_object('k').read() == b'value'
    with pytest.raises(oss2.exceptions.ServerError):
      bucket.get_object('other')                          # counted per key
  assert [r.status for r in server.requests.filter(key='k')] == [503, 503, 200, 200]


def test_list_iterator_retries_5xx(server, name, bucket, tree):
  # oss2.defaults.request_retries is used by the iterators only.
  assert oss2.defaults.request_retries == 3
  list_filter = lambda r: r.op == 'ListObjects'
  with server.faults(fail_first=2, fault_filter=list_filter):
    assert [o.key for o in oss2.ObjectIterator(bucket, max_keys=1000)] == tree
  assert server.requests.count(op='ListObjects') == 3
  server.requests.clear()
  with server.faults(error_rate=1.0, fault_filter=list_filter):
    with pytest.raises(oss2.exceptions.ServerError):
      list(oss2.ObjectIterator(bucket))
  assert server.requests.count(op='ListObjects') == 3


def test_reset_mid_body(server, name, bucket, tmp_path):
  data = bytes(range(256)) * 400
  server.put(name, 'k', data)
  with server.faults(reset_rate=1.0):
    result = bucket.get_object('k')   # headers arrive intact
    assert result.status == 200 and result.content_length == len(data)
    # urllib3 notices the short body; requests raises, oss2 does not wrap it.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
      result.read()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
      bucket.get_object_to_file('k', str(tmp_path / 'out'))
    ranged = bucket.get_object('k', byte_range=(0, 999))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
      ranged.read()
    assert bucket.head_object('k').content_length == len(data)  # not faulted
  assert [r.fault for r in server.requests.filter(op='GetObject')] == ['reset'] * 3
  assert bucket.get_object('k').read() == data


def test_latency(server, name, bucket):
  server.put(name, 'k', b'v')
  with server.faults(latency=0.3):
    start = time.monotonic()
    bucket.get_object_meta('k')       # latency applies to every request
    assert time.monotonic() - start >= 0.3
  start = time.monotonic()
  bucket.get_object_meta('k')
  assert time.monotonic() - start < 0.3


def test_latency_beyond_client_timeout(server, name):
  server.put(name, 'k', b'v')
  impatient = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, name,
                          connect_timeout=0.1)
  with server.faults(latency=0.3):
    with pytest.raises(oss2.exceptions.RequestError) as e:
      impatient.get_object('k')
  assert isinstance(e.value.exception, requests.exceptions.ReadTimeout)


def test_slow_body(server, name, bucket):
  data = b's' * 100_000
  server.put(name, 'k', data)
  with server.faults(slow_body=200_000):
    start = time.monotonic()
    assert bucket.get_object('k').read() == data
    assert time.monotonic() - start >= 0.45
    start = time.monotonic()
    bucket.put_object('k2', data)     # not faulted by default
    assert time.monotonic() - start < 0.4


def test_faults_rejects_unknown_knob(server):
  with pytest.raises(TypeError):
    with server.faults(error_ratio=1.0):
      pass


# ---- connections ---------------------------------------------------------------


def test_keep_alive_and_concurrency(server, name, bucket):
  before = server.connection_count
  for i in range(10):
    bucket.put_object(f'seq{i}', b'x')
    bucket.get_object(f'seq{i}').read()
  assert server.connection_count - before <= 2   # one pooled connection

  errors = []

  def worker(n):
    try:
      b = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, name)
      for i in range(10):
        data = f'{n}-{i}'.encode() * 100
        b.put_object(f'w{n}/{i}', data)
        assert b.get_object(f'w{n}/{i}').read() == data
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert len(server.keys(name)) == 10 + 80


def test_stop_refuses_connections(name):
  srv = OssServer(credentials={AK: SK}, buckets=[name]).start()
  bkt = oss2.Bucket(oss2.Auth(AK, SK), srv.endpoint, name)
  bkt.put_object('k', b'v')
  srv.stop()
  with pytest.raises(oss2.exceptions.RequestError):
    bkt.get_object('k')
