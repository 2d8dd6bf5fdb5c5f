"""Fetch image bytes for records that name a source: local, file://, http(s) or
any scheme registered with Beam's FileSystems (oss:// arrives as a plugin)."""
import dataclasses
import errno
import os
import random
import re
import stat
import time
import urllib.parse
from typing import Callable, Optional, Tuple

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ev_predict.transforms import http
from ev_predict.transforms import ossio
from ev_predict.transforms import redact
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
  # oss:// locations this job may read (empty: any); others are refused
  # without a request.
  allowed_prefixes: Tuple[str, ...] = ()
  # For untrusted file lists: refuse URLs whose host resolves to a loopback,
  # private, link-local or otherwise non-public address (SSRF).
  block_private_networks: bool = False
  # False for untrusted lists: local paths and file:// URLs are refused
  # without touching the disk.
  allow_local_files: bool = True


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
    # FileSystems.get_filesystem builds a new instance (parsing the pipeline
    # options) on every call: once per scheme is enough for a worker.
    self._filesystems = {}
    self._http = http.HttpClient(config)

  def __call__(self, record: Record) -> Record:
    """A good record (the stage runner passes failed ones on) -> with data."""
    if not needs_fetch(record):
      return record
    refusal = self._refusal(record.source)
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

  def _refusal(self, source: str) -> Optional[Tuple[str, str]]:
    """(kind, message) when the job's access rules refuse source."""
    if _CONTROL.search(source):
      # urlsplit drops tabs and leading control characters that a plain
      # string test keeps ('fi\tle:///etc/x' reads as file:///etc/x).
      return rec.BAD_LINE, 'control character in the path or URL'
    if not self._config.allow_local_files and _is_local(source):
      return rec.FORBIDDEN, (f'{source} is a local file '
                             '(-Dallow_local_files=false)')
    try:
      inside = ossio.allowed(source, self._config.allowed_prefixes)
    except ValueError as e:
      return rec.BAD_LINE, str(e)
    if not inside:
      return rec.FORBIDDEN, f'{source} is outside the allowed buckets'
    return None

  def read(self, source: str) -> bytes:
    scheme = scheme_of(source)
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
    fs = self._filesystems.get(scheme)
    if fs is None:
      try:
        fs = self._filesystems[scheme] = FileSystems.get_filesystem(path)
      except ValueError as e:
        raise FetchError(rec.UNSUPPORTED,
                         f'unsupported scheme in {path!r}') from e
    cap, timeout = self._config.max_bytes, self._config.read_timeout
    try:
      if hasattr(fs, 'read_object'):
        # One request per image where the file system offers it (OSS),
        # bounded as a whole by the timeout.
        data = fs.read_object(path, cap, timeout=timeout)
      else:
        data = _read_stream(path, cap, timeout)
    except Exception as e:  # pylint: disable=broad-except
      raise _classify_filesystem(e, path) from e
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


_CONTROL = re.compile('[\x00-\x1f\x7f]')


def scheme_of(source: str) -> str:
  """The scheme that both the access rules and the readers go by: one
  function, so that a check and a read never see different schemes."""
  if '://' not in source:
    return ''
  try:
    return urllib.parse.urlsplit(source).scheme.lower()
  except ValueError:   # a host NFKC-normalizing to '/', '@'...: the
    return source.split(':', 1)[0].lower()  # reader says what is wrong


def _is_local(source: str) -> bool:
  return scheme_of(source) in ('', 'file')


def _read_stream(path: str, cap: int, timeout: float) -> bytes:
  """Any other Beam file system, read in chunks until the per-attempt
  deadline: the deadline is checked between chunks (a single read that
  blocks is that file system's own timeout to bound)."""
  deadline = time.monotonic() + timeout
  chunks, total = [], 0
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    while True:
      if time.monotonic() >= deadline:
        raise TimeoutError(errno.ETIMEDOUT, f'timed out reading {path} '
                           f'({total} bytes in {timeout} s)')
      chunk = f.read(min(1 << 16, cap + 1 - total))
      if not chunk:
        return b''.join(chunks)
      chunks.append(chunk)
      total += len(chunk)
      if total > cap:
        raise ossio.TooLarge(f'more than the {cap}-byte cap')


def _file_url_to_path(url: str) -> str:
  try:
    parts = urllib.parse.urlsplit(url)
  except ValueError as e:   # 'file://[/x'
    raise FetchError(rec.BAD_LINE, f'invalid file URL: {e}') from e
  if parts.netloc not in ('', 'localhost'):
    raise FetchError(rec.UNSUPPORTED, f'remote file URL: {url}')
  return urllib.parse.unquote(parts.path, errors='surrogateescape')


def _classify_filesystem(e: BaseException, path: str) -> FetchError:
  """By the exception's type only: its text holds the path, and a key such as
  2024/img_1403.jpg must not make a reset look like a 403."""
  if isinstance(e, BeamIOError) and len(e.exception_details or {}) == 1:
    e = next(iter(e.exception_details.values()))   # the per-path cause
  if isinstance(e, FetchError):
    return e
  if isinstance(e, ossio.TooLarge):
    return FetchError(rec.TOO_LARGE, str(e))
  if isinstance(e, FileNotFoundError):
    return FetchError(rec.NOT_FOUND, f'not found: {path}')
  if isinstance(e, PermissionError):
    return FetchError(rec.FORBIDDEN, f'access denied ({_reason(e)})')
  if isinstance(e, TimeoutError):
    return FetchError(rec.TIMEOUT, _reason(e), True)
  if isinstance(e, ossio.ServerError):
    return FetchError(rec.FETCH, _reason(e), e.transient)
  if isinstance(e, ossio.OssConfigError):
    return FetchError(rec.FETCH, str(e))
  if isinstance(e, ValueError):   # e.g. oss://bucket without an object
    return FetchError(rec.BAD_LINE, str(e))
  return FetchError(rec.FETCH, f'{type(e).__name__}: {_reason(e)}', True)


def _reason(e: BaseException) -> str:
  return _short(e.strerror if isinstance(e, OSError) and e.strerror else e)


def _short(e: BaseException) -> str:
  return str(e).split('\n')[0][:300]
