"""Tests of tests/fakes/oss_server.py, driven through the real oss2 client over HTTP.

Whatever passes here is what the oss:// filesystem tests can rely on: the
server speaks the OSS protocol the way oss2 2.19 expects it (signatures,
XML, headers, error codes) and its fault knobs are visible from the client.
"""
import base64
import collections
import hashlib
import itertools
import threading
import time
import xml.etree.ElementTree as ET

import oss2
import pytest
import requests

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


def _raw_xml(bucket, params):
  """A bucket-level GET through oss2's signer, returning the parsed XML."""
  resp = bucket._Bucket__do_bucket('GET', params=params)
  return ET.fromstring(resp.read())


# ---- basics ------------------------------------------------------------------


def test_endpoint_and_path_style(server, name, bucket):
  assert server.endpoint.startswith('http://127.0.0.1:')
  assert oss2.utils.is_ip_or_localhost(server.endpoint.split('//')[1])
  bucket.put_object('dir/file.txt', b'x')
  method, bkt, key, query = server.requests[0]
  assert (method, bkt, key, query) == ('PUT', name, 'dir/file.txt', {})
  assert server.requests[0].op == 'PutObject'
  assert server.requests[0].status == 200


def test_put_get_head_roundtrip(server, name, bucket):
  data = bytes(range(256)) * 50
  put = bucket.put_object('img/cat.jpg', data,
                          headers={'x-oss-meta-label': 'cat'})
  assert put.status == 200 and put.etag == _md5(data)
  assert put.crc == _crc(data)   # oss2 itself checked this against its CRC

  got = bucket.get_object('img/cat.jpg')
  assert got.read() == data
  assert got.status == 200
  assert got.etag == _md5(data)
  assert got.content_length == len(data)
  assert got.content_type == 'image/jpeg'   # oss2 guessed it on upload
  assert got.object_type == 'Normal'
  assert got.server_crc == _crc(data)
  assert got.headers['x-oss-meta-label'] == 'cat'
  assert abs(got.last_modified - time.time()) < 60
  assert got.request_id

  head = bucket.head_object('img/cat.jpg')
  assert (head.content_length, head.etag, head.object_type) == (
      len(data), _md5(data), 'Normal')
  meta = bucket.get_object_meta('img/cat.jpg')
  assert (meta.content_length, meta.etag) == (len(data), _md5(data))
  assert server.get(name, 'img/cat.jpg') == data
  assert bucket.object_exists('img/cat.jpg')
  assert not bucket.object_exists('img/dog.jpg')


def test_put_content_md5_is_checked(server, name, bucket):
  data = b'payload'
  good = base64.b64encode(hashlib.md5(data).digest()).decode()
  bucket.put_object('k', data, headers={'Content-MD5': good})
  bad = base64.b64encode(hashlib.md5(b'other').digest()).decode()
  with pytest.raises(oss2.exceptions.InvalidDigest) as e:
    bucket.put_object('k2', data, headers={'Content-MD5': bad})
  assert e.value.status == 400
  assert server.get(name, 'k2') is None


def test_streamed_uploads_chunked_and_files(server, name, bucket, tmp_path):
  # Iterators / file-likes without a length go out with chunked encoding.
  bucket.put_object('gen', (c for c in [b'abc', b'', b'def']))
  assert server.get(name, 'gen') == b'abcdef'

  class Reader:
    def __init__(self, data):
      self.data, self.pos = data, 0

    def read(self, n=-1):
      n = len(self.data) if n is None or n < 0 else n
      out = self.data[self.pos:self.pos + n]
      self.pos += len(out)
      return out

  bucket.put_object('reader', Reader(b'r' * 70000))
  assert server.get(name, 'reader') == b'r' * 70000
  path = tmp_path / 'f.bin'
  path.write_bytes(b'f' * 12345)
  bucket.put_object_from_file('file', str(path))
  bucket.get_object_to_file('file', str(tmp_path / 'back.bin'))  # CRC checked
  assert (tmp_path / 'back.bin').read_bytes() == b'f' * 12345


@pytest.mark.parametrize('key', [
    ODD_KEY, 'x?y#z&=;', ' lead & trail ', '日本/語 画像.png', '100%25%',
    'plus+plus', 'a//b', "quote'\"<tag>", 'tab\there'])
def test_odd_keys_round_trip(server, name, bucket, key):
  bucket.put_object(key, key.encode())
  assert server.keys(name) == [key]
  assert bucket.get_object(key).read() == key.encode()
  assert bucket.head_object(key).content_length == len(key.encode())
  assert [o.key for o in oss2.ObjectIterator(bucket)] == [key]
  assert [o.key for o in oss2.ObjectIteratorV2(bucket)] == [key]
  # encoding-type not 'url': keys come back XML-escaped, not url-encoded
  if '\t' not in key:
    plain = bucket.list_objects_v2(encoding_type='')
    assert [o.key for o in plain.object_list] == [key]
  assert [o.key for o in oss2.ObjectIterator(bucket, prefix=key[:3])] == [key]
  bucket.copy_object(name, key, key + '.copy')
  assert server.get(name, key + '.copy') == key.encode()
  result = bucket.batch_delete_objects([key, key + '.copy'])
  assert sorted(result.deleted_keys) == sorted([key, key + '.copy'])
  assert server.keys(name) == []


def test_missing_objects_and_buckets(server, name, bucket):
  with pytest.raises(oss2.exceptions.NoSuchKey) as e:
    bucket.get_object('nope')
  assert e.value.status == 404 and e.value.code == 'NoSuchKey'
  assert e.value.request_id
  # HEAD replies have no body: the error travels base64-encoded in x-oss-err
  with pytest.raises(oss2.exceptions.NoSuchKey):
    bucket.head_object('nope')
  with pytest.raises(oss2.exceptions.NoSuchKey):
    bucket.get_object_meta('nope')
  gone = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, 'no-such-bucket')
  with pytest.raises(oss2.exceptions.NoSuchBucket):
    gone.get_object('k')
  with pytest.raises(oss2.exceptions.NoSuchBucket):
    gone.object_exists('k')
  with pytest.raises(oss2.exceptions.NoSuchBucket):
    gone.put_object('k', b'x')
  with pytest.raises(oss2.exceptions.NoSuchBucket):
    gone.list_objects()


def test_delete_object_is_idempotent(server, name, bucket):
  bucket.put_object('k', b'v')
  assert bucket.delete_object('k').status == 204
  assert bucket.delete_object('k').status == 204
  assert server.keys(name) == []


# ---- ranges ------------------------------------------------------------------


def test_ranged_reads(server, name, bucket):
  data = bytes(range(100))
  bucket.put_object('r', data)

  def get(byte_range):
    result = bucket.get_object('r', byte_range=byte_range)
    return result.status, result.headers.get('Content-Range'), result.read()

  assert get((0, 9)) == (206, 'bytes 0-9/100', data[:10])
  assert get((90, None)) == (206, 'bytes 90-99/100', data[90:])      # bytes=90-
  assert get((None, 5)) == (206, 'bytes 95-99/100', data[95:])       # bytes=-5
  assert get((95, 1000)) == (206, 'bytes 95-99/100', data[95:])      # clamped
  assert get((99, 99)) == (206, 'bytes 99-99/100', data[99:])
  ranged = bucket.get_object('r', byte_range=(10, 19))
  assert ranged.content_length == 10
  assert ranged.server_crc == _crc(data)   # whole-object CRC, as OSS does
  for bad in [(100, 200), (100, None), (50, 10)]:
    with pytest.raises(oss2.exceptions.ServerError) as e:
      bucket.get_object('r', byte_range=bad)
    assert (e.value.status, e.value.code) == (416, 'InvalidRange')
  # Without x-oss-range-behavior: standard, real OSS ignores bad ranges.
  server.range_behavior = 'legacy'
  try:
    assert get((100, 200)) == (200, None, data)
    assert get((0, 1000)) == (200, None, data)
    standard = bucket.get_object('r', byte_range=(0, 1000),
                                 headers={'x-oss-range-behavior': 'standard'})
    assert standard.status == 206 and standard.read() == data
  finally:
    server.range_behavior = 'standard'


def test_resumable_download_and_upload(server, name, bucket, tmp_path):
  # oss2's resumable helpers use ranged GETs whose CRCs are combined and
  # checked against the whole-object CRC, and upload_part + complete.
  data = bytes(range(256)) * 1600   # 400 KiB
  src = tmp_path / 'src.bin'
  src.write_bytes(data)
  oss2.resumable_upload(bucket, 'big', str(src), multipart_threshold=1,
                        part_size=PART, num_threads=2,
                        store=oss2.ResumableStore(root=str(tmp_path)))
  assert server.get(name, 'big') == data
  assert server.object_info(name, 'big')['object_type'] == 'Multipart'
  assert server.requests.count(op='UploadPart') == 4
  out = tmp_path / 'out.bin'
  oss2.resumable_download(bucket, 'big', str(out), multiget_threshold=1,
                          part_size=PART, num_threads=3,
                          store=oss2.ResumableDownloadStore(root=str(tmp_path)))
  assert out.read_bytes() == data
  assert server.requests.count(op='GetObject', status=206) == 4


# ---- authentication ----------------------------------------------------------


def test_wrong_secret_is_signature_does_not_match(server, name, bucket):
  bucket.put_object('k', b'v')
  bad = oss2.Bucket(oss2.Auth(AK, 'wrong'), server.endpoint, name)
  for call in [lambda: bad.get_object('k'), lambda: bad.put_object('k', b'x'),
               lambda: bad.list_objects(), lambda: bad.head_object('k'),
               lambda: bad.delete_object('k')]:
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as e:
      call()
    assert e.value.status == 403 and e.value.code == 'SignatureDoesNotMatch'
  assert server.get(name, 'k') == b'v'
  assert server.requests[-1].status == 403 and server.requests[-1].op is None


def test_unknown_key_id_and_anonymous(server, name, bucket):
  stranger = oss2.Bucket(oss2.Auth('who', SK), server.endpoint, name)
  with pytest.raises(oss2.exceptions.ServerError) as e:
    stranger.get_object('k')
  assert (e.value.status, e.value.code) == (403, 'InvalidAccessKeyId')
  anonymous = oss2.Bucket(oss2.AnonymousAuth(), server.endpoint, name)
  with pytest.raises(oss2.exceptions.AccessDenied) as e:
    anonymous.get_object('k')
  assert e.value.status == 403


def test_tampered_request_is_rejected(server, name, bucket):
  # A signature only verifies for what was signed: change the signed
  # Content-Type after signing and the server must notice.
  real_sign = oss2.Auth._sign_request

  def sign_then_tamper(self, req, bucket_name, key):
    real_sign(self, req, bucket_name, key)
    req.headers['Content-Type'] = 'text/evil'

  oss2.Auth._sign_request = sign_then_tamper
  try:
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
      bucket.put_object('k.txt', b'v')
  finally:
    oss2.Auth._sign_request = real_sign


def test_clock_skew(server, name, bucket, monkeypatch):
  monkeypatch.setattr(oss2.utils, 'http_date',
                      lambda timeval=None: 'Mon, 01 Jan 2001 00:00:00 GMT')
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.get_object('k')
  assert (e.value.status, e.value.code) == (403, 'RequestTimeTooSkewed')


@pytest.mark.parametrize('make_auth', [
    lambda: oss2.AuthV2(AK, SK),
    lambda: oss2.AuthV4(AK, SK),
    lambda: oss2.ProviderAuthV4(
        oss2.credentials.StaticCredentialsProvider(AK, SK)),
    lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN),
    lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN, auth_version='v2'),
    lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN, auth_version='v4'),
], ids=['v2', 'v4', 'provider-v4', 'sts-v1', 'sts-v2', 'sts-v4'])
@pytest.mark.parametrize('region', ['cn-hangzhou', 'ap-southeast-1'])
def test_other_signature_versions(server, name, make_auth, region):
  bucket = oss2.Bucket(make_auth(), server.endpoint, name, region=region)
  data = b'signed ' * 100
  bucket.put_object(ODD_KEY, data, headers={'x-oss-meta-a': '1'})
  assert bucket.get_object(ODD_KEY, byte_range=(0, 5)).read() == data[:6]
  assert [o.key for o in oss2.ObjectIteratorV2(bucket, max_keys=1)] == [ODD_KEY]
  assert [o.key for o in oss2.ObjectIterator(bucket, max_keys=1)] == [ODD_KEY]
  upload_id = bucket.init_multipart_upload('mp').upload_id
  part = bucket.upload_part('mp', upload_id, 1, b'p')
  bucket.complete_multipart_upload('mp', upload_id,
                                   [oss2.models.PartInfo(1, part.etag)])
  bucket.batch_delete_objects([ODD_KEY, 'mp'])
  assert server.keys(name) == []


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_sts_token_must_match(server, name, version):
  wrong = oss2.Bucket(oss2.StsAuth(STS_AK, STS_SK, 'forged', auth_version=version),
                      server.endpoint, name, region='cn-hangzhou')
  with pytest.raises(oss2.exceptions.ServerError) as e:
    wrong.put_object('k', b'v')
  assert (e.value.status, e.value.code) == (403, 'InvalidSecurityToken')
  bad_secret = oss2.Bucket(oss2.StsAuth(STS_AK, 'nope', STS_TOKEN, auth_version=version),
                           server.endpoint, name, region='cn-hangzhou')
  with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
    bad_secret.put_object('k', b'v')
  # Without a token the STS key id is useless too (V1 signs no token then).
  tokenless = oss2.Bucket(oss2.Auth(STS_AK, STS_SK), server.endpoint, name)
  with pytest.raises(oss2.exceptions.ServerError) as e:
    tokenless.put_object('k', b'v')
  assert e.value.code == 'InvalidSecurityToken'
  assert server.keys(name) == []


@pytest.mark.parametrize('make_auth', [
    lambda: oss2.Auth(AK, SK), lambda: oss2.AuthV2(AK, SK),
    lambda: oss2.AuthV4(AK, SK), lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN)],
    ids=['v1', 'v2', 'v4', 'sts'])
def test_presigned_urls(server, name, make_auth):
  bucket = oss2.Bucket(make_auth(), server.endpoint, name, region='cn-hangzhou')
  server.put(name, ODD_KEY, b'presigned')
  url = bucket.sign_url('GET', ODD_KEY, 60)
  assert bucket.get_object_with_url(url).read() == b'presigned'
  assert requests.get(url, timeout=10).content == b'presigned'
  tampered = url.replace(oss2.compat.urlquote(ODD_KEY, ''), 'other')
  assert requests.get(tampered, timeout=10).status_code == 403
  put_url = bucket.sign_url('PUT', 'up', 60)
  bucket.put_object_with_url(put_url, b'uploaded')
  assert server.get(name, 'up') == b'uploaded'


def test_expired_presigned_url(server, name, bucket):
  server.put(name, 'k', b'v')
  url = bucket.sign_url('GET', 'k', -10)
  with pytest.raises(oss2.exceptions.AccessDenied):
    bucket.get_object_with_url(url)


# ---- listing -----------------------------------------------------------------

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


def test_list_v1_paging(server, name, bucket, tree):
  assert len(tree) == 25
  seen, marker, pages = [], '', 0
  while True:
    page = bucket.list_objects(marker=marker, max_keys=7)
    assert len(page.object_list) <= 7 and not page.prefix_list
    seen += [o.key for o in page.object_list]
    pages += 1
    if not page.is_truncated:
      break
    assert page.next_marker == page.object_list[-1].key
    marker = page.next_marker
  assert seen == tree and pages == 4
  info = page.object_list[-1]
  assert (info.size, info.etag, info.type, info.storage_class) == (
      len(info.key.encode()), _md5(info.key.encode()), 'Normal', 'Standard')
  assert [o.key for o in oss2.ObjectIterator(bucket, max_keys=7)] == tree
  assert server.requests.count(op='ListObjects') == 8


def test_list_v1_delimiter_and_prefix(server, name, bucket, tree):
  entries, marker = [], ''
  while True:
    page = bucket.list_objects(delimiter='/', marker=marker, max_keys=2)
    assert len(page.object_list) + len(page.prefix_list) <= 2
    entries += [o.key for o in page.object_list] + page.prefix_list
    if not page.is_truncated:
      break
    marker = page.next_marker
  expected = ['d0/', 'd1/', 'd2/', 'e f/'] + [f'top{i}.jpg' for i in range(5)]
  assert sorted(entries) == expected and len(entries) == len(expected)

  d1 = bucket.list_objects(prefix='d1/', delimiter='/')
  assert d1.prefix_list == ['d1/sub/']
  assert [o.key for o in d1.object_list] == [f'd1/y{i}.png' for i in range(3)]
  d2 = bucket.list_objects(prefix='d2/', delimiter='/')
  assert [o.key for o in d2.object_list] == ['d2/', 'd2/z.jpg']
  assert [o.key for o in oss2.ObjectIterator(bucket, prefix='e f/')] == ['e f/ü.jpg']
  iterated = [o.key for o in oss2.ObjectIterator(bucket, delimiter='/', max_keys=3)]
  assert iterated == sorted(expected)
  assert bucket.list_objects(prefix='nothing').object_list == []


def test_list_v2_paging(server, name, bucket, tree):
  seen, token, pages = [], '', 0
  while True:
    page = bucket.list_objects_v2(continuation_token=token, max_keys=7,
                                  fetch_owner=True)
    assert len(page.object_list) <= 7
    assert all(o.owner is not None for o in page.object_list)
    seen += [o.key for o in page.object_list]
    pages += 1
    if not page.is_truncated:
      break
    token = page.next_continuation_token
  assert seen == tree and pages == 4
  assert bucket.list_objects_v2().object_list[0].owner is None
  assert [o.key for o in oss2.ObjectIteratorV2(bucket, max_keys=7)] == tree
  after = bucket.list_objects_v2(start_after='d1/y2.png', max_keys=1000)
  assert [o.key for o in after.object_list] == tree[tree.index('d1/y2.png') + 1:]

  entries = [o.key for o in oss2.ObjectIteratorV2(bucket, delimiter='/', max_keys=2)]
  assert entries == sorted(['d0/', 'd1/', 'd2/', 'e f/']
                           + [f'top{i}.jpg' for i in range(5)])
  sub = bucket.list_objects_v2(prefix='d1/', delimiter='/')
  assert sub.prefix_list == ['d1/sub/'] and len(sub.object_list) == 3

  root = _raw_xml(bucket, {'list-type': '2', 'max-keys': '7', 'delimiter': '/',
                           'prefix': 'd'})
  assert root.findtext('KeyCount') == '3'   # d0/ d1/ d2/ (CommonPrefixes)
  assert root.findtext('IsTruncated') == 'false'
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.list_objects_v2(continuation_token='***')
  assert e.value.code == 'InvalidArgument'
  with pytest.raises(oss2.exceptions.InvalidArgument):
    bucket.list_objects_v2(max_keys=1001)


# ---- delete / copy -----------------------------------------------------------


def test_batch_delete(server, name, bucket, tree):
  doomed = ['d0/img00.jpg', 'e f/ü.jpg', 'never-existed', 'd2/']
  result = bucket.batch_delete_objects(doomed)
  assert sorted(result.deleted_keys) == sorted(doomed)
  assert server.keys(name) == sorted(set(tree) - set(doomed))
  request = server.requests.filter(op='DeleteMultipleObjects')[0]
  assert request.query == {'delete': '', 'encoding-type': 'url'}
  before = len(server.requests)
  with pytest.raises(oss2.exceptions.ClientError):
    bucket.batch_delete_objects([])    # refused by oss2: no request made
  assert len(server.requests) == before


def test_copy_object(server, name, bucket):
  other = name + '-dst'
  server.create_bucket(other)
  dst = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, other)
  bucket.put_object(ODD_KEY, b'source', headers={'x-oss-meta-k': 'v',
                                                 'Content-Type': 'image/png'})
  copied = dst.copy_object(name, ODD_KEY, 'copy/' + ODD_KEY)
  assert copied.etag == _md5(b'source')
  got = dst.get_object('copy/' + ODD_KEY)
  assert got.read() == b'source' and got.content_type == 'image/png'
  assert got.headers['x-oss-meta-k'] == 'v'
  dst.copy_object(name, ODD_KEY, 'replaced', headers={
      'x-oss-metadata-directive': 'REPLACE', 'Content-Type': 'text/plain',
      'x-oss-meta-new': 'n'})
  head = dst.head_object('replaced')
  assert head.content_type == 'text/plain'
  assert 'x-oss-meta-k' not in head.headers and head.headers['x-oss-meta-new'] == 'n'
  with pytest.raises(oss2.exceptions.NoSuchKey):
    dst.copy_object(name, 'missing', 'x')
  with pytest.raises(oss2.exceptions.NoSuchBucket):
    dst.copy_object('no-such-bucket', 'k', 'x')


# ---- multipart ---------------------------------------------------------------


def test_multipart_upload(server, name, bucket):
  parts_data = [b'a' * PART, b'b' * (PART + 7), b'tail']
  upload_id = bucket.init_multipart_upload(ODD_KEY, headers={
      'x-oss-meta-m': '1'}).upload_id
  assert server.uploads(name) == {upload_id: ODD_KEY}
  parts = []
  for number, data in enumerate(parts_data, 1):
    result = bucket.upload_part(ODD_KEY, upload_id, number, data)
    assert result.etag == _md5(data) and result.crc == _crc(data)
    # with part_crc + size oss2 also verifies the completed object's CRC
    parts.append(oss2.models.PartInfo(number, result.etag, size=len(data),
                                      part_crc=result.crc))
  listed = bucket.list_parts(ODD_KEY, upload_id)
  assert [(p.part_number, p.etag, p.size) for p in listed.parts] == [
      (p.part_number, p.etag, p.size) for p in parts]
  assert [p.part_number for p in bucket.list_parts(
      ODD_KEY, upload_id, marker='1', max_parts=1).parts] == [2]

  done = bucket.complete_multipart_upload(ODD_KEY, upload_id, parts)
  whole = b''.join(parts_data)
  expected_etag = hashlib.md5(b''.join(
      hashlib.md5(d).digest() for d in parts_data)).hexdigest().upper() + '-3'
  assert done.etag == expected_etag and done.crc == _crc(whole)
  got = bucket.get_object(ODD_KEY)
  assert got.read() == whole
  assert (got.object_type, got.etag) == ('Multipart', expected_etag)
  assert got.content_type == 'image/jpeg' and got.headers['x-oss-meta-m'] == '1'
  assert server.uploads(name) == {}
  [info] = bucket.list_objects().object_list
  assert (info.etag, info.type, info.size) == (expected_etag, 'Multipart', len(whole))


def test_multipart_upload_part_copy(server, name, bucket):
  source = bytes(range(256)) * 1300    # 332800 bytes: 3 parts >= PART
  bucket.put_object('src/' + ODD_KEY, source)
  upload_id = bucket.init_multipart_upload('joined').upload_id
  ranges = [(0, PART - 1), (PART, 2 * PART - 1), (2 * PART, None)]
  parts = []
  for number, byte_range in enumerate(ranges, 1):
    result = bucket.upload_part_copy(name, 'src/' + ODD_KEY, byte_range,
                                     'joined', upload_id, number)
    parts.append(oss2.models.PartInfo(number, result.etag))
  extra = bucket.upload_part('joined', upload_id, 4, b'+extra')
  parts.append(oss2.models.PartInfo(4, extra.etag))
  bucket.complete_multipart_upload('joined', upload_id, parts)
  assert bucket.get_object('joined').read() == source + b'+extra'
  assert parts[0].etag == _md5(source[:PART])

  # A whole-object part copy (no range) and a range past the end.
  upload_id = bucket.init_multipart_upload('whole').upload_id
  result = bucket.upload_part_copy(name, 'src/' + ODD_KEY, None, 'whole',
                                   upload_id, 1)
  assert result.etag == _md5(source)
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.upload_part_copy(name, 'src/' + ODD_KEY, (len(source), None),
                            'whole', upload_id, 2)
  assert e.value.status == 416
  bucket.abort_multipart_upload('whole', upload_id)


def test_multipart_validation(server, name, bucket):
  upload_id = bucket.init_multipart_upload('mp').upload_id
  small = bucket.upload_part('mp', upload_id, 1, b'too small')
  last = bucket.upload_part('mp', upload_id, 2, b'last')
  P = oss2.models.PartInfo
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.complete_multipart_upload('mp', upload_id,
                                     [P(1, small.etag), P(2, last.etag)])
  assert (e.value.status, e.value.code) == (400, 'EntityTooSmall')
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.complete_multipart_upload('mp', upload_id, [P(1, last.etag)])
  assert e.value.code == 'InvalidPart'
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.complete_multipart_upload('mp', upload_id, [P(3, last.etag)])
  assert e.value.code == 'InvalidPart'
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.complete_multipart_upload('mp', upload_id,
                                     [P(2, last.etag), P(2, last.etag)])
  assert e.value.code == 'InvalidPartOrder'
  with pytest.raises(oss2.exceptions.InvalidArgument):
    bucket.upload_part('mp', upload_id, 0, b'x')
  with pytest.raises(oss2.exceptions.NoSuchUpload):
    bucket.upload_part('other-key', upload_id, 1, b'x')
  assert server.keys(name) == []   # nothing completed so far

  # x-oss-complete-all: every uploaded part, in order (part 1 replaced).
  bucket.upload_part('mp', upload_id, 1, b'1' * PART)
  bucket.complete_multipart_upload('mp', upload_id, None,
                                   headers={'x-oss-complete-all': 'yes'})
  assert server.get(name, 'mp') == b'1' * PART + b'last'
  with pytest.raises(oss2.exceptions.NoSuchUpload):
    bucket.complete_multipart_upload('mp', upload_id, [P(1, last.etag)])

  upload_id = bucket.init_multipart_upload('aborted').upload_id
  listed = bucket.list_multipart_uploads()
  assert [(u.key, u.upload_id) for u in listed.upload_list] == [
      ('aborted', upload_id)]
  bucket.abort_multipart_upload('aborted', upload_id)
  assert server.uploads(name) == {}
  with pytest.raises(oss2.exceptions.NoSuchUpload):
    bucket.upload_part('aborted', upload_id, 1, b'x')
  with pytest.raises(oss2.exceptions.NoSuchUpload):
    bucket.abort_multipart_upload('aborted', upload_id)


def test_bucket_operations(server):
  new = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, 'made-by-api')
  new.create_bucket()
  new.put_object('k', b'v')
  names = [b.name for b in oss2.Service(oss2.Auth(AK, SK), server.endpoint)
           .list_buckets(prefix='made-').buckets]
  assert names == ['made-by-api']
  with pytest.raises(oss2.exceptions.BucketNotEmpty):
    new.delete_bucket()
  new.delete_object('k')
  new.delete_bucket()
  with pytest.raises(oss2.exceptions.NoSuchBucket):
    new.get_object('k')


def test_unimplemented_subresource_is_an_error(server, name, bucket):
  server.put(name, 'k', b'v')
  with pytest.raises(oss2.exceptions.NotImplemented):
    bucket.get_object_acl('k')


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
