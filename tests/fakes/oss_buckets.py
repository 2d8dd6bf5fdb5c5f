"""Service and bucket operations of the fake OSS server: buckets, listings
(v1 and v2, url-encoded), batch deletes and multipart upload listings."""
import base64
import hashlib
import urllib.parse
import xml.etree.ElementTree as ET

from tests.fakes.oss_protocol import (OWNER_ID, OssError, Reply, iso8601,
                                      xml_document)


class BucketOpsMixin:
  """OssServer's _op_* handlers for the service and buckets."""

  @staticmethod
  def _encoder(params):
    """Listing values go through quote() when encoding-type=url (oss2 then
    unquotes them), so keys with any character survive the XML."""
    if params.get('encoding-type') == 'url':
      return lambda s: urllib.parse.quote(s, safe='/')
    return lambda s: s

  @staticmethod
  def _max(params, name, default, limit):
    raw = params.get(name, '')
    if raw == '':
      return default
    if not raw.isdigit() or not 1 <= int(raw) <= limit:
      raise OssError(400, 'InvalidArgument',
                     f'Argument {name} must be an integer in [1, {limit}].',
                     ArgumentName=name, ArgumentValue=raw)
    return int(raw)

  # ---- service / bucket operations --------------------------------------

  def _op_ListBuckets(self, bucket, key, params, headers, body):
    prefix = params.get('prefix', '')   # paging params are ignored
    with self._lock:
      buckets = sorted((b for b in self._buckets.values()
                        if b.name.startswith(prefix)), key=lambda b: b.name)
    host = self.endpoint.split('//', 1)[1]
    return Reply(200, [('Content-Type', 'application/xml')], xml_document(
        'ListAllMyBucketsResult',
        [('Owner', [('ID', OWNER_ID), ('DisplayName', OWNER_ID)]),
         ('Buckets', [('Bucket', [
             ('CreationDate', iso8601(b.created)),
             ('ExtranetEndpoint', host), ('IntranetEndpoint', host),
             ('Location', 'oss-local'), ('Name', b.name),
             ('Region', 'local'), ('StorageClass', 'Standard')])
                      for b in buckets])]))

  def _op_PutBucket(self, bucket, key, params, headers, body):
    self.create_bucket(bucket)   # OSS: re-creating your own bucket is a no-op
    return Reply(200, [('Location', '/' + bucket)])

  def _op_DeleteBucket(self, bucket, key, params, headers, body):
    with self._lock:
      b = self._bucket(bucket)
      if b.objects or b.uploads:
        raise OssError(409, 'BucketNotEmpty', 'The bucket you tried to delete '
                       'is not empty.', BucketName=bucket)
      del self._buckets[bucket]
    return Reply(204)

  def _listing(self, bucket, prefix, delimiter, marker, max_keys):
    """Shared v1/v2 listing: keys > marker with the prefix, rolled up into
    common prefixes at the delimiter; max_keys counts keys + prefixes."""
    with self._lock:
      objects = self._bucket(bucket).objects
      keys = sorted(k for k in objects if k.startswith(prefix) and k > marker)
      entries = [(k, objects[k]) for k in keys]
    contents, prefixes, last, truncated = [], [], None, False
    for k, obj in entries:
      if delimiter:
        i = k.find(delimiter, len(prefix))
        if i >= 0:
          common = k[:i + len(delimiter)]
          # Keys of one common prefix are contiguous in sorted order; a
          # marker inside it means the prefix was returned on an earlier page.
          if (prefixes and prefixes[-1] == common) or marker.startswith(common):
            continue
          if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
          prefixes.append(common)
          last = common
          continue
      if len(contents) + len(prefixes) >= max_keys:
        truncated = True
        break
      contents.append((k, obj))
      last = k
    return contents, prefixes, (last if truncated else None)

  @staticmethod
  def _contents_xml(contents, enc, owner):
    return [('Contents', [
        ('Key', enc(k)), ('LastModified', iso8601(obj.last_modified)),
        ('ETag', f'"{obj.etag}"'), ('Type', obj.object_type),
        ('Size', len(obj.data)), ('StorageClass', 'Standard')]
             + ([('Owner', [('ID', OWNER_ID), ('DisplayName', OWNER_ID)])]
                if owner else []))
            for k, obj in contents]

  def _op_ListObjects(self, bucket, key, params, headers, body):
    prefix, delimiter = params.get('prefix', ''), params.get('delimiter', '')
    marker = params.get('marker', '')
    max_keys = self._max(params, 'max-keys', 100, 1000)
    contents, prefixes, next_marker = self._listing(
        bucket, prefix, delimiter, marker, max_keys)
    enc = self._encoder(params)
    items = [('Name', bucket), ('Prefix', enc(prefix)),
             ('Marker', enc(marker)), ('MaxKeys', max_keys),
             ('Delimiter', enc(delimiter))]
    if params.get('encoding-type') == 'url':
      items.append(('EncodingType', 'url'))
    items.append(('IsTruncated', 'true' if next_marker is not None else 'false'))
    if next_marker is not None:
      items.append(('NextMarker', enc(next_marker)))
    items += self._contents_xml(contents, enc, owner=True)
    items += [('CommonPrefixes', [('Prefix', enc(p))]) for p in prefixes]
    return Reply(200, [('Content-Type', 'application/xml')],
                  xml_document('ListBucketResult', items))

  def _op_ListObjectsV2(self, bucket, key, params, headers, body):
    prefix, delimiter = params.get('prefix', ''), params.get('delimiter', '')
    token = params.get('continuation-token', '')
    start_after = params.get('start-after', '')
    max_keys = self._max(params, 'max-keys', 100, 1000)
    if token:
      # Tokens are opaque to clients; ours is the base64 of the last entry.
      try:
        marker = base64.b64decode(token.encode('ascii'), altchars=b'-_',
                                  validate=True).decode('utf-8')
      except (ValueError, UnicodeError):   # binascii.Error is a ValueError
        raise OssError(400, 'InvalidArgument', 'Invalid continuation-token.',
                       ArgumentName='continuation-token') from None
    else:
      marker = start_after
    contents, prefixes, next_marker = self._listing(
        bucket, prefix, delimiter, marker, max_keys)
    enc = self._encoder(params)
    items = [('Name', bucket), ('Prefix', enc(prefix))]
    if start_after:
      items.append(('StartAfter', enc(start_after)))
    if token:
      items.append(('ContinuationToken', token))
    items += [('MaxKeys', max_keys), ('Delimiter', enc(delimiter))]
    if params.get('encoding-type') == 'url':
      items.append(('EncodingType', 'url'))
    items.append(('IsTruncated', 'true' if next_marker is not None else 'false'))
    if next_marker is not None:
      items.append(('NextContinuationToken', base64.urlsafe_b64encode(
          next_marker.encode('utf-8')).decode('ascii')))
    items.append(('KeyCount', len(contents) + len(prefixes)))
    items += self._contents_xml(contents, enc,
                                owner=params.get('fetch-owner') == 'true')
    items += [('CommonPrefixes', [('Prefix', enc(p))]) for p in prefixes]
    return Reply(200, [('Content-Type', 'application/xml')],
                  xml_document('ListBucketResult', items))

  def _op_DeleteMultipleObjects(self, bucket, key, params, headers, body):
    md5 = headers.get('Content-MD5')
    if md5 is None:
      raise OssError(400, 'InvalidDigest', 'Missing Content-MD5 header.')
    if md5 != base64.b64encode(hashlib.md5(body).digest()).decode('ascii'):
      raise OssError(400, 'InvalidDigest', 'The Content-MD5 you specified was '
                     'invalid.')
    try:
      root = ET.fromstring(body)
      quiet = (root.findtext('Quiet') or 'false').lower() == 'true'
      keys = [node.findtext('Key') for node in root.findall('Object')]
    except ET.ParseError:
      raise OssError(400, 'MalformedXML', 'The XML you provided was not '
                     'well-formed.') from None
    if root.tag != 'Delete' or not keys or len(keys) > 1000 or None in keys:
      raise OssError(400, 'MalformedXML', 'The XML you provided was not '
                     'well-formed or did not validate.')
    with self._lock:
      objects = self._bucket(bucket).objects
      for k in keys:
        objects.pop(k, None)   # OSS reports missing keys as deleted too
    enc = self._encoder(params)
    items = [('EncodingType', 'url')] if params.get('encoding-type') == 'url' else []
    if not quiet:
      items += [('Deleted', [('Key', enc(k))]) for k in keys]
    return Reply(200, [('Content-Type', 'application/xml')],
                  xml_document('DeleteResult', items))

  def _op_ListMultipartUploads(self, bucket, key, params, headers, body):
    prefix = params.get('prefix', '')
    key_marker = params.get('key-marker', '')
    id_marker = params.get('upload-id-marker', '')
    max_uploads = self._max(params, 'max-uploads', 1000, 1000)
    with self._lock:
      uploads = sorted((u.key, u.upload_id, u.initiated)
                       for u in self._bucket(bucket).uploads.values()
                       if u.key.startswith(prefix))
    uploads = [u for u in uploads
               if u[0] > key_marker or (id_marker and u[0] == key_marker
                                        and u[1] > id_marker)]
    truncated = len(uploads) > max_uploads
    uploads = uploads[:max_uploads]
    enc = self._encoder(params)
    items = [('Bucket', bucket), ('KeyMarker', enc(key_marker)),
             ('UploadIdMarker', id_marker),
             ('NextKeyMarker', enc(uploads[-1][0]) if truncated else ''),
             ('NextUploadIdMarker', uploads[-1][1] if truncated else ''),
             ('Delimiter', ''), ('Prefix', enc(prefix)),
             ('MaxUploads', max_uploads),
             ('IsTruncated', 'true' if truncated else 'false')]
    if params.get('encoding-type') == 'url':
      items.append(('EncodingType', 'url'))
    items += [('Upload', [('Key', enc(k)), ('UploadId', uid),
                          ('StorageClass', 'Standard'),
                          ('Initiated', iso8601(t))])
              for k, uid, t in uploads]
    return Reply(200, [('Content-Type', 'application/xml')],
                  xml_document('ListMultipartUploadsResult', items))
