"""The fake OSS server through oss2: multipart uploads (parts, part copy,
validation), bucket operations and unimplemented subresources."""
import hashlib

import oss2
import pytest

# The fixtures too: pytest finds them among the module's globals.
from tests.oss_server_helpers import (
    AK, ODD_KEY, PART, SK, _crc, _md5, bucket, name, server)


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
