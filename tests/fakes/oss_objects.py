"""Object operations of the fake OSS server: single objects (ranges, copies,
metadata) and multipart uploads (parts, part copies, completion)."""
import base64
import hashlib
import re
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

from tests.fakes.oss_protocol import (OssError, Reply, StoredObject,
                                      Unsatisfiable, Upload, crc64, http_date,
                                      iso8601, md5_hex, xml_document)


class ObjectOpsMixin:
  """OssServer's _op_* handlers for objects and multipart uploads."""

  @staticmethod
  def _user_meta(headers):
    return {k.lower(): v for k, v in headers.items()
            if k.lower().startswith('x-oss-meta-')}

  @staticmethod
  def _object_headers(obj):
    return ([('Content-Type', obj.content_type),
             ('ETag', f'"{obj.etag}"'),
             ('Last-Modified', http_date(obj.last_modified)),
             ('Accept-Ranges', 'bytes'),
             ('x-oss-object-type', obj.object_type),
             ('x-oss-storage-class', 'Standard'),
             # Whole-object CRC even for ranged GETs, as OSS does; oss2 only
             # compares it after full reads (get_object_to_file without a
             # range, resumable downloads combine part CRCs against it).
             ('x-oss-hash-crc64ecma', str(obj.crc))]
            + sorted(obj.meta.items()))

  def _get_existing(self, bucket, key):
    with self._lock:
      obj = self._bucket(bucket).objects.get(key)
    if obj is None:
      raise OssError(404, 'NoSuchKey', 'The specified key does not exist.',
                     Key=key)
    return obj

  def _copy_source(self, headers):
    """The object named by x-oss-copy-source: '/bucket/<urlquoted key>'."""
    source = headers['x-oss-copy-source'].partition('?')[0]
    src_bucket, _, src_key = urllib.parse.unquote(source).lstrip('/').partition('/')
    if not src_bucket or not src_key:
      raise OssError(400, 'InvalidArgument', 'Copy Source must mention the '
                     'source bucket and key: /sourcebucket/sourcekey.')
    return self._get_existing(src_bucket, src_key)

  @staticmethod
  def _parse_range(value, size):
    """(start, end) inclusive, or None for a malformed header (ignored, as
    HTTP says); raises Unsatisfiable (with the clamped range, if any)."""
    m = re.fullmatch(r'\s*bytes=(\d*)-(\d*)\s*', value or '')
    if not m or (not m[1] and not m[2]):
      return None
    if not m[1]:   # suffix range: the last N bytes
      if int(m[2]) == 0 or size == 0:
        raise Unsatisfiable(None)
      return max(0, size - int(m[2])), size - 1
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if start > end or start >= size:
      raise Unsatisfiable(None)
    if end >= size:
      raise Unsatisfiable((start, size - 1))
    return start, end

  def _range(self, value, size, headers):
    standard = (headers.get('x-oss-range-behavior', '').lower() == 'standard'
                or self.range_behavior == 'standard')
    try:
      return self._parse_range(value, size)
    except Unsatisfiable as e:
      if not standard:
        return None          # legacy OSS: whole object, 200
      if e.clamped:
        return e.clamped     # standard: end past the object is clamped
      raise OssError(416, 'InvalidRange', 'The requested range cannot be '
                     'satisfied.', RangeRequested=value,
                     ActualObjectSize=size) from None

  def _op_PutObject(self, bucket, key, params, headers, body):
    md5 = headers.get('Content-MD5')
    if md5 is not None and \
        md5 != base64.b64encode(hashlib.md5(body).digest()).decode('ascii'):
      raise OssError(400, 'InvalidDigest', 'The Content-MD5 you specified was '
                     'invalid.')
    obj = StoredObject(body, md5_hex(body), headers.get('Content-Type'),
                  self._user_meta(headers), 'Normal')
    with self._lock:
      objects = self._bucket(bucket).objects
      if headers.get('x-oss-forbid-overwrite', '').lower() == 'true' and \
          key in objects:
        raise OssError(409, 'FileAlreadyExists', 'The object you specified '
                       'already exists and can not be overwritten.')
      objects[key] = obj
    return Reply(200, [('ETag', f'"{obj.etag}"'),
                        ('x-oss-hash-crc64ecma', str(obj.crc)),
                        ('Content-MD5', base64.b64encode(
                            hashlib.md5(body).digest()).decode('ascii'))])

  def _op_GetObject(self, bucket, key, params, headers, body):
    obj = self._get_existing(bucket, key)
    size = len(obj.data)
    reply_headers = self._object_headers(obj)
    rng = None
    if 'Range' in headers:
      rng = self._range(headers['Range'], size, headers)
    # response-* parameters override the stored headers (signed URLs use them)
    for param, header in (('response-content-type', 'Content-Type'),
                          ('response-content-disposition', 'Content-Disposition'),
                          ('response-content-encoding', 'Content-Encoding'),
                          ('response-content-language', 'Content-Language'),
                          ('response-cache-control', 'Cache-Control'),
                          ('response-expires', 'Expires')):
      if param in params:
        reply_headers = [h for h in reply_headers if h[0] != header]
        reply_headers.append((header, params[param]))
    if rng is None:
      return Reply(200, reply_headers, obj.data)
    start, end = rng
    reply_headers.append(('Content-Range', f'bytes {start}-{end}/{size}'))
    return Reply(206, reply_headers, obj.data[start:end + 1])

  def _op_HeadObject(self, bucket, key, params, headers, body):
    obj = self._get_existing(bucket, key)
    # The reply announces Content-Length = object size but sends no body.
    return Reply(200, self._object_headers(obj), obj.data)

  def _op_GetObjectMeta(self, bucket, key, params, headers, body):
    obj = self._get_existing(bucket, key)
    reply_headers = [('ETag', f'"{obj.etag}"'),
                     ('Last-Modified', http_date(obj.last_modified)),
                     ('x-oss-hash-crc64ecma', str(obj.crc))]
    # oss2 2.19 sends HEAD ?objectMeta: Content-Length is the object size
    # (the body is never sent); _process empties it for a GET ?objectMeta.
    return Reply(200, reply_headers, obj.data)

  def _op_DeleteObject(self, bucket, key, params, headers, body):
    with self._lock:
      self._bucket(bucket).objects.pop(key, None)   # idempotent, as OSS
    return Reply(204)

  def _op_CopyObject(self, bucket, key, params, headers, body):
    src = self._copy_source(headers)
    with self._lock:
      self._bucket(bucket)
    if headers.get('x-oss-metadata-directive', 'COPY').upper() == 'REPLACE':
      content_type, meta = headers.get('Content-Type'), self._user_meta(headers)
    else:
      content_type, meta = src.content_type, src.meta
    obj = StoredObject(src.data, src.etag, content_type, meta, src.object_type)
    with self._lock:
      self._bucket(bucket).objects[key] = obj
    return Reply(200, [('Content-Type', 'application/xml'),
                        ('ETag', f'"{obj.etag}"'),
                        ('x-oss-hash-crc64ecma', str(obj.crc))],
                  xml_document('CopyObjectResult',
                       [('ETag', f'"{obj.etag}"'),
                        ('LastModified', iso8601(obj.last_modified))]))

  # ---- multipart -----------------------------------------------------------

  def _upload(self, bucket, key, params):
    with self._lock:
      upload = self._bucket(bucket).uploads.get(params.get('uploadId'))
    if upload is None or upload.key != key:
      raise OssError(404, 'NoSuchUpload', 'The specified upload does not '
                     'exist. The upload ID may be invalid, or the upload may '
                     'have been aborted or completed.',
                     UploadId=params.get('uploadId'))
    return upload

  @staticmethod
  def _part_number(params):
    raw = params.get('partNumber', '')
    if not raw.isdigit() or not 1 <= int(raw) <= 10000:
      raise OssError(400, 'InvalidArgument', 'Part number must be an integer '
                     'between 1 and 10000, inclusive.',
                     ArgumentName='partNumber', ArgumentValue=raw)
    return int(raw)

  def _op_InitiateMultipartUpload(self, bucket, key, params, headers, body):
    with self._lock:
      b = self._bucket(bucket)
      self._upload_counter += 1
      # Upload ids sort by creation, like the ones OSS hands out.
      upload_id = f'{self._upload_counter:012X}{uuid.uuid4().hex[:20].upper()}'
      b.uploads[upload_id] = Upload(upload_id, key, headers.get('Content-Type'),
                                     self._user_meta(headers))
    enc = self._encoder(params)
    items = [('Bucket', bucket), ('Key', enc(key)), ('UploadId', upload_id)]
    if params.get('encoding-type') == 'url':
      items.append(('EncodingType', 'url'))
    return Reply(200, [('Content-Type', 'application/xml')],
                  xml_document('InitiateMultipartUploadResult', items))

  def _store_part(self, upload, number, data):
    etag = md5_hex(data)
    with self._lock:
      upload.parts[number] = (data, etag, int(time.time()))
    return etag

  def _op_UploadPart(self, bucket, key, params, headers, body):
    number = self._part_number(params)
    upload = self._upload(bucket, key, params)
    md5 = headers.get('Content-MD5')
    if md5 is not None and \
        md5 != base64.b64encode(hashlib.md5(body).digest()).decode('ascii'):
      raise OssError(400, 'InvalidDigest', 'The Content-MD5 you specified was '
                     'invalid.')
    etag = self._store_part(upload, number, body)
    return Reply(200, [('ETag', f'"{etag}"'),
                        ('x-oss-hash-crc64ecma', str(crc64(body)))])

  def _op_UploadPartCopy(self, bucket, key, params, headers, body):
    number = self._part_number(params)
    upload = self._upload(bucket, key, params)
    src = self._copy_source(headers)
    data = src.data
    if 'x-oss-copy-source-range' in headers:
      rng = self._parse_copy_range(headers['x-oss-copy-source-range'], len(data))
      if rng is not None:
        data = data[rng[0]:rng[1] + 1]
    etag = self._store_part(upload, number, data)
    return Reply(200, [('Content-Type', 'application/xml'),
                        ('ETag', f'"{etag}"'),
                        ('x-oss-hash-crc64ecma', str(crc64(data)))],
                  xml_document('CopyPartResult',
                       [('LastModified', iso8601(time.time())),
                        ('ETag', f'"{etag}"')]))

  def _parse_copy_range(self, value, size):
    try:
      return self._parse_range(value, size)
    except Unsatisfiable as e:
      if e.clamped:
        return e.clamped
      raise OssError(416, 'InvalidRange', 'The requested range cannot be '
                     'satisfied.', RangeRequested=value,
                     ActualObjectSize=size) from None

  def _op_CompleteMultipartUpload(self, bucket, key, params, headers, body):
    upload = self._upload(bucket, key, params)
    with self._lock:
      uploaded = dict(upload.parts)
    if headers.get('x-oss-complete-all', '').lower() == 'yes':
      if body:
        raise OssError(400, 'InvalidArgument', 'Should not specify both '
                       'complete-all header and body.')
      wanted = [(n, uploaded[n][1]) for n in sorted(uploaded)]
    else:
      try:
        root = ET.fromstring(body)
        wanted = [(int(p.findtext('PartNumber')),
                   (p.findtext('ETag') or '').strip().strip('"').upper())
                  for p in root.findall('Part')]
      except (ET.ParseError, TypeError, ValueError):
        raise OssError(400, 'MalformedXML', 'The XML you provided was not '
                       'well-formed or did not validate.') from None
      if root.tag != 'CompleteMultipartUpload':
        raise OssError(400, 'MalformedXML', 'Root element must be '
                       'CompleteMultipartUpload.')
    if not wanted:
      raise OssError(400, 'MalformedXML', 'The XML you provided was not '
                     'well-formed or did not validate against our schema.')
    numbers = [n for n, _ in wanted]
    if numbers != sorted(set(numbers)):
      raise OssError(400, 'InvalidPartOrder', 'The list of parts was not in '
                     'ascending order. Parts must be ordered by part number.')
    for i, (n, etag) in enumerate(wanted):
      if n not in uploaded or uploaded[n][1] != etag:
        raise OssError(400, 'InvalidPart', 'One or more of the specified '
                       'parts could not be found or the specified entity tag '
                       'might not have matched the part\'s entity tag.',
                       PartNumber=n, ETag=etag)
      if i < len(wanted) - 1 and len(uploaded[n][0]) < self.min_part_size:
        raise OssError(400, 'EntityTooSmall', 'Your proposed upload is smaller '
                       'than the minimum allowed size.', PartNumber=n,
                       MinSizeAllowed=self.min_part_size)
    data = b''.join(uploaded[n][0] for n in numbers)
    # OSS/S3 multipart ETag: MD5 of the concatenated binary part MD5s, '-N'.
    etag = hashlib.md5(b''.join(bytes.fromhex(uploaded[n][1])
                                for n in numbers)).hexdigest().upper()
    etag = f'{etag}-{len(numbers)}'
    obj = StoredObject(data, etag, upload.content_type, upload.meta, 'Multipart')
    with self._lock:
      b = self._bucket(bucket)
      if b.uploads.pop(upload.upload_id, None) is None:
        raise OssError(404, 'NoSuchUpload', 'The specified upload does not '
                       'exist.', UploadId=upload.upload_id)
      b.objects[key] = obj
    enc = self._encoder(params)
    items = [('EncodingType', 'url')] if params.get('encoding-type') == 'url' else []
    items += [('Location', f'{self.endpoint}/{bucket}/{urllib.parse.quote(key)}'),
              ('Bucket', bucket), ('Key', enc(key)), ('ETag', f'"{etag}"')]
    return Reply(200, [('Content-Type', 'application/xml'),
                        ('ETag', f'"{etag}"'),
                        ('x-oss-hash-crc64ecma', str(obj.crc))],
                  xml_document('CompleteMultipartUploadResult', items))

  def _op_AbortMultipartUpload(self, bucket, key, params, headers, body):
    upload = self._upload(bucket, key, params)
    with self._lock:
      self._bucket(bucket).uploads.pop(upload.upload_id, None)
    return Reply(204)

  def _op_ListParts(self, bucket, key, params, headers, body):
    upload = self._upload(bucket, key, params)
    raw_marker = params.get('part-number-marker', '') or '0'
    if not raw_marker.isdigit():
      raise OssError(400, 'InvalidArgument', 'Invalid part-number-marker.')
    marker = int(raw_marker)
    max_parts = self._max(params, 'max-parts', 1000, 1000)
    with self._lock:
      parts = sorted((n, p) for n, p in upload.parts.items() if n > marker)
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    items = [('Bucket', bucket), ('Key', key), ('UploadId', upload.upload_id),
             ('PartNumberMarker', marker),
             ('NextPartNumberMarker', parts[-1][0] if parts else marker),
             ('MaxParts', max_parts),
             ('IsTruncated', 'true' if truncated else 'false')]
    items += [('Part', [('PartNumber', n), ('LastModified', iso8601(t)),
                        ('ETag', f'"{etag}"'), ('HashCrc64ecma', crc64(data)),
                        ('Size', len(data))])
              for n, (data, etag, t) in parts]
    return Reply(200, [('Content-Type', 'application/xml')],
                  xml_document('ListPartsResult', items))

