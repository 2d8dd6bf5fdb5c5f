"""Alibaba OSS access on the official oss2 SDK: clients, credentials, ranged
downloads, multipart uploads, listings and server-side composition.

Credentials are resolved in each process from its environment (or an
ossutil-style config file), never from pipeline options, so no secret travels
in a job graph. Structure follows Beam's s3io: a Downloader/Uploader pair for
the stream classes of filesystemio, and errors keyed by path.
"""
import configparser
import dataclasses
import errno
import functools
import logging
import os
import random
import threading
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import oss2
import requests
import urllib3
from apache_beam.io.filesystemio import Downloader, Uploader

from ev_predict.transforms import redact

_LOG = logging.getLogger(__name__)

PREFIX = 'oss://'
PART_SIZE = 8 << 20        # multipart uploads and copies
MIN_COPY_PART = 100 << 10  # OSS refuses smaller non-final parts
MAX_DELETE_BATCH = 1000
_RETRIES = 4


class OssConfigError(ValueError):
  """OSS is not configured well enough to make a request."""


class TooLarge(ValueError):
  """An object over the caller's byte cap (not read)."""


class ServerError(OSError):
  """An OSS error reply other than 403 and 404, with its HTTP status."""

  def __init__(self, status: int, code: str, path: str):
    super().__init__(errno.EIO, f'OSS {status} {code or ""}: {path}')
    self.status = status
    self.transient = status >= 500 or status in (408, 429)


def parse_path(path: str, object_optional: bool = False) -> Tuple[str, str]:
  """'oss://bucket/key' -> ('bucket', 'key')."""
  if not path.startswith(PREFIX):
    raise ValueError(f'not an OSS path: {path!r}')
  bucket, _, key = path[len(PREFIX):].partition('/')
  if not bucket or (not key and not object_optional):
    raise ValueError(f'OSS path needs a bucket and an object: {path!r}')
  return bucket, key


def _normalize_endpoint(host: str) -> str:
  host = host.strip().rstrip('/')
  if '://' not in host:
    host = 'http://' + host   # internal endpoints are plain HTTP
  return host


@dataclasses.dataclass(frozen=True)
class OssSettings:
  """Non-secret settings; safe to carry in pipeline options.

  endpoints: 'host' for every bucket, or 'bucket=host,...' (a bare host among
  them is the default)."""
  endpoints: Optional[str] = None
  role_arn: Optional[str] = None
  connect_timeout: float = 10.0

  def endpoint_for(self, bucket: str) -> str:
    default = None
    for item in (self.endpoints or '').split(','):
      item = item.strip()
      if not item:
        continue
      name, sep, host = item.partition('=')
      if sep and name.strip() == bucket:
        return _normalize_endpoint(host)
      if not sep:
        default = item
    default = default or os.environ.get('OSS_ENDPOINT') or \
        _config_file().get('endpoint')
    if not default:
      raise OssConfigError(
          f'no OSS endpoint for bucket {bucket!r}: set -DossHost or '
          'OSS_ENDPOINT')
    return _normalize_endpoint(default)


def _config_file() -> Dict[str, str]:
  """ossutil's config (INI, section [Credentials]) if present."""
  path = os.environ.get('OSS_CONFIG_FILE') or os.path.expanduser(
      '~/.ossutilconfig')
  if not os.path.isfile(path):
    return {}
  parser = configparser.ConfigParser()
  try:
    parser.read(path, encoding='utf-8')
  except configparser.Error:
    return {}
  if not parser.has_section('Credentials'):
    return {}
  raw = {k.lower(): v.strip() for k, v in parser.items('Credentials')}
  return {
      'access_key_id': raw.get('accesskeyid', ''),
      'access_key_secret': raw.get('accesskeysecret', ''),
      'security_token': raw.get('ststoken', ''),
      'endpoint': raw.get('endpoint', ''),
  }


def base_credentials() -> oss2.credentials.Credentials:
  key_id = os.environ.get('OSS_ACCESS_KEY_ID')
  secret = os.environ.get('OSS_ACCESS_KEY_SECRET')
  token = os.environ.get('OSS_SESSION_TOKEN', '')
  if not (key_id and secret):
    conf = _config_file()
    key_id, secret = conf.get('access_key_id'), conf.get('access_key_secret')
    token = conf.get('security_token', '')
  if not (key_id and secret):
    raise OssConfigError(
        'no OSS credentials: set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET '
        '(and OSS_SESSION_TOKEN for STS) or write ~/.ossutilconfig')
  return oss2.credentials.Credentials(key_id, secret, token or '')


class _RoleProvider(oss2.credentials.CredentialsProvider):
  """Assumes a RAM role through STS with Alibaba's credentials library; the
  library refreshes the temporary credentials before they expire."""

  def __init__(self, role_arn: str):
    # pylint: disable=import-outside-toplevel
    from alibabacloud_credentials.client import Client
    from alibabacloud_credentials.models import Config
    base = base_credentials()
    self._client = Client(Config(
        type='ram_role_arn', access_key_id=base.access_key_id,
        access_key_secret=base.access_key_secret,
        security_token=base.security_token or None, role_arn=role_arn,
        role_session_name='ev-predict',
        sts_endpoint=os.environ.get('ALIBABA_CLOUD_STS_ENDPOINT')))

  def get_credentials(self):
    c = self._client.get_credential()
    return oss2.credentials.Credentials(
        c.access_key_id, c.access_key_secret, c.security_token or '')


class _StaticProvider(oss2.credentials.CredentialsProvider):

  def __init__(self, credentials):
    self._credentials = credentials

  def get_credentials(self):
    return self._credentials


_clients: Dict[Tuple, oss2.Bucket] = {}
_clients_lock = threading.Lock()


def bucket_client(settings: OssSettings, bucket: str) -> oss2.Bucket:
  """One oss2.Bucket per (settings, bucket) and process, shared by threads."""
  key = (settings, bucket)
  with _clients_lock:
    client = _clients.get(key)
    if client is None:
      # oss2 logs every request's signed headers at DEBUG.
      redact.install()
      provider = _RoleProvider(settings.role_arn) if settings.role_arn \
          else _StaticProvider(base_credentials())
      client = oss2.Bucket(
          oss2.ProviderAuth(provider), settings.endpoint_for(bucket), bucket,
          session=_session(), connect_timeout=settings.connect_timeout)
      _clients[key] = client
    return client


@functools.lru_cache(maxsize=1)
def _session():
  # A pool as wide as the fetch threads that share it.
  return oss2.Session(pool_size=64)


def is_transient(e: BaseException) -> bool:
  if isinstance(e, (oss2.exceptions.RequestError,
                    requests.exceptions.RequestException,
                    urllib3.exceptions.ProtocolError,
                    urllib3.exceptions.ReadTimeoutError)):
    # Connection reset, timeout, a body cut short mid-read (requests raises
    # ChunkedEncodingError from .read(), urllib3 ProtocolError from the
    # body reads of read(), outside oss2's own error types).
    return True
  status = getattr(e, 'status', None)
  return isinstance(e, oss2.exceptions.OssError) and status is not None and (
      status >= 500 or status in (408, 429))


def with_retries(fn, *args, **kwargs):
  """oss2 itself retries only failed connections; 5xx, throttling and bodies
  cut short are retried here with jittered exponential backoff."""
  for attempt in range(_RETRIES + 1):
    try:
      return fn(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      if attempt == _RETRIES or not is_transient(e):
        raise
      time.sleep(0.2 * (2 ** attempt) * (0.5 + random.random()))
  raise AssertionError('unreachable')


def to_io_error(e: BaseException, path: str) -> BaseException:
  """Any failure of an OSS call -> FileNotFoundError, PermissionError,
  TimeoutError, ConnectionError, ServerError or another OSError, chosen by the
  exception's type and the server's status only (a path can contain '403')."""
  if isinstance(e, (OSError, TooLarge, OssConfigError)) and not isinstance(
      e, requests.exceptions.RequestException):
    return e   # already one of ours (or the OS's)
  status = getattr(e, 'status', None) if isinstance(
      e, oss2.exceptions.OssError) else None
  if isinstance(e, oss2.exceptions.NotFound) or status == 404:
    return FileNotFoundError(errno.ENOENT, f'not found: {path}')
  if status == 403:
    code = getattr(e, 'code', '') or 'AccessDenied'
    return PermissionError(errno.EACCES, f'{code}: {path}')
  cause = getattr(e, 'exception', None) or e
  if isinstance(cause, (requests.exceptions.Timeout, TimeoutError,
                        urllib3.exceptions.TimeoutError)):
    return TimeoutError(errno.ETIMEDOUT, f'timed out: {path}')
  if isinstance(e, (oss2.exceptions.RequestError,
                    requests.exceptions.RequestException,
                    urllib3.exceptions.HTTPError)):
    return ConnectionError(errno.ECONNRESET,
                           f'{type(cause).__name__}: {path}')
  if isinstance(e, oss2.exceptions.OssError):
    return ServerError(e.status, e.code, path)
  return OSError(errno.EIO, f'{type(e).__name__}: {path}')


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
  path: str
  size: int
  last_updated: float
  etag: str


class OssIO:
  """Operations on oss:// paths for one set of settings."""

  def __init__(self, settings: OssSettings = OssSettings()):
    self._settings = settings

  def client(self, bucket: str) -> oss2.Bucket:
    return bucket_client(self._settings, bucket)

  def _call(self, path: str, method: str, *args, **kwargs):
    bucket, key = parse_path(path, object_optional=True)
    try:
      return with_retries(getattr(self.client(bucket), method), key, *args,
                          **kwargs)
    except oss2.exceptions.OssError as e:
      raise to_io_error(e, path) from e

  # -- single objects -----------------------------------------------------
  def stat(self, path: str) -> ObjectInfo:
    head = self._call(path, 'head_object')
    return ObjectInfo(path, head.content_length, float(head.last_modified),
                      (head.etag or '').strip('"'))

  def exists(self, path: str) -> bool:
    try:
      self.stat(path)
      return True
    except FileNotFoundError:
      return False

  def read_range(self, path: str, start: int, end: int) -> bytes:
    """Bytes [start, end); a body cut short is retried, never returned."""
    bucket, key = parse_path(path)

    def fetch():
      result = self.client(bucket).get_object(
          key, byte_range=(start, end - 1),
          headers={'x-oss-range-behavior': 'standard'})
      data = result.read()
      if len(data) != end - start:
        raise oss2.exceptions.RequestError(
            IOError(f'short read: {len(data)} of {end - start} bytes'))
      return data

    try:
      return with_retries(fetch)
    except oss2.exceptions.OssError as e:
      raise to_io_error(e, path) from e

  def read(self, path: str, max_bytes: Optional[int] = None,
           retry: bool = True, timeout: Optional[float] = None) -> bytes:
    """The whole object in one GET (images); an object over max_bytes is
    refused from its Content-Length, a body cut short is an error (retried
    here unless the caller has its own retry policy). timeout bounds each
    attempt as a whole, however slowly the bytes arrive. Raises ValueError
    for a malformed path, OssConfigError, TooLarge or an OSError from
    to_io_error: nothing whose meaning hides in its message."""
    bucket, key = parse_path(path)

    def fetch():
      deadline = None if timeout is None else time.monotonic() + timeout
      result = self.client(bucket).get_object(key)
      try:
        size = result.content_length
        if max_bytes is not None and size is not None and size > max_bytes:
          raise TooLarge(f'{size} bytes exceeds the {max_bytes}-byte cap')
        data = _read_body(result.resp.response.raw, deadline, max_bytes,
                          path)
      finally:
        result.resp.response.close()
      if size is not None and len(data) != size:
        raise oss2.exceptions.RequestError(
            IOError(f'short read: {len(data)} of {size} bytes'))
      return data

    try:
      return with_retries(fetch) if retry else fetch()
    except Exception as e:  # pylint: disable=broad-except
      raise to_io_error(e, path) from e

  def delete(self, path: str) -> None:
    self._call(path, 'delete_object')

  # -- listings -----------------------------------------------------------
  def list(self, prefix_path: str) -> Iterator[ObjectInfo]:
    bucket, prefix = parse_path(prefix_path, object_optional=True)
    client = self.client(bucket)
    token = ''
    while True:
      try:
        page = with_retries(client.list_objects_v2, prefix=prefix,
                            continuation_token=token, max_keys=1000)
      except oss2.exceptions.OssError as e:
        raise to_io_error(e, prefix_path) from e
      for obj in page.object_list:
        yield ObjectInfo(f'{PREFIX}{bucket}/{obj.key}', obj.size,
                         float(obj.last_modified), (obj.etag or '').strip('"'))
      if not page.is_truncated:
        return
      token = page.next_continuation_token

  def delete_tree(self, path: str) -> None:
    """Deletes an object, or every object under path/ (a 'directory')."""
    bucket, key = parse_path(path, object_optional=True)
    if not key.strip('/'):
      raise ValueError(f'refusing to delete a whole bucket: {path}')
    if not key.endswith('/') and self.exists(path):
      self.delete(path)
      return
    prefix = f'{PREFIX}{bucket}/{key.rstrip("/")}/'
    keys = [parse_path(o.path)[1] for o in self.list(prefix)]
    client = self.client(bucket)
    for i in range(0, len(keys), MAX_DELETE_BATCH):
      with_retries(client.batch_delete_objects, keys[i:i + MAX_DELETE_BATCH])

  # -- copies -------------------------------------------------------------
  def copy(self, src: str, dest: str) -> None:
    src_bucket, src_key = parse_path(src)
    dest_bucket, dest_key = parse_path(dest)
    size = self.stat(src).size
    if size <= 1 << 30:
      try:
        with_retries(self.client(dest_bucket).copy_object, src_bucket,
                     src_key, dest_key)
      except oss2.exceptions.OssError as e:
        raise to_io_error(e, src) from e
      return
    self.compose([src], dest)

  def compose(self, sources: Sequence[str], dest: str,
              sizes: Optional[Sequence[int]] = None) -> None:
    """dest = concatenation of sources, copied server-side (UploadPartCopy):
    no byte passes through this process."""
    dest_bucket, dest_key = parse_path(dest)
    client = self.client(dest_bucket)
    sizes = list(sizes) if sizes is not None else [
        self.stat(s).size for s in sources]
    upload_id = with_retries(client.init_multipart_upload, dest_key).upload_id
    parts = []
    try:
      for src, size in zip(sources, sizes):
        src_bucket, src_key = parse_path(src)
        for start, end in _even_ranges(size, PART_SIZE):
          number = len(parts) + 1
          result = with_retries(
              client.upload_part_copy, src_bucket, src_key, (start, end - 1),
              dest_key, upload_id, number)
          parts.append(oss2.models.PartInfo(number, result.etag))
      with_retries(client.complete_multipart_upload, dest_key, upload_id,
                   parts)
    except BaseException:
      try:
        client.abort_multipart_upload(dest_key, upload_id)
      except Exception:  # pylint: disable=broad-except
        _LOG.warning('could not abort multipart upload to %s', dest)
      raise

  @staticmethod
  def can_compose(sizes: Sequence[int]) -> bool:
    """UploadPartCopy needs every part but the last to be >= 100 KiB."""
    return bool(sizes) and all(s >= MIN_COPY_PART for s in sizes[:-1]) and \
        sizes[-1] > 0


def _read_body(raw, deadline: Optional[float], max_bytes: Optional[int],
               path: str) -> bytes:
  """A response body (urllib3) read one socket read at a time, each with no
  more time than the attempt has left: a body trickling in byte by byte
  never outlives the deadline, as it would with a per-read socket timeout."""
  sock = getattr(getattr(raw, 'connection', None), 'sock', None)
  base = sock.gettimeout() if sock is not None else None
  chunks, total = [], 0
  while True:
    if deadline is not None:
      left = deadline - time.monotonic()
      if left <= 0:
        raise TimeoutError(errno.ETIMEDOUT, f'timed out reading {path} '
                           f'({total} bytes in time)')
      if sock is not None:
        sock.settimeout(left if base is None else min(base, left))
    try:
      chunk = raw.read1(1 << 16, decode_content=True)
    except Exception:  # pylint: disable=broad-except
      if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(errno.ETIMEDOUT, f'timed out reading {path} '
                           f'({total} bytes in time)') from None
      raise
    if not chunk:
      return b''.join(chunks)
    total += len(chunk)
    if max_bytes is not None and total > max_bytes:
      raise TooLarge(f'more than the {max_bytes}-byte cap')
    chunks.append(chunk)


def _even_ranges(size: int, part_size: int) -> List[Tuple[int, int]]:
  """[start, end) ranges of about equal size, none above part_size: equal
  parts keep every part of a source far above OSS's 100 KiB minimum, where
  fixed-size cuts could leave a tiny remainder in the middle of the upload."""
  count = max(1, -(-size // part_size))
  bounds = [size * i // count for i in range(count + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


class OssDownloader(Downloader):

  def __init__(self, io: OssIO, path: str):
    self._io = io
    self._path = path
    self._size = io.stat(path).size

  @property
  def size(self):
    return self._size

  def get_range(self, start, end):
    if start >= end:
      return b''
    return self._io.read_range(self._path, start, min(end, self._size))


class OssUploader(Uploader):
  """Buffers up to one part: a small file is one PutObject, a large one a
  multipart upload whose parts are sent as they fill."""

  def __init__(self, io: OssIO, path: str,
               mime_type: str = 'application/octet-stream'):
    self._io = io
    self._path = path
    self._bucket, self._key = parse_path(path)
    self._headers = {'Content-Type': mime_type}
    self._buffer = bytearray()
    self._upload_id = None
    self._parts: List = []

  def _client(self):
    return self._io.client(self._bucket)

  def put(self, data):
    self._buffer += data.tobytes() if hasattr(data, 'tobytes') else data
    while len(self._buffer) >= PART_SIZE:
      chunk = bytes(self._buffer[:PART_SIZE])
      del self._buffer[:PART_SIZE]
      self._send_part(chunk)

  def _send_part(self, chunk: bytes):
    try:
      if self._upload_id is None:
        self._upload_id = with_retries(
            self._client().init_multipart_upload, self._key,
            headers=self._headers).upload_id
      number = len(self._parts) + 1
      result = with_retries(self._client().upload_part, self._key,
                            self._upload_id, number, chunk)
      self._parts.append(oss2.models.PartInfo(number, result.etag))
    except oss2.exceptions.OssError as e:
      self._abort()
      raise to_io_error(e, self._path) from e

  def finish(self):
    try:
      if self._upload_id is None:
        with_retries(self._client().put_object, self._key,
                     bytes(self._buffer), headers=self._headers)
        return
      if self._buffer:
        self._send_part(bytes(self._buffer))
        self._buffer.clear()
      with_retries(self._client().complete_multipart_upload, self._key,
                   self._upload_id, self._parts)
    except oss2.exceptions.OssError as e:
      self._abort()
      raise to_io_error(e, self._path) from e

  def _abort(self):
    if self._upload_id is not None:
      try:
        self._client().abort_multipart_upload(self._key, self._upload_id)
      except Exception:  # pylint: disable=broad-except
        pass
      self._upload_id = None


def parse_allow_list(buckets: Optional[str]) -> Tuple[str, ...]:
  """'-Dbuckets=oss://a/x/,oss://b/' -> normalized prefixes; empty: no limit."""
  prefixes = []
  for item in (buckets or '').split(','):
    item = item.strip()
    if not item:
      continue
    bucket, key = parse_path(item, object_optional=True)  # raises if malformed
    if not _plain_key(key):
      raise ValueError(f'{item!r} has an empty, "." or ".." segment')
    # A bare bucket or a folder: never let 'oss://b/img' also allow 'imgX'.
    prefixes.append(f'{PREFIX}{bucket}/' + (key if not key or
                                             key.endswith('/') else key + '/'))
  return tuple(prefixes)


def _plain_key(key: str) -> bool:
  """No empty, '.' or '..' segment (one trailing '/' marks a folder)."""
  segments = key.split('/')
  if segments[-1] == '':
    segments.pop()
  return all(s not in ('', '.', '..') for s in segments)


# What urlsplit (and Beam's scheme match, after strip()) skip before a scheme.
_LEADING = ''.join(map(chr, range(33)))


def allowed(path: str, prefixes: Sequence[str], folder: bool = False) -> bool:
  """Whether an allow-list admits path: the bucket is a listed one and the
  exact key that will be requested starts with a listed key prefix. Nothing
  is normalised: OSS keys are flat strings, so oss://b//x is the key '/x',
  outside oss://b/x/. Keys with an empty, '.' or '..' segment are refused
  under a list whatever the prefix: tools that mount or sync buckets
  normalise them, so what a reviewer reads is not what would be requested.
  folder: path may also name a listed folder itself (a model directory
  given without its trailing slash)."""
  if not prefixes:
    return True
  if not path.startswith(PREFIX):
    # 'OSS://x', ' oss://x': not ours to guess what a file system makes of.
    return not path.lstrip(_LEADING).lower().startswith('oss:')
  bucket, key = parse_path(path, object_optional=True)
  if not _plain_key(key):
    return False
  for prefix in prefixes:
    prefix_bucket, prefix_key = parse_path(prefix, object_optional=True)
    if bucket == prefix_bucket and (key.startswith(prefix_key) or (
        folder and key + '/' == prefix_key)):
      return True
  return False
