"""Fetch image bytes for records that name a source: local, file://, http(s) or
any scheme registered with Beam's FileSystems (oss:// arrives as a plugin),
after the job's access policy (access.py) has let the source through."""
import dataclasses
import errno
import os
import random
import stat
import time
import urllib.parse
from typing import Callable, Optional, Tuple

from ev_predict.transforms import access
from ev_predict.transforms import http
from ev_predict.transforms import redact
from ev_predict.transforms import storage
from ev_predict.transforms import record as rec
from ev_predict.transforms.record import Record


# Raised by every reader; defined with the HTTP client, which raises it too.
FetchError = http.FetchError


@dataclasses.dataclass(frozen=True)
class FetchConfig:
  connect_timeout: float = 10.0
  # Per attempt, all of it: connecting, the headers and the whole body (a
  # body still arriving then is cut: a transient timeout).
  read_timeout: float = 30.0
  retries: int = 3              # extra attempts after a transient failure
  backoff: float = 0.5          # seconds, doubled per attempt, with jitter
  max_bytes: int = 64 << 20     # larger images are refused, not read
  max_redirects: int = 5
  pool_size: int = 16           # connections kept per host
  # The access policy's fields (see access.AccessPolicy).
  allowed_prefixes: Tuple[str, ...] = ()
  block_private_networks: bool = False
  allow_local_files: bool = True

  @property
  def access_policy(self) -> access.AccessPolicy:
    return access.AccessPolicy(self.allowed_prefixes,
                               self.block_private_networks,
                               self.allow_local_files)


def needs_fetch(record: Record) -> bool:
  """Whether there is anything to fetch: a base64 line brings its data."""
  return record.data is None and record.source is not None


class Fetcher:
  """Thread-safe: one per worker process, called from many threads."""

  def __init__(self, config: FetchConfig = FetchConfig(),
               attempts: Optional[Callable[[int], None]] = None):
    """attempts, if given, hears how many attempts each read took (from the
    calling thread; the stage's metrics collect them)."""
    self._config = config
    self._attempts = attempts or (lambda count: None)
    # urllib3 logs request lines at DEBUG: a presigned URL's signature.
    redact.install()
    self._access = config.access_policy
    # FileSystems.get_filesystem builds a new instance (parsing the pipeline
    # options) on every call: once per scheme is enough for a worker.
    self._storages = {}
    self._http = http.HttpClient(config, self._access)

  def __call__(self, record: Record) -> Record:
    """A good record with something to fetch (the stage runner passes the
    others on: ThreadedMap(needs=needs_fetch)) -> with data."""
    refusal = self._access.refusal(record.source)
    if refusal:
      return record.fail(*refusal)
    attempt = 0
    while True:
      try:
        data = self.read(record.source)
        self._attempts(attempt + 1)
        return record.but(data=data)
      except FetchError as e:
        if not e.transient or attempt >= self._config.retries:
          self._attempts(attempt + 1)
          suffix = f' (after {attempt + 1} attempts)' if attempt else ''
          return record.fail(e.kind, f'{e}{suffix}')
      delay = self._config.backoff * (2 ** attempt)
      time.sleep(delay * (0.5 + random.random()))
      attempt += 1

  def read(self, source: str) -> bytes:
    scheme = access.scheme_of(source)
    if scheme in ('http', 'https'):
      return self._read_http(source)
    if scheme == 'file':
      return self._read_local(_file_url_to_path(source))
    if not scheme:
      return self._read_local(source)
    return self._read_filesystem(source)

  def _read_http(self, url: str) -> bytes:
    return self._http.get(url)

  def _read_local(self, path: str) -> bytes:
    # Only regular files: a FIFO, /dev/stdin, a socket or a device could
    # block forever or never end. stat first, so that nothing else is even
    # opened (opening a device can have effects); O_NONBLOCK, so that a FIFO
    # swapped in after the stat cannot block the open; fstat, so that what
    # is read is what was checked.
    try:
      _check_regular(os.stat(path), path)
      fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY |
                   os.O_CLOEXEC)
      with os.fdopen(fd, 'rb') as f:
        info = os.fstat(fd)
        _check_regular(info, path)
        if info.st_size > self._config.max_bytes:
          raise FetchError(
              rec.TOO_LARGE, f'{info.st_size} bytes exceeds the '
              f'{self._config.max_bytes}-byte cap')
        data = f.read(self._config.max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError) as e:
      raise FetchError(rec.NOT_FOUND, f'no such file: {path}') from e
    except PermissionError as e:
      raise FetchError(rec.FORBIDDEN, f'permission denied: {path}') from e
    except OSError as e:
      if e.errno == errno.ENAMETOOLONG:   # the line itself: never retried
        raise FetchError(rec.BAD_LINE, 'path too long') from e
      raise FetchError(rec.FETCH, f'{e.strerror or e}: {path}',
                       e.errno in (errno.EIO, errno.EAGAIN)) from e
    except ValueError as e:   # a NUL byte in the path
      raise FetchError(rec.BAD_LINE, f'invalid path: {e}') from e
    if len(data) > self._config.max_bytes:   # it grew since the fstat
      raise FetchError(
          rec.TOO_LARGE, f'more than the {self._config.max_bytes}-byte cap')
    return data

  def _read_filesystem(self, path: str) -> bytes:
    scheme = path.split('://', 1)[0].lower()
    try:
      store = self._storages.get(scheme)
      if store is None:
        store = self._storages[scheme] = storage.for_path(path)
      cap = self._config.max_bytes
      # One request per image where the file system offers it (OSS),
      # bounded as a whole by the timeout.
      data = store.read_object(path, cap, self._config.read_timeout)
    except Exception as e:  # pylint: disable=broad-except
      raise _classify_storage(e, path) from e
    if len(data) > cap:
      raise FetchError(rec.TOO_LARGE, f'more than the {cap}-byte cap')
    return data


_FILE_TYPES = ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'),
               (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a character device'),
               (stat.S_ISBLK, 'a block device'))


def _check_regular(info: os.stat_result, path: str) -> None:
  if stat.S_ISREG(info.st_mode):
    return
  what = next((name for test, name in _FILE_TYPES if test(info.st_mode)),
              'a special file')
  raise FetchError(rec.UNSUPPORTED, f'not a regular file ({what}): {path}')


def _file_url_to_path(url: str) -> str:
  try:
    parts = urllib.parse.urlsplit(url)
  except ValueError as e:   # 'file://[/x'
    raise FetchError(rec.BAD_LINE, f'invalid file URL: {e}') from e
  if parts.netloc not in ('', 'localhost'):
    raise FetchError(rec.UNSUPPORTED, f'remote file URL: {url}')
  return urllib.parse.unquote(parts.path, errors='surrogateescape')


# Kinds by error type, most specific first; messages hold the path, and
# are never read to decide.
_KINDS = ((storage.TooLarge, rec.TOO_LARGE), (storage.NotFound, rec.NOT_FOUND),
          (storage.Forbidden, rec.FORBIDDEN), (storage.Timeout, rec.TIMEOUT),
          (storage.InvalidPath, rec.BAD_LINE),
          (storage.Unsupported, rec.UNSUPPORTED),
          (storage.StorageError, rec.FETCH))


def _classify_storage(e: BaseException, path: str) -> FetchError:
  """A read's failure as a FetchError, by the error's type only."""
  if isinstance(e, FetchError):
    return e
  e = storage.translate(e, path)
  for error_type, kind in _KINDS:
    if isinstance(e, error_type):
      if kind == rec.NOT_FOUND:
        message = f'not found: {path}'
      elif kind == rec.FORBIDDEN:
        message = f'access denied ({rec.first_line(e.reason)})'
      else:
        message = rec.first_line(e.reason)
      return FetchError(kind, message, e.transient)
  # No storage error: an OSError of unknown cause, worth another attempt.
  return FetchError(rec.FETCH, f'{type(e).__name__}: '
                    f'{rec.first_line(storage.reason_of(e))}', True)
