"""A local, in-memory, OSS-compatible HTTP server for tests.

The real Alibaba Cloud OSS cannot be reached from the test machines, so this
module serves the subset of the OSS REST API that `oss2.Bucket` uses for
object I/O, over real HTTP on 127.0.0.1, to the *real* oss2 client:

    with OssServer(credentials={'AKID': 'SECRET'}) as server:
      server.create_bucket('bkt')
      bucket = oss2.Bucket(oss2.Auth('AKID', 'SECRET'), server.endpoint, 'bkt')
      bucket.put_object('a/b.jpg', b'...')

Everything is checked the way OSS checks it, so code that passes here has a
good chance against the real service: request signatures (V1 `OSS id:sig`,
V2 `OSS2 ...`, V4 `OSS4-HMAC-SHA256 ...` and presigned URLs of all three),
STS security tokens, Content-MD5, multipart part numbers / ETags / minimum part
size, ranges, url-encoded listings.  Errors are OSS XML bodies with the OSS
error codes, so oss2 raises its usual exception classes.

Addressing: oss2 uses path-style URLs (`/bucket/key`) whenever the endpoint is
an IP address or `localhost` (`oss2.utils.is_ip_or_localhost`), and quotes the
key with `urlquote(key, safe='')`, so '/' in a key arrives as %2F.  Only path
style is served (virtual-host style would need DNS for `bucket.127.0.0.1`).

Fault injection (attributes, or temporarily with `server.faults(...)`):
  latency      seconds slept before answering *every* request;
  error_rate   fraction of faultable requests answered 500 InternalError or
               503 ServiceUnavailable (`error_status` picks one; None = random);
  fail_first   the first N faultable requests *per (bucket, key)* fail the
               same way, later ones succeed (deterministic retry tests);
  reset_rate   fraction of faultable requests whose reply announces the full
               Content-Length, sends half of the body and closes the socket;
  slow_body    bytes/second throttle for faultable response bodies;
  fault_filter predicate on the RequestRecord deciding what is "faultable";
               default: object GETs (op == 'GetObject') only.
Fault draws are a function of (seed, bucket, key, n-th request for that key),
not of the order in which concurrent requests arrive, so a job with a thread
pool meets exactly the same faults on every run.

Note on oss2's own retries: oss2 2.19 does NOT retry single calls
(`Bucket.get_object`, `put_object`, ...): `oss2.defaults.request_retries` (3)
is only used by the listing iterators (`oss2.ObjectIterator`,
`ObjectIteratorV2`, ...), which retry a page on a 5xx `ServerError`.  requests'
HTTPAdapter is mounted with its default `max_retries=0`.  So with
`error_rate=1.0` a get_object fails after exactly one request, and an
ObjectIterator page after exactly `request_retries` requests.

`server.requests` logs every request received (see `RequestLog`).

OssServer is assembled from this package's modules: oss_protocol (wire
formats, the request log, stored objects), oss_http (sockets, keep-alive,
misbehaving replies), oss_auth (signatures), oss_faults (fault knobs),
oss_buckets and oss_objects (the operations).
"""
import base64
import collections
import logging
import sys
import threading

from tests.fakes.oss_auth import AuthMixin
from tests.fakes.oss_buckets import BucketOpsMixin
from tests.fakes.oss_faults import FAULT_DEFAULTS, FaultsMixin
from tests.fakes.oss_http import OssHandler, OssHTTPServer
from tests.fakes.oss_objects import ObjectOpsMixin
from tests.fakes.oss_protocol import (HANDLED_SUBRESOURCES, V1_SUBRESOURCES,
                                      Bucket, OssError, Reply, RequestLog,
                                      StoredObject, md5_hex, xml_document)

logger = logging.getLogger(__name__)


class OssServer(AuthMixin, FaultsMixin, BucketOpsMixin, ObjectOpsMixin):
  """In-memory OSS served over HTTP on 127.0.0.1 (see the module docstring).

  Args:
    credentials: {access_key_id: access_key_secret} for plain AccessKeys.
    sts: {access_key_id: (access_key_secret, security_token)}; requests with
      these ids must carry the matching x-oss-security-token.
    buckets: names of buckets to create up front.
    seed: seed of the random.Random used by error_rate / reset_rate /
      error_status=None.
    min_part_size: smallest allowed size of every multipart part but the
      last (OSS: 100 KiB); 0 disables the check.
    range_behavior: 'standard' (default): an unsatisfiable Range (start past
      the end) is 416 InvalidRange, an end past the object is clamped — what
      OSS does with `x-oss-range-behavior: standard`.  'legacy': what OSS
      does without that header: any out-of-bounds range returns the whole
      object with 200.  The request header always wins.
    max_clock_skew: seconds a signed request's date may be off (OSS: 900);
      None disables the check.
    host, port: where to listen (port 0: any free port).

  Attributes: `endpoint`, `requests` (RequestLog), `credentials` and `sts`
  (plain dicts, may be changed at runtime, e.g. to expire a token), the
  fault knobs listed in the module docstring.
  """

  def __init__(self, credentials=None, sts=None, buckets=(), seed=0,
               min_part_size=100 * 1024, range_behavior='standard',
               max_clock_skew=900, host='127.0.0.1', port=0):
    self.credentials = dict(credentials or {})
    self.sts = dict(sts or {})
    self.min_part_size = min_part_size
    assert range_behavior in ('standard', 'legacy'), range_behavior
    self.range_behavior = range_behavior
    self.max_clock_skew = max_clock_skew
    self.requests = RequestLog()
    self._lock = threading.RLock()
    self._buckets = {}
    self._upload_counter = 0
    self._seed = seed
    self._fault_lock = threading.Lock()
    self._fail_counts = collections.Counter()
    self._attempts = collections.Counter()
    for name, value in FAULT_DEFAULTS.items():
      setattr(self, name, value)
    for name in buckets:
      self.create_bucket(name)
    self._address = (host, port)
    self._httpd = None
    self._thread = None

  # ---- lifecycle --------------------------------------------------------

  def start(self):
    if self._httpd is None:
      self._httpd = OssHTTPServer(self._address, OssHandler, self)
      # A short poll interval keeps stop() (shutdown()) fast.
      self._thread = threading.Thread(target=self._httpd.serve_forever,
                                      args=(0.05,), name='OssServer',
                                      daemon=True)
      self._thread.start()
    return self

  def stop(self):
    if self._httpd is not None:
      self._httpd.shutdown()
      self._httpd.close_connections()
      self._httpd.server_close()
      self._thread.join(5)
      self._httpd = self._thread = None

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()

  @property
  def endpoint(self):
    if self._httpd is None:
      raise RuntimeError('OssServer is not started')
    host, port = self._httpd.server_address[:2]
    return f'http://{host}:{port}'

  @property
  def connection_count(self):
    """TCP connections accepted since start() (keep-alive reuses them)."""
    return self._httpd.accepted if self._httpd else 0

  # ---- direct state access for tests (no HTTP, not logged) --------------

  def create_bucket(self, name):
    with self._lock:
      self._buckets.setdefault(name, Bucket(name))

  def put(self, bucket, key, data, content_type=None, meta=None):
    """Seeds an object directly (as a plain PutObject would store it)."""
    with self._lock:
      self._bucket(bucket).objects[key] = StoredObject(
          bytes(data), md5_hex(data), content_type, meta or {}, 'Normal')

  def get(self, bucket, key):
    """The stored bytes of an object, or None."""
    with self._lock:
      obj = self._bucket(bucket).objects.get(key)
      return None if obj is None else obj.data

  def keys(self, bucket):
    with self._lock:
      return sorted(self._bucket(bucket).objects)

  def object_info(self, bucket, key):
    """dict(size, etag, content_type, meta, object_type, crc) or None."""
    with self._lock:
      obj = self._bucket(bucket).objects.get(key)
      if obj is None:
        return None
      return dict(size=len(obj.data), etag=obj.etag, crc=obj.crc,
                  content_type=obj.content_type, meta=dict(obj.meta),
                  object_type=obj.object_type,
                  last_modified=obj.last_modified)

  def uploads(self, bucket):
    """{upload_id: key} of the multipart uploads still in progress."""
    with self._lock:
      return {u.upload_id: u.key
              for u in self._bucket(bucket).uploads.values()}


  # ---- request processing ------------------------------------------------

  def _bucket(self, name):
    try:
      return self._buckets[name]
    except KeyError:
      raise OssError(404, 'NoSuchBucket', 'The specified bucket does not exist.',
                     BucketName=name) from None

  def _error_reply(self, err, method, bucket, request_id):
    host = '%s:%s' % self._httpd.server_address[:2] if self._httpd else 'oss'
    body = xml_document('Error', [('Code', err.code), ('Message', err.message),
                          ('RequestId', request_id),
                          ('HostId', f'{bucket}.{host}' if bucket else host)]
                + list(err.extra.items()))
    headers = [('Content-Type', 'application/xml')]
    if method == 'HEAD':
      # A HEAD reply has no body; OSS puts the error XML, base64-encoded, in
      # x-oss-err and oss2.exceptions.make_exception reads it from there.
      headers.append(('x-oss-err', base64.b64encode(body).decode('ascii')))
    headers.append(('x-oss-ec', '0000-00000000'))
    return Reply(err.status, headers, body)

  def _process(self, record, headers, body, request_id):
    """-> (Reply, fault, faultable); headers: an email.message.Message.
    fault is None or 'reset' ('error' faults are raised right here)."""
    method, bucket, key, params = record
    fault = faultable = None
    try:
      self._authenticate(method, bucket, key, params, headers)
      record.op = self._operation(method, bucket, key, params, headers)
      fault, faultable, status = self._pick_fault(record)
      if fault == 'error':
        record.fault = 'error'
        raise self._injected_error(status)
      handler = getattr(self, '_op_' + record.op)
      reply = handler(bucket, key, params, headers, body)
      if method == 'GET' and record.op == 'GetObjectMeta':
        reply.body = b''   # old-style GET ?objectMeta: headers only
    except OssError as err:
      return self._error_reply(err, method, bucket, request_id), None, False
    except Exception as err:  # a server bug: report it, do not hang the client
      logger.exception('OssServer failed on %s %s/%s', method, bucket, key)
      return self._error_reply(OssError(500, 'InternalError', repr(err)),
                               method, bucket, request_id), None, False
    return reply, fault, faultable

  def _operation(self, method, bucket, key, params, headers):
    """Maps a request to an OSS operation name (and rejects what is not
    implemented rather than answering it wrongly)."""
    unsupported = (set(params) & V1_SUBRESOURCES) - HANDLED_SUBRESOURCES
    if unsupported:
      raise OssError(400, 'NotImplemented',
                     f'Sub-resource {sorted(unsupported)} not implemented.')
    copy = 'x-oss-copy-source' in headers
    if not bucket:
      ops = {'GET': 'ListBuckets'}
    elif not key:
      ops = {'PUT': 'PutBucket', 'DELETE': 'DeleteBucket',
             'POST': 'DeleteMultipleObjects' if 'delete' in params else None,
             'GET': ('ListMultipartUploads' if 'uploads' in params else
                     'ListObjectsV2' if params.get('list-type') == '2' else
                     'ListObjects')}
    elif 'uploadId' in params:
      ops = {'PUT': 'UploadPartCopy' if copy else 'UploadPart',
             'POST': 'CompleteMultipartUpload', 'GET': 'ListParts',
             'DELETE': 'AbortMultipartUpload'}
    else:
      meta = 'objectMeta' in params
      ops = {'PUT': 'CopyObject' if copy else 'PutObject',
             'GET': 'GetObjectMeta' if meta else 'GetObject',
             'HEAD': 'GetObjectMeta' if meta else 'HeadObject',
             'DELETE': 'DeleteObject',
             'POST': 'InitiateMultipartUpload' if 'uploads' in params else None}
    op = ops.get(method)
    if op is None:
      raise OssError(405, 'MethodNotAllowed',
                     'The specified method is not allowed against this resource.')
    if key and len(key.encode('utf-8')) > 1023:
      raise OssError(400, 'InvalidObjectName', 'The object name is too long.')
    return op


if __name__ == '__main__':
  # Manual use: python -m tests.fakes.oss_server AKID SECRET bucket [bucket...]
  logging.basicConfig(level=logging.INFO)
  akid, secret, *names = sys.argv[1:] or ['AKID', 'SECRET', 'test-bucket']
  with OssServer(credentials={akid: secret}, buckets=names) as srv:
    print(f'OSS endpoint {srv.endpoint}, buckets {names}', flush=True)
    try:
      threading.Event().wait()
    except KeyboardInterrupt:
      pass
