"""The storage protocol on local files and on OSS (the real oss2 client over
HTTP to the fake server), its typed errors, an injected OSS client, and the
fetch stage's mapping of error types to record kinds."""
import os

import oss2
import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from tests.conftest import OSS_ID, OSS_SECRET
from ev_predict.transforms import storage
from ev_predict.transforms import record as rec
from ev_predict.transforms.fetch import FetchConfig, Fetcher, FetchError
from ev_predict.transforms.oss import client as oss_client
from ev_predict.transforms.oss import io as oss_io
from ev_predict.transforms.oss.filesystem import OssFileSystem


def test_local_files_through_beam(tmp_path):
  path = str(tmp_path / 'a.bin')
  with open(path, 'wb') as f:
    f.write(b'x' * 1000)
  store = storage.for_path(path)
  assert isinstance(store, storage.FileSystemStorage)
  assert store.read_object(path, 1000, timeout=10) == b'x' * 1000
  with pytest.raises(storage.TooLarge):
    store.read_object(path, 999, timeout=10)
  with pytest.raises(storage.NotFound):
    store.read_object(str(tmp_path / 'missing.bin'), 1000, timeout=10)
  parts = []
  for i, data in enumerate([b'one\n', b'', b'three\n']):
    parts.append(str(tmp_path / f'part-{i}'))
    with open(parts[-1], 'wb') as f:
      f.write(data)
  target = str(tmp_path / 'joined')
  # Reversed: the caller's order, not the names', decides.
  assert store.concatenate(parts[::-1], target) is False   # streamed
  with open(target, 'rb') as f:
    assert f.read() == b'three\none\n'
  store.delete_object(target)
  assert not os.path.exists(target)
  with pytest.raises(IsADirectoryError):
    store.delete_object(str(tmp_path))
  assert os.path.isdir(tmp_path)


def test_unknown_scheme_is_unsupported():
  with pytest.raises(storage.Unsupported):
    storage.for_path('nosuchscheme://x/y')


def test_oss_implements_the_protocol(oss_env, monkeypatch):
  server = oss_env
  monkeypatch.setattr(oss_io, 'PART_SIZE', 128 << 10)
  store = storage.for_path('oss://data/x')
  assert isinstance(store, OssFileSystem)
  server.put('data', 'st/a.jpg', b'a' * 5000)
  assert store.read_object('oss://data/st/a.jpg', 5000, 10) == b'a' * 5000
  gets = server.requests.count(op='GetObject')
  with pytest.raises(storage.TooLarge):
    store.read_object('oss://data/st/a.jpg', 4999, 10)
  assert server.requests.count(op='GetObject') == gets + 1   # one request
  with pytest.raises(storage.NotFound):
    store.read_object('oss://data/st/missing.jpg', 5000, 10)
  with pytest.raises(storage.InvalidPath):
    store.read_object('oss://data', 5000, 10)
  # Small parts: OSS cannot compose them, so they are streamed.
  server.put('data', 'st/p1', b'1' * 10)
  server.put('data', 'st/p2', b'2' * 10)
  assert store.concatenate(['oss://data/st/p2', 'oss://data/st/p1'],
                           'oss://out/st/small') is False
  assert server.get('out', 'st/small') == b'2' * 10 + b'1' * 10
  assert not server.requests.count(op='UploadPartCopy')
  big = [os.urandom(300 << 10), os.urandom(120 << 10)]
  server.put('data', 'st/b1', big[0])
  server.put('data', 'st/b2', big[1])
  assert store.concatenate(['oss://data/st/b1', 'oss://data/st/b2'],
                           'oss://out/st/big') is True
  assert server.get('out', 'st/big') == big[0] + big[1]
  assert server.requests.count(op='UploadPartCopy') == 4   # 3 + 1 parts
  store.delete_object('oss://out/st/big')
  assert server.get('out', 'st/big') is None


def test_oss_errors_are_typed_by_status(oss_env, monkeypatch):
  server = oss_env
  store = storage.for_path('oss://data/x')
  server.put('data', 'st/403 Forbidden.jpg', b'z' * 100)
  path = 'oss://data/st/403 Forbidden.jpg'
  with server.faults(error_rate=1.0, error_status=503):
    with pytest.raises(storage.ServerError) as info:
      store.read_object(path, 1000, 10)
  assert info.value.status == 503 and info.value.transient
  with server.faults(reset_rate=1.0):
    with pytest.raises(storage.Transient) as info:
      store.read_object(path, 1000, 10)
  assert info.value.transient
  monkeypatch.setenv('OSS_ACCESS_KEY_SECRET', 'wrong')
  oss_client._clients.clear()  # pylint: disable=protected-access
  with pytest.raises(storage.Forbidden) as info:
    store.read_object(path, 1000, 10)
  assert 'SignatureDoesNotMatch' in info.value.reason
  assert not info.value.transient


def test_injected_client(oss_server, monkeypatch, tmp_path):
  """OssIO takes its clients from a factory (as Beam's S3IO(client=)): no
  endpoint, no credentials in the environment."""
  for name in ('OSS_ACCESS_KEY_ID', 'OSS_ACCESS_KEY_SECRET',
               'OSS_SESSION_TOKEN', 'OSS_ENDPOINT'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('OSS_CONFIG_FILE', str(tmp_path / 'none'))
  with pytest.raises(storage.ConfigError):
    oss_io.OssIO().stat('oss://data/inj/x')
  asked = []

  def factory(bucket):
    asked.append(bucket)
    return oss2.Bucket(oss2.Auth(OSS_ID, OSS_SECRET), oss_server.endpoint,
                       bucket)

  io = oss_io.OssIO(client_factory=factory)
  uploader = oss_io.OssUploader(io, 'oss://data/inj/x')
  uploader.put(b'hello ')
  uploader.put(memoryview(b'world'))
  uploader.finish()
  assert oss_server.get('data', 'inj/x') == b'hello world'
  assert io.stat('oss://data/inj/x').size == 11
  assert io.read('oss://data/inj/x', max_bytes=11) == b'hello world'
  assert [i.path for i in io.list('oss://data/inj/')] == ['oss://data/inj/x']
  io.copy('oss://data/inj/x', 'oss://out/inj/y')
  assert oss_server.get('out', 'inj/y') == b'hello world'
  with pytest.raises(storage.NotFound):
    io.stat('oss://out/inj/missing')
  assert set(asked) == {'data', 'out'}


class _TypedFileSystem(LocalFileSystem, storage.Storage):
  """Raises the storage error that a path names."""

  ERRORS = {
      'notfound': storage.NotFound(2, 'not found: x'),
      'forbidden': storage.Forbidden(13, 'AccessDenied: x'),
      'timeout': storage.Timeout(110, 'timed out: x'),
      'unavailable': storage.ServerError(503, 'OSS 503 ServiceUnavailable'),
      'badrequest': storage.ServerError(400, 'OSS 400 InvalidArgument'),
      # A message that spells other kinds: the type decides.
      'reset': storage.Transient(104, 'reset: 403 Forbidden/404 not found'),
      'large': storage.TooLarge('9 bytes exceeds the 8-byte cap'),
      'badpath': storage.InvalidPath('needs an object'),
      'config': storage.ConfigError('no OSS endpoint'),
      'other': OSError(5, 'Input/output error'),
  }

  @classmethod
  def scheme(cls):
    return 'typed-test'

  def read_object(self, path, cap, timeout=None):
    raise self.ERRORS[path.rsplit('/', 1)[1]]

  def concatenate(self, sources, target):
    raise NotImplementedError

  def delete_object(self, path):
    raise NotImplementedError


@pytest.mark.parametrize('name, kind, transient', [
    ('notfound', rec.NOT_FOUND, False), ('forbidden', rec.FORBIDDEN, False),
    ('timeout', rec.TIMEOUT, True), ('unavailable', rec.FETCH, True),
    ('badrequest', rec.FETCH, False), ('reset', rec.FETCH, True),
    ('large', rec.TOO_LARGE, False), ('badpath', rec.BAD_LINE, False),
    ('config', rec.FETCH, False), ('other', rec.FETCH, True),
])
def test_fetch_maps_error_types_to_kinds(name, kind, transient):
  fetcher = Fetcher(FetchConfig(retries=0))
  with pytest.raises(FetchError) as info:
    fetcher.read(f'typed-test://b/{name}')
  assert (info.value.kind, info.value.transient) == (kind, transient)
