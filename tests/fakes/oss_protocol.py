"""The OSS wire protocol as the fake server speaks it: the sub-resources
oss2 signs, errors, the request log, stored objects, and the encodings of
dates, URIs and XML bodies."""
import collections
import email.utils
import hashlib
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

from oss2.utils import Crc64  # same polynomial/reflection/xorout as oss2 checks

# Sub-resources oss2's V1 signer puts into the canonicalized resource
# (copied from oss2.auth.ProviderAuth._subresource_key_set, oss2 2.19.1).
# The server must use the same set or V1 signatures of e.g. list_objects_v2
# ('continuation-token') would not verify.
V1_SUBRESOURCES = frozenset([
    'response-content-type', 'response-content-language',
    'response-cache-control', 'logging', 'response-content-encoding',
    'acl', 'uploadId', 'uploads', 'partNumber', 'group', 'link',
    'delete', 'website', 'location', 'objectInfo', 'objectMeta',
    'response-expires', 'response-content-disposition', 'cors', 'lifecycle',
    'restore', 'qos', 'referer', 'stat', 'bucketInfo', 'append', 'position',
    'security-token', 'live', 'comp', 'status', 'vod', 'startTime', 'endTime',
    'x-oss-process', 'symlink', 'callback', 'callback-var', 'tagging',
    'encryption', 'versions', 'versioning', 'versionId', 'policy',
    'requestPayment', 'x-oss-traffic-limit', 'qosInfo', 'asyncFetch',
    'x-oss-request-payer', 'sequential', 'inventory', 'inventoryId',
    'continuation-token', 'worm', 'wormId', 'wormExtend', 'replication',
    'replicationLocation', 'replicationProgress', 'transferAcceleration',
    'cname', 'metaQuery', 'x-oss-ac-source-ip', 'x-oss-ac-subnet-mask',
    'x-oss-ac-vpc-id', 'x-oss-ac-forward-allow', 'resourceGroup', 'style',
    'styleName', 'x-oss-async-process', 'regionList',
    'x-oss-write-get-object-response', 'bucketArchiveDirectRead',
    'httpsConfig', 'redundancyTransition', 'x-oss-target-redundancy-type',
    'x-oss-redundancy-transition-taskid', 'accessPoint', 'accessPointPolicy',
    'publicAccessBlock', 'x-oss-access-point-name', 'requesterQosInfo',
    'qosRequester', 'resourcePoolInfo', 'resourcePool', 'resourcePoolBuckets'])

# Sub-resources this server understands; any other one in a request gets
# 400 NotImplemented instead of being silently treated as a plain GET/PUT.
HANDLED_SUBRESOURCES = frozenset([
    'uploads', 'uploadId', 'partNumber', 'delete', 'objectMeta',
    'continuation-token', 'security-token', 'response-content-type',
    'response-content-language', 'response-cache-control',
    'response-content-encoding', 'response-expires',
    'response-content-disposition'])


OWNER_ID = '1234567890123456'


class OssError(Exception):
  """An OSS error reply: HTTP status + <Code>/<Message> (+ extra elements)."""

  def __init__(self, status, code, message, **extra):
    super().__init__(f'{status} {code}: {message}')
    self.status, self.code, self.message, self.extra = (
        status, code, message, extra)


class RequestRecord(
    collections.namedtuple('RequestRecord', 'method bucket key query')):
  """One received request: (method, bucket, key, query).

  Compares/unpacks as that 4-tuple; `query` is a dict of decoded query
  parameters ('' for valueless ones such as 'uploads').  Extra attributes,
  filled in while the request is handled: `op` (OSS operation name such as
  'GetObject', 'PutObject', 'ListObjects', 'UploadPart'...; None if the
  request never got that far), `status` (HTTP status sent, None until the
  reply is sent), `fault` (None, 'error' or 'reset') and `headers` (dict of
  the request headers, names lower-cased)."""

  def __new__(cls, method, bucket, key, query):
    self = super().__new__(cls, method, bucket, key, query)
    self.op = self.status = self.fault = None
    self.headers = {}
    return self


class Reply:
  """What a request is answered with."""

  def __init__(self, status=200, headers=None, body=b''):
    self.status = status
    self.headers = list(headers or [])
    self.body = body


class RequestLog:
  """Thread-safe log of RequestRecord, in arrival order."""

  def __init__(self):
    self._lock = threading.Lock()
    self._records = []

  def _add(self, record):
    with self._lock:
      self._records.append(record)

  def snapshot(self):
    with self._lock:
      return list(self._records)

  def __iter__(self):
    return iter(self.snapshot())

  def __len__(self):
    with self._lock:
      return len(self._records)

  def __getitem__(self, i):
    with self._lock:
      return self._records[i]

  def clear(self):
    with self._lock:
      self._records.clear()

  def filter(self, method=None, bucket=None, key=None, op=None, status=None):
    """Records matching every given (non-None) field."""
    return [r for r in self.snapshot()
            if (method is None or r.method == method)
            and (bucket is None or r.bucket == bucket)
            and (key is None or r.key == key)
            and (op is None or r.op == op)
            and (status is None or r.status == status)]

  def count(self, **kwargs):
    return len(self.filter(**kwargs))


class StoredObject:
  __slots__ = ('data', 'etag', 'last_modified', 'content_type', 'meta',
               'object_type', 'crc')

  def __init__(self, data, etag, content_type, meta, object_type):
    self.data = data
    self.etag = etag                          # upper-case hex, no quotes
    self.last_modified = int(time.time())     # HTTP dates have 1 s resolution
    self.content_type = content_type or 'application/octet-stream'
    self.meta = dict(meta)                    # {'x-oss-meta-foo': 'bar'}
    self.object_type = object_type            # 'Normal' | 'Multipart'
    self.crc = crc64(data)


class Upload:
  """An in-progress multipart upload."""

  def __init__(self, upload_id, key, content_type, meta):
    self.upload_id, self.key = upload_id, key
    self.content_type, self.meta = content_type, meta
    self.initiated = int(time.time())
    self.parts = {}   # part number -> (data, md5 upper hex, last_modified)


class Bucket:

  def __init__(self, name):
    self.name = name
    self.created = int(time.time())
    self.objects = {}   # key (str) -> StoredObject
    self.uploads = {}   # upload id -> Upload


def crc64(data):
  crc = Crc64()
  crc.update(data)
  return crc.crc


def md5_hex(data):
  # OSS ETags are upper-case hex MD5s (e.g. "D41D8CD98F00B204E9800998ECF8427E").
  return hashlib.md5(data).hexdigest().upper()


def http_date(t):
  return email.utils.formatdate(t, usegmt=True)


def iso8601(t):
  # oss2's iso8601_to_unixtime insists on the '.000Z' suffix.
  return time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(t))


def uri_encode(text, keep_slash=False):
  """oss2's v2_uri_encode / ProviderAuthV4.__v4_uri_encode: RFC 3986
  unreserved characters stay, every other UTF-8 byte becomes %XX."""
  return urllib.parse.quote(text.encode('utf-8'),
                            safe='/~' if keep_slash else '~')


def canon_query(params):
  """V2/V4 canonical query: every parameter, both sides encoded, sorted by
  the encoded name, valueless ones as bare names."""
  enc = sorted((uri_encode(k), uri_encode(v)) for k, v in params.items())
  return '&'.join(k + '=' + v if v else k for k, v in enc)


def xml_document(root_tag, children):
  """Builds an XML document from a nested list of (tag, text-or-list)."""
  def add(parent, items):
    for tag, value in items:
      node = ET.SubElement(parent, tag)
      if isinstance(value, list):
        add(node, value)
      elif value is not None:
        node.text = str(value)
  root = ET.Element(root_tag)
  add(root, children)
  return ET.tostring(root, encoding='utf-8', xml_declaration=True)


class Unsatisfiable(Exception):
  """A Range outside the object; `clamped` is the usable part, if any."""

  def __init__(self, clamped):
    super().__init__(clamped)
    self.clamped = clamped

