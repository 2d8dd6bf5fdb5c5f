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
"""

import base64
import calendar
import collections
import contextlib
import email.utils
import hashlib
import hmac
import http.server
import logging
import random
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

from oss2.utils import Crc64  # same polynomial/reflection/xorout as oss2 checks

logger = logging.getLogger(__name__)

# Sub-resources oss2's V1 signer puts into the canonicalized resource
# (copied from oss2.auth.ProviderAuth._subresource_key_set, oss2 2.19.1).
# The server must use the same set or V1 signatures of e.g. list_objects_v2
# ('continuation-token') would not verify.
_V1_SUBRESOURCES = frozenset([
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
_HANDLED_SUBRESOURCES = frozenset([
    'uploads', 'uploadId', 'partNumber', 'delete', 'objectMeta',
    'continuation-token', 'security-token', 'response-content-type',
    'response-content-language', 'response-cache-control',
    'response-content-encoding', 'response-expires',
    'response-content-disposition'])

_FAULT_DEFAULTS = {
    'latency': 0.0, 'error_rate': 0.0, 'error_status': None, 'fail_first': 0,
    'reset_rate': 0.0, 'slow_body': None, 'fault_filter': None,
}

_ERROR_MESSAGES = {
    500: ('InternalError', 'We encountered an internal error. Please try again.'),
    503: ('ServiceUnavailable', 'Please reduce your request rate.'),
}

_OWNER_ID = '1234567890123456'


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


class _Object:
  __slots__ = ('data', 'etag', 'last_modified', 'content_type', 'meta',
               'object_type', 'crc')

  def __init__(self, data, etag, content_type, meta, object_type):
    self.data = data
    self.etag = etag                          # upper-case hex, no quotes
    self.last_modified = int(time.time())     # HTTP dates have 1 s resolution
    self.content_type = content_type or 'application/octet-stream'
    self.meta = dict(meta)                    # {'x-oss-meta-foo': 'bar'}
    self.object_type = object_type            # 'Normal' | 'Multipart'
    self.crc = _crc64(data)


class _Upload:
  """An in-progress multipart upload."""

  def __init__(self, upload_id, key, content_type, meta):
    self.upload_id, self.key = upload_id, key
    self.content_type, self.meta = content_type, meta
    self.initiated = int(time.time())
    self.parts = {}   # part number -> (data, md5 upper hex, last_modified)


class _Bucket:

  def __init__(self, name):
    self.name = name
    self.created = int(time.time())
    self.objects = {}   # key (str) -> _Object
    self.uploads = {}   # upload id -> _Upload


def _crc64(data):
  crc = Crc64()
  crc.update(data)
  return crc.crc


def _md5_hex(data):
  # OSS ETags are upper-case hex MD5s (e.g. "D41D8CD98F00B204E9800998ECF8427E").
  return hashlib.md5(data).hexdigest().upper()


def _http_date(t):
  return email.utils.formatdate(t, usegmt=True)


def _iso8601(t):
  # oss2's iso8601_to_unixtime insists on the '.000Z' suffix.
  return time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(t))


def _uri_encode(text, keep_slash=False):
  """oss2's v2_uri_encode / ProviderAuthV4.__v4_uri_encode: RFC 3986
  unreserved characters stay, every other UTF-8 byte becomes %XX."""
  return urllib.parse.quote(text.encode('utf-8'),
                            safe='/~' if keep_slash else '~')


def _canon_query(params):
  """V2/V4 canonical query: every parameter, both sides encoded, sorted by
  the encoded name, valueless ones as bare names."""
  enc = sorted((_uri_encode(k), _uri_encode(v)) for k, v in params.items())
  return '&'.join(k + '=' + v if v else k for k, v in enc)


def _xml(root_tag, children):
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


class _HTTPServer(http.server.ThreadingHTTPServer):
  daemon_threads = True
  # Handler threads sit in keep-alive reads; do not join them on close.
  block_on_close = False
  request_queue_size = 128   # many concurrent Beam workers connect at once

  def __init__(self, address, handler, oss):
    self.oss = oss
    self._conns = set()
    self._conns_lock = threading.Lock()
    self.accepted = 0   # TCP connections accepted so far
    super().__init__(address, handler)

  def server_bind(self):
    # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
    # that can hang for seconds on machines without network.
    socketserver.TCPServer.server_bind(self)
    self.server_name, self.server_port = self.server_address[:2]

  def process_request(self, request, client_address):
    with self._conns_lock:
      self._conns.add(request)
      self.accepted += 1
    super().process_request(request, client_address)

  def shutdown_request(self, request):
    with self._conns_lock:
      self._conns.discard(request)
    super().shutdown_request(request)

  def handle_error(self, request, client_address):
    # Clients dropping kept-alive connections (pool shutdown, a test that
    # gave up on a reset reply) are routine, not worth a traceback.
    if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
      logger.debug('connection from %s dropped', client_address)
    else:
      super().handle_error(request, client_address)

  def close_connections(self):
    """Closes kept-alive client connections so stop() leaves nothing open."""
    with self._conns_lock:
      conns = list(self._conns)
    for conn in conns:
      try:
        conn.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass


class _Reply:

  def __init__(self, status=200, headers=None, body=b''):
    self.status = status
    self.headers = list(headers or [])
    self.body = body


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'   # keep-alive, as the real service
  server_version = 'AliyunOSS'
  sys_version = ''
  timeout = 300                   # idle keep-alive connections eventually go

  def setup(self):
    super().setup()
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle
    # plus the client's delayed ACK stalls every small reply by ~40 ms.
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

  def log_message(self, fmt, *args):
    logger.debug('%s ' + fmt, self.address_string(), *args)

  def _read_body(self):
    # requests sends bodies of unknown length (oss2 file-like / iterator
    # uploads) with Transfer-Encoding: chunked.
    if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
      chunks = []
      while True:
        size = int(self.rfile.readline(65537).split(b';', 1)[0].strip(), 16)
        if size == 0:
          while self.rfile.readline(65537) not in (b'\r\n', b'\n', b''):
            pass   # trailers
          return b''.join(chunks)
        chunks.append(self.rfile.read(size))
        self.rfile.readline()
    length = self.headers.get('Content-Length')
    return self.rfile.read(int(length)) if length else b''

  def _handle(self):
    oss = self.server.oss
    request_id = uuid.uuid4().hex[:24].upper()
    url = urllib.parse.urlsplit(self.path)
    # Path: plain unquote ('+' is literal in paths); query: parse_qsl, which
    # also undoes requests' quote_plus encoding of parameter values.
    bucket, _, key = urllib.parse.unquote(url.path).lstrip('/').partition('/')
    query = {}
    for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
      query.setdefault(k, v)
    record = RequestRecord(self.command, bucket, key, query)
    record.headers = {k.lower(): v for k, v in self.headers.items()}
    oss.requests._add(record)
    try:
      body = self._read_body()
    except (ValueError, OSError):
      self.close_connection = True
      reply = oss._error_reply(OssError(400, 'InvalidArgument',
                                        'Malformed request body.'),
                               self.command, bucket, request_id)
      return self._send(reply, record, request_id, None, False)
    if oss.latency:
      time.sleep(oss.latency)
    reply, fault, faultable = oss._process(record, self.headers, body,
                                           request_id)
    self._send(reply, record, request_id, fault, faultable)

  do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

  def _send(self, reply, record, request_id, fault, faultable):
    record.status = reply.status
    body = reply.body
    reset = fault == 'reset' and reply.status in (200, 206) and body
    if reset:
      record.fault = 'reset'
    try:
      self.send_response(reply.status)
      for name, value in reply.headers:
        self.send_header(name, value)
      self.send_header('x-oss-request-id', request_id)
      self.send_header('Content-Length', str(len(body)))
      if self.close_connection:
        self.send_header('Connection', 'close')
      self.end_headers()
      if self.command == 'HEAD' or reply.status in (204, 304):
        return   # HEAD: Content-Length announces the body that is not sent
      if reset:
        body = body[:len(body) // 2]
      rate = self.server.oss.slow_body if faultable else None
      if rate:
        self._write_throttled(body, rate)
      else:
        self.wfile.write(body)
      if reset:
        # Clean FIN after a short body: the client sees the connection end
        # before Content-Length bytes arrived.
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
    except (BrokenPipeError, ConnectionResetError, OSError):
      self.close_connection = True   # client went away mid-reply

  def _write_throttled(self, data, rate):
    chunk = max(1, int(rate) // 50)   # ~20 ms slices
    start, sent = time.monotonic(), 0
    for i in range(0, len(data), chunk):
      piece = data[i:i + chunk]
      self.wfile.write(piece)
      sent += len(piece)
      delay = start + sent / rate - time.monotonic()
      if delay > 0:
        time.sleep(delay)


class OssServer:
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
    for name, value in _FAULT_DEFAULTS.items():
      setattr(self, name, value)
    for name in buckets:
      self.create_bucket(name)
    self._address = (host, port)
    self._httpd = None
    self._thread = None

  # ---- lifecycle --------------------------------------------------------

  def start(self):
    if self._httpd is None:
      self._httpd = _HTTPServer(self._address, _Handler, self)
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
      self._buckets.setdefault(name, _Bucket(name))

  def put(self, bucket, key, data, content_type=None, meta=None):
    """Seeds an object directly (as a plain PutObject would store it)."""
    with self._lock:
      self._bucket(bucket).objects[key] = _Object(
          bytes(data), _md5_hex(data), content_type, meta or {}, 'Normal')

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

  # ---- fault knobs -------------------------------------------------------

  @contextlib.contextmanager
  def faults(self, **knobs):
    """Sets fault knobs for the duration of a with-block, then restores
    them; fail_first counters start from zero on entry and on exit."""
    unknown = set(knobs) - set(_FAULT_DEFAULTS)
    if unknown:
      raise TypeError(f'unknown fault knobs: {sorted(unknown)}')
    saved = {name: getattr(self, name) for name in knobs}
    with self._fault_lock:
      self._fail_counts.clear()
      self._attempts.clear()
    for name, value in knobs.items():
      setattr(self, name, value)
    try:
      yield self
    finally:
      for name, value in saved.items():
        setattr(self, name, value)
      with self._fault_lock:
        self._fail_counts.clear()
        self._attempts.clear()

  def reset_faults(self):
    for name, value in _FAULT_DEFAULTS.items():
      setattr(self, name, value)
    with self._fault_lock:
      self._fail_counts.clear()
      self._attempts.clear()

  def _pick_fault(self, record):
    """(None | 'error' | 'reset', faultable, error status) for a request
    that passed authentication."""
    keep = self.fault_filter or (lambda r: r.op == 'GetObject')
    if not keep(record):
      return None, False, None
    where = (record.bucket, record.key)
    with self._fault_lock:
      self._attempts[where] += 1
      rng = random.Random(
          f'{self._seed}|{record.bucket}|{record.key}|{self._attempts[where]}')
      status = self.error_status or rng.choice((500, 503))
      if self.fail_first:
        self._fail_counts[where] += 1
        if self._fail_counts[where] <= self.fail_first:
          return 'error', True, status
    if self.error_rate and rng.random() < self.error_rate:
      return 'error', True, status
    if self.reset_rate and rng.random() < self.reset_rate:
      return 'reset', True, None
    return None, True, None

  @staticmethod
  def _injected_error(status):
    code, message = _ERROR_MESSAGES.get(status, ('InternalError', 'Injected'))
    return OssError(status, code, message)

  # ---- request processing ------------------------------------------------

  def _bucket(self, name):
    try:
      return self._buckets[name]
    except KeyError:
      raise OssError(404, 'NoSuchBucket', 'The specified bucket does not exist.',
                     BucketName=name) from None

  def _error_reply(self, err, method, bucket, request_id):
    host = '%s:%s' % self._httpd.server_address[:2] if self._httpd else 'oss'
    body = _xml('Error', [('Code', err.code), ('Message', err.message),
                          ('RequestId', request_id),
                          ('HostId', f'{bucket}.{host}' if bucket else host)]
                + list(err.extra.items()))
    headers = [('Content-Type', 'application/xml')]
    if method == 'HEAD':
      # A HEAD reply has no body; OSS puts the error XML, base64-encoded, in
      # x-oss-err and oss2.exceptions.make_exception reads it from there.
      headers.append(('x-oss-err', base64.b64encode(body).decode('ascii')))
    headers.append(('x-oss-ec', '0000-00000000'))
    return _Reply(err.status, headers, body)

  def _process(self, record, headers, body, request_id):
    """-> (_Reply, fault, faultable); headers: an email.message.Message.
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
    unsupported = (set(params) & _V1_SUBRESOURCES) - _HANDLED_SUBRESOURCES
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

  # ---- authentication ----------------------------------------------------

  def _secret(self, access_key_id, token):
    if access_key_id in self.credentials:
      return self.credentials[access_key_id]
    if access_key_id in self.sts:
      secret, expected = self.sts[access_key_id]
      if token != expected:
        raise OssError(403, 'InvalidSecurityToken',
                       'The security token you provided is invalid.')
      return secret
    raise OssError(403, 'InvalidAccessKeyId',
                   'The OSS Access Key Id you provided does not exist in our '
                   'records.', OSSAccessKeyId=access_key_id)

  def _check_skew(self, when):
    if self.max_clock_skew is not None and \
        abs(time.time() - when) > self.max_clock_skew:
      raise OssError(403, 'RequestTimeTooSkewed', 'The difference between the '
                     'request time and the current time is too large.')

  @staticmethod
  def _mismatch(string_to_sign, access_key_id, **extra):
    return OssError(403, 'SignatureDoesNotMatch',
                    'The request signature we calculated does not match the '
                    'signature you provided. Check your key and signing '
                    'method.', StringToSign=string_to_sign,
                    OSSAccessKeyId=access_key_id, **extra)

  def _authenticate(self, method, bucket, key, params, headers):
    auth = headers.get('Authorization')
    if auth is None:
      if 'OSSAccessKeyId' in params and 'Signature' in params:
        return self._auth_v1(method, bucket, key, params, headers, presigned=True)
      version = params.get('x-oss-signature-version')
      if version == 'OSS2':
        return self._auth_v2(method, bucket, key, params, headers, None)
      if version == 'OSS4-HMAC-SHA256':
        return self._auth_v4(method, bucket, key, params, headers, None)
      raise OssError(403, 'AccessDenied', 'AccessDenied: anonymous access is '
                     'not allowed on this server.')
    if auth.startswith('OSS '):
      return self._auth_v1(method, bucket, key, params, headers, auth=auth)
    if auth.startswith('OSS2 '):
      return self._auth_v2(method, bucket, key, params, headers, auth)
    if auth.startswith('OSS4-HMAC-SHA256 '):
      return self._auth_v4(method, bucket, key, params, headers, auth)
    raise OssError(400, 'InvalidArgument', 'Authorization header is invalid.')

  @staticmethod
  def _oss_headers(headers, extra=()):
    """Sorted, lower-cased x-oss-* (and `extra`) headers as 'name:value\\n'.
    Header values are decoded as latin-1 by http.server and signed by oss2
    as UTF-8 bytes of the same str; comparing strs keeps that consistent."""
    pairs = sorted((k.lower(), v) for k, v in headers.items()
                   if k.lower().startswith('x-oss-') or k.lower() in extra)
    return ''.join(f'{k}:{v}\n' for k, v in pairs)

  def _auth_v1(self, method, bucket, key, params, headers, auth=None,
               presigned=False):
    # oss2.auth.ProviderAuth: HMAC-SHA1 over
    #   VERB \n Content-MD5 \n Content-Type \n Date \n
    #   canonical x-oss- headers + /bucket/key[?sorted signed sub-resources]
    # with the *unquoted* key; for presigned URLs Date is the Expires value.
    if presigned:
      access_key_id, signature = params['OSSAccessKeyId'], params['Signature']
      token = params.get('security-token')
      date = params.get('Expires', '')
      if not date.isdigit() or int(date) < time.time():
        raise OssError(403, 'AccessDenied', 'Request has expired.')
    else:
      access_key_id, sep, signature = auth[4:].strip().rpartition(':')
      if not sep:
        raise OssError(400, 'InvalidArgument', 'Authorization header is invalid.')
      token = headers.get('x-oss-security-token')
      date = headers.get('x-oss-date') or headers.get('Date') or ''
      try:
        self._check_skew(email.utils.parsedate_to_datetime(date).timestamp())
      except (TypeError, ValueError):
        raise OssError(403, 'AccessDenied', 'Invalid Date header.') from None
    secret = self._secret(access_key_id, token)
    sub = sorted((k, v) for k, v in params.items() if k in _V1_SUBRESOURCES)
    resource = f'/{bucket}/{key}' if bucket else '/'
    if sub:
      resource += '?' + '&'.join(k + '=' + v if v else k for k, v in sub)
    string_to_sign = '\n'.join([
        method, headers.get('Content-MD5', ''), headers.get('Content-Type', ''),
        date, self._oss_headers(headers) + resource])
    expected = base64.b64encode(hmac.new(
        secret.encode('utf-8'), string_to_sign.encode('utf-8'),
        hashlib.sha1).digest()).decode('ascii')
    if not hmac.compare_digest(expected, signature):
      raise self._mismatch(string_to_sign, access_key_id)

  def _auth_v2(self, method, bucket, key, params, headers, auth):
    # oss2.auth.ProviderAuthV2: HMAC-SHA256; resource is the fully
    # uri-encoded /bucket/key plus *all* query parameters.
    params = dict(params)
    if auth is None:   # presigned
      fields = {'AccessKeyId': params.get('x-oss-access-key-id', ''),
                'Signature': params.pop('x-oss-signature', ''),
                'AdditionalHeaders': params.get('x-oss-additional-headers', '')}
      token = params.get('security-token')
      date = params.get('x-oss-expires', '')
      if not date.isdigit() or int(date) < time.time():
        raise OssError(403, 'AccessDenied', 'Request has expired.')
    else:
      fields = dict(f.strip().partition(':')[::2] for f in auth[5:].split(','))
      token = headers.get('x-oss-security-token')
      date = headers.get('Date', '')
    access_key_id = fields.get('AccessKeyId', '')
    secret = self._secret(access_key_id, token)
    additional = sorted(h.lower() for h in
                        fields.get('AdditionalHeaders', '').split(';') if h)
    resource = _uri_encode(f'/{bucket}/{key}' if bucket else '/')
    if params:
      resource += '?' + _canon_query(params)
    string_to_sign = (f'{method}\n{headers.get("Content-MD5", "")}\n'
                      f'{headers.get("Content-Type", "")}\n{date}\n'
                      + self._oss_headers(headers, additional)
                      + ';'.join(additional) + '\n' + resource)
    expected = base64.b64encode(hmac.new(
        secret.encode('utf-8'), string_to_sign.encode('utf-8'),
        hashlib.sha256).digest()).decode('ascii')
    if not hmac.compare_digest(expected, fields.get('Signature', '')):
      raise self._mismatch(string_to_sign, access_key_id)

  def _auth_v4(self, method, bucket, key, params, headers, auth):
    # oss2.auth.ProviderAuthV4.  Credential scope is
    # <date>/<region>/<product>/aliyun_v4_request; any region is accepted,
    # but the signature is verified with the one in the scope.
    params = dict(params)
    if auth is None:   # presigned
      credential = params.get('x-oss-credential', '')
      signature = params.pop('x-oss-signature', '')
      additional = params.get('x-oss-additional-headers', '')
      token = params.get('x-oss-security-token')
      date_time = params.get('x-oss-date', '')
      payload = 'UNSIGNED-PAYLOAD'
    else:
      fields = dict(f.strip().partition('=')[::2]
                    for f in auth[len('OSS4-HMAC-SHA256 '):].split(','))
      credential = fields.get('Credential', '')
      signature = fields.get('Signature', '')
      additional = fields.get('AdditionalHeaders', '')
      token = headers.get('x-oss-security-token')
      date_time = headers.get('x-oss-date', '')
      payload = headers.get('x-oss-content-sha256', 'UNSIGNED-PAYLOAD')
    access_key_id, _, scope = credential.partition('/')
    parts = scope.split('/')
    if len(parts) != 4 or parts[3] != 'aliyun_v4_request':
      raise OssError(400, 'InvalidArgument', 'Invalid credential in V4 auth.')
    try:
      when = calendar.timegm(time.strptime(date_time, '%Y%m%dT%H%M%SZ'))
    except ValueError:
      raise OssError(403, 'AccessDenied', 'Invalid x-oss-date.') from None
    if auth is None:
      expires = params.get('x-oss-expires', '')
      if not expires.isdigit() or when + int(expires) < time.time():
        raise OssError(403, 'AccessDenied', 'Request has expired.')
    else:
      self._check_skew(when)
    secret = self._secret(access_key_id, token)
    additional = sorted(h.lower() for h in additional.split(';') if h)
    canonical_request = '\n'.join([
        method, _uri_encode(f'/{bucket}/{key}' if bucket else '/', True),
        _canon_query(params),
        self._oss_headers(headers, set(additional) |
                          {'content-type', 'content-md5'}),
        ';'.join(additional), payload])
    string_to_sign = '\n'.join([
        'OSS4-HMAC-SHA256', date_time, scope,
        hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()])
    signing_key = ('aliyun_v4' + secret).encode('utf-8')
    for part in parts:   # date, region, product, 'aliyun_v4_request'
      signing_key = hmac.new(signing_key, part.encode('utf-8'),
                             hashlib.sha256).digest()
    expected = hmac.new(signing_key, string_to_sign.encode('utf-8'),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
      raise self._mismatch(string_to_sign, access_key_id,
                           CanonicalRequest=canonical_request)

  # ---- helpers for operations -------------------------------------------

  @staticmethod
  def _user_meta(headers):
    return {k.lower(): v for k, v in headers.items()
            if k.lower().startswith('x-oss-meta-')}

  @staticmethod
  def _object_headers(obj):
    return ([('Content-Type', obj.content_type),
             ('ETag', f'"{obj.etag}"'),
             ('Last-Modified', _http_date(obj.last_modified)),
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
    HTTP says); raises _Unsatisfiable (with the clamped range, if any)."""
    m = re.fullmatch(r'\s*bytes=(\d*)-(\d*)\s*', value or '')
    if not m or (not m[1] and not m[2]):
      return None
    if not m[1]:   # suffix range: the last N bytes
      if int(m[2]) == 0 or size == 0:
        raise _Unsatisfiable(None)
      return max(0, size - int(m[2])), size - 1
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if start > end or start >= size:
      raise _Unsatisfiable(None)
    if end >= size:
      raise _Unsatisfiable((start, size - 1))
    return start, end

  def _range(self, value, size, headers):
    standard = (headers.get('x-oss-range-behavior', '').lower() == 'standard'
                or self.range_behavior == 'standard')
    try:
      return self._parse_range(value, size)
    except _Unsatisfiable as e:
      if not standard:
        return None          # legacy OSS: whole object, 200
      if e.clamped:
        return e.clamped     # standard: end past the object is clamped
      raise OssError(416, 'InvalidRange', 'The requested range cannot be '
                     'satisfied.', RangeRequested=value,
                     ActualObjectSize=size) from None

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
    return _Reply(200, [('Content-Type', 'application/xml')], _xml(
        'ListAllMyBucketsResult',
        [('Owner', [('ID', _OWNER_ID), ('DisplayName', _OWNER_ID)]),
         ('Buckets', [('Bucket', [
             ('CreationDate', _iso8601(b.created)),
             ('ExtranetEndpoint', host), ('IntranetEndpoint', host),
             ('Location', 'oss-local'), ('Name', b.name),
             ('Region', 'local'), ('StorageClass', 'Standard')])
                      for b in buckets])]))

  def _op_PutBucket(self, bucket, key, params, headers, body):
    self.create_bucket(bucket)   # OSS: re-creating your own bucket is a no-op
    return _Reply(200, [('Location', '/' + bucket)])

  def _op_DeleteBucket(self, bucket, key, params, headers, body):
    with self._lock:
      b = self._bucket(bucket)
      if b.objects or b.uploads:
        raise OssError(409, 'BucketNotEmpty', 'The bucket you tried to delete '
                       'is not empty.', BucketName=bucket)
      del self._buckets[bucket]
    return _Reply(204)

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
        ('Key', enc(k)), ('LastModified', _iso8601(obj.last_modified)),
        ('ETag', f'"{obj.etag}"'), ('Type', obj.object_type),
        ('Size', len(obj.data)), ('StorageClass', 'Standard')]
             + ([('Owner', [('ID', _OWNER_ID), ('DisplayName', _OWNER_ID)])]
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
    return _Reply(200, [('Content-Type', 'application/xml')],
                  _xml('ListBucketResult', items))

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
    return _Reply(200, [('Content-Type', 'application/xml')],
                  _xml('ListBucketResult', items))

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
    return _Reply(200, [('Content-Type', 'application/xml')],
                  _xml('DeleteResult', items))

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
                          ('Initiated', _iso8601(t))])
              for k, uid, t in uploads]
    return _Reply(200, [('Content-Type', 'application/xml')],
                  _xml('ListMultipartUploadsResult', items))

  # ---- object operations -------------------------------------------------

  def _op_PutObject(self, bucket, key, params, headers, body):
    md5 = headers.get('Content-MD5')
    if md5 is not None and \
        md5 != base64.b64encode(hashlib.md5(body).digest()).decode('ascii'):
      raise OssError(400, 'InvalidDigest', 'The Content-MD5 you specified was '
                     'invalid.')
    obj = _Object(body, _md5_hex(body), headers.get('Content-Type'),
                  self._user_meta(headers), 'Normal')
    with self._lock:
      objects = self._bucket(bucket).objects
      if headers.get('x-oss-forbid-overwrite', '').lower() == 'true' and \
          key in objects:
        raise OssError(409, 'FileAlreadyExists', 'The object you specified '
                       'already exists and can not be overwritten.')
      objects[key] = obj
    return _Reply(200, [('ETag', f'"{obj.etag}"'),
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
      return _Reply(200, reply_headers, obj.data)
    start, end = rng
    reply_headers.append(('Content-Range', f'bytes {start}-{end}/{size}'))
    return _Reply(206, reply_headers, obj.data[start:end + 1])

  def _op_HeadObject(self, bucket, key, params, headers, body):
    obj = self._get_existing(bucket, key)
    # The reply announces Content-Length = object size but sends no body.
    return _Reply(200, self._object_headers(obj), obj.data)

  def _op_GetObjectMeta(self, bucket, key, params, headers, body):
    obj = self._get_existing(bucket, key)
    reply_headers = [('ETag', f'"{obj.etag}"'),
                     ('Last-Modified', _http_date(obj.last_modified)),
                     ('x-oss-hash-crc64ecma', str(obj.crc))]
    # oss2 2.19 sends HEAD ?objectMeta: Content-Length is the object size
    # (the body is never sent); _process empties it for a GET ?objectMeta.
    return _Reply(200, reply_headers, obj.data)

  def _op_DeleteObject(self, bucket, key, params, headers, body):
    with self._lock:
      self._bucket(bucket).objects.pop(key, None)   # idempotent, as OSS
    return _Reply(204)

  def _op_CopyObject(self, bucket, key, params, headers, body):
    src = self._copy_source(headers)
    with self._lock:
      self._bucket(bucket)
    if headers.get('x-oss-metadata-directive', 'COPY').upper() == 'REPLACE':
      content_type, meta = headers.get('Content-Type'), self._user_meta(headers)
    else:
      content_type, meta = src.content_type, src.meta
    obj = _Object(src.data, src.etag, content_type, meta, src.object_type)
    with self._lock:
      self._bucket(bucket).objects[key] = obj
    return _Reply(200, [('Content-Type', 'application/xml'),
                        ('ETag', f'"{obj.etag}"'),
                        ('x-oss-hash-crc64ecma', str(obj.crc))],
                  _xml('CopyObjectResult',
                       [('ETag', f'"{obj.etag}"'),
                        ('LastModified', _iso8601(obj.last_modified))]))

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
      b.uploads[upload_id] = _Upload(upload_id, key, headers.get('Content-Type'),
                                     self._user_meta(headers))
    enc = self._encoder(params)
    items = [('Bucket', bucket), ('Key', enc(key)), ('UploadId', upload_id)]
    if params.get('encoding-type') == 'url':
      items.append(('EncodingType', 'url'))
    return _Reply(200, [('Content-Type', 'application/xml')],
                  _xml('InitiateMultipartUploadResult', items))

  def _store_part(self, upload, number, data):
    etag = _md5_hex(data)
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
    return _Reply(200, [('ETag', f'"{etag}"'),
                        ('x-oss-hash-crc64ecma', str(_crc64(body)))])

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
    return _Reply(200, [('Content-Type', 'application/xml'),
                        ('ETag', f'"{etag}"'),
                        ('x-oss-hash-crc64ecma', str(_crc64(data)))],
                  _xml('CopyPartResult',
                       [('LastModified', _iso8601(time.time())),
                        ('ETag', f'"{etag}"')]))

  def _parse_copy_range(self, value, size):
    try:
      return self._parse_range(value, size)
    except _Unsatisfiable as e:
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
    obj = _Object(data, etag, upload.content_type, upload.meta, 'Multipart')
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
    return _Reply(200, [('Content-Type', 'application/xml'),
                        ('ETag', f'"{etag}"'),
                        ('x-oss-hash-crc64ecma', str(obj.crc))],
                  _xml('CompleteMultipartUploadResult', items))

  def _op_AbortMultipartUpload(self, bucket, key, params, headers, body):
    upload = self._upload(bucket, key, params)
    with self._lock:
      self._bucket(bucket).uploads.pop(upload.upload_id, None)
    return _Reply(204)

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
    items += [('Part', [('PartNumber', n), ('LastModified', _iso8601(t)),
                        ('ETag', f'"{etag}"'), ('HashCrc64ecma', _crc64(data)),
                        ('Size', len(data))])
              for n, (data, etag, t) in parts]
    return _Reply(200, [('Content-Type', 'application/xml')],
                  _xml('ListPartsResult', items))


class _Unsatisfiable(Exception):
  """A Range outside the object; `clamped` is the usable part, if any."""

  def __init__(self, clamped):
    super().__init__(clamped)
    self.clamped = clamped


if __name__ == '__main__':
  # Manual use: python tests/oss_server.py AKID SECRET bucket [bucket...]
  logging.basicConfig(level=logging.INFO)
  akid, secret, *names = sys.argv[1:] or ['AKID', 'SECRET', 'test-bucket']
  with OssServer(credentials={akid: secret}, buckets=names) as srv:
    print(f'OSS endpoint {srv.endpoint}, buckets {names}', flush=True)
    try:
      threading.Event().wait()
    except KeyboardInterrupt:
      pass
