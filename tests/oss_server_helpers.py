"""The fake OSS server (tests/fakes/oss_server.py) as the
tests/test_oss_server_*.py files use it: credentials, a server per test
module, a fresh bucket per test, an oss2 client for it, and a tree of keys to
list.

Imported by name into each of those modules (pytest finds a fixture in the
module's globals); a conftest fixture would give every test file a `name`.
"""
import hashlib
import itertools

import oss2
import pytest

from tests.fakes.oss_server import OssServer

AK, SK = 'test-ak', 'test-secret'
STS_AK, STS_SK, STS_TOKEN = 'sts-ak', 'sts-secret', 'sts-token-123'
ODD_KEY = 'a b,c/ü+%.jpg'
PART = 100 * 1024   # OSS minimum size of every part but the last

_names = itertools.count()


@pytest.fixture(scope='module')
def server():
  with OssServer(credentials={AK: SK},
                 sts={STS_AK: (STS_SK, STS_TOKEN)}) as srv:
    yield srv


@pytest.fixture
def name(server):
  """A fresh, empty bucket per test; faults off and an empty request log."""
  bucket_name = f'bkt-{next(_names)}'
  server.create_bucket(bucket_name)
  server.reset_faults()
  server.requests.clear()
  yield bucket_name
  server.reset_faults()


@pytest.fixture
def bucket(server, name):
  return oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, name)


def _md5(data):
  return hashlib.md5(data).hexdigest().upper()


def _crc(data):
  crc = oss2.utils.Crc64()
  crc.update(data)
  return crc.crc


_TREE = ([f'top{i}.jpg' for i in range(5)]
         + [f'd0/img{i:02d}.jpg' for i in range(8)]
         + [f'd1/sub/x{i}.png' for i in range(6)]
         + [f'd1/y{i}.png' for i in range(3)]
         + ['d2/', 'd2/z.jpg', 'e f/ü.jpg'])   # 25 keys


@pytest.fixture
def tree(server, name):
  for key in _TREE:
    server.put(name, key, key.encode())
  return sorted(_TREE)
