"""Tests of tests/fakes/oss_server.py, driven through the real oss2 client over HTTP:
objects, ranges, listing, delete and copy (multipart, authentication and
faults: the other tests/test_oss_server_*.py files).

Whatever passes in these files is what the oss:// filesystem tests can rely
on: the server speaks the OSS protocol the way oss2 2.19 expects it
(signatures, XML, headers, error codes) and its fault knobs are visible from
the client.
"""
import base64
import hashlib
import time
import xml.etree.ElementTree as ET

import oss2
import pytest

# The fixtures too: pytest finds them among the module's globals.
from tests.oss_server_helpers import (
    AK, ODD_KEY, PART, SK, _crc, _md5, bucket, name, server, tree)


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


# ---- listing -----------------------------------------------------------------


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
