"""oss2.Bucket clients: settings, one shared client per bucket and process,
retries, and oss2's failures translated into storage errors."""
import dataclasses
import errno
import functools
import os
import random
import threading
import time
from typing import Callable, Dict, Optional, Tuple

import oss2
import requests
import urllib3

from ev_predict.transforms import redact
from ev_predict.transforms import storage
from ev_predict.transforms.oss import credentials
from ev_predict.transforms.oss.paths import normalize_endpoint

_RETRIES = 4

# bucket name -> client, as OssIO takes it (injectable, like Beam's
# S3IO(client=)).
ClientFactory = Callable[[str], oss2.Bucket]


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
        return normalize_endpoint(host)
      if not sep:
        default = item
    default = default or os.environ.get('OSS_ENDPOINT') or \
        credentials.config_file().get('endpoint')
    if not default:
      raise storage.ConfigError(
          f'no OSS endpoint for bucket {bucket!r}: set -DossHost or '
          'OSS_ENDPOINT')
    return normalize_endpoint(default)


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
      client = oss2.Bucket(
          oss2.ProviderAuth(credentials.provider(settings.role_arn)),
          settings.endpoint_for(bucket), bucket, session=_session(),
          connect_timeout=settings.connect_timeout)
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


def to_storage_error(e: BaseException, path: str) -> BaseException:
  """Any failure of an OSS call as a storage error, chosen by the
  exception's type and the server's status only (a path can contain
  '403'). What has no more specific type is Transient, as a connection
  that broke mid-call is."""
  if isinstance(e, storage.StorageError):
    return e   # already one of ours
  status = getattr(e, 'status', None) if isinstance(
      e, oss2.exceptions.OssError) else None
  if isinstance(e, oss2.exceptions.NotFound) or status == 404:
    return storage.NotFound(errno.ENOENT, f'not found: {path}')
  if status == 403:
    code = getattr(e, 'code', '') or 'AccessDenied'
    return storage.Forbidden(errno.EACCES, f'{code}: {path}')
  cause = getattr(e, 'exception', None) or e
  if isinstance(cause, (requests.exceptions.Timeout, TimeoutError,
                        urllib3.exceptions.TimeoutError)):
    return storage.Timeout(errno.ETIMEDOUT, f'timed out: {path}')
  if isinstance(e, (oss2.exceptions.RequestError,
                    requests.exceptions.RequestException,
                    urllib3.exceptions.HTTPError)):
    return storage.Transient(errno.ECONNRESET,
                             f'{type(cause).__name__}: {path}')
  if isinstance(e, oss2.exceptions.OssError):
    return storage.ServerError(e.status, f'OSS {e.status} {e.code or ""}: '
                               f'{path}')
  return storage.Transient(getattr(e, 'errno', None) or errno.EIO,
                           f'{type(e).__name__}: {path}')
