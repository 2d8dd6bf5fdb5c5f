"""Fetch image bytes for records that name a source: local, file://, http(s) or
any scheme registered with Beam's FileSystems (oss:// arrives as a plugin)."""
import dataclasses
import errno
import os
import random
import socket
import time
import urllib.parse
from typing import Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import http
from transforms import ossio
from transforms import record as rec
from transforms.record import Record


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


class Fetcher:
  """Thread-safe: one per worker process, called from many threads."""

  def __init__(self, config: FetchConfig = FetchConfig()):
    self._config = config
    # FileSystems.get_filesystem builds a new instance (parsing the pipeline
    # options) on every call: once per scheme is enough for a worker.
    self._filesystems = {}
    self._http = http.HttpClient(config)

  def __call__(self, record: Record) -> Record:
    if not record.ok or record.data is not None or record.source is None:
      return record
    if not ossio.allowed(record.source, self._config.allowed_prefixes):
      return record.fail(rec.FORBIDDEN,
                         f'{record.source} is outside the allowed buckets')
    attempt = 0
    while True:
      try:
        return record.but(data=self.read(record.source))
      except FetchError as e:
        if not e.transient or attempt >= self._config.retries:
          suffix = f' (after {attempt + 1} attempts)' if attempt else ''
          return record.fail(e.kind, f'{e}{suffix}')
      delay = self._config.backoff * (2 ** attempt)
      time.sleep(delay * (0.5 + random.random()))
      attempt += 1

  def read(self, source: str) -> bytes:
    try:
      scheme = urllib.parse.urlsplit(source).scheme.lower() \
          if '://' in source else ''
    except ValueError:   # a host NFKC-normalizing to '/', '@'...: the
      scheme = source.split(':', 1)[0].lower()  # reader says what is wrong
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
    try:
      size = os.path.getsize(path)
      if size > self._config.max_bytes:
        raise FetchError(
            rec.TOO_LARGE,
            f'{size} bytes exceeds the {self._config.max_bytes}-byte cap')
      with open(path, 'rb') as f:
        return f.read(self._config.max_bytes + 1)
    except FileNotFoundError as e:
      raise FetchError(rec.NOT_FOUND, f'no such file: {path}') from e
    except PermissionError as e:
      raise FetchError(rec.FORBIDDEN, f'permission denied: {path}') from e
    except IsADirectoryError as e:
      raise FetchError(rec.NOT_FOUND, f'is a directory: {path}') from e
    except OSError as e:
      raise FetchError(rec.FETCH, f'{e.strerror or e}: {path}',
                       e.errno in (errno.EIO, errno.EAGAIN)) from e

  def _read_filesystem(self, path: str) -> bytes:
    scheme = path.split('://', 1)[0].lower()
    fs = self._filesystems.get(scheme)
    if fs is None:
      try:
        fs = self._filesystems[scheme] = FileSystems.get_filesystem(path)
      except ValueError as e:
        raise FetchError(rec.UNSUPPORTED,
                         f'unsupported scheme in {path!r}') from e
    try:
      if hasattr(fs, 'read_object'):
        # One request per image where the file system offers it (OSS).
        data = fs.read_object(path, self._config.max_bytes)
      else:
        with FileSystems.open(
            path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
          data = f.read(self._config.max_bytes + 1)
    except ossio.TooLarge as e:
      raise FetchError(rec.TOO_LARGE, str(e)) from e
    except Exception as e:  # pylint: disable=broad-except
      raise _classify_filesystem(e, path) from e
    if len(data) > self._config.max_bytes:
      raise FetchError(
          rec.TOO_LARGE, f'more than the {self._config.max_bytes}-byte cap')
    return data


def _file_url_to_path(url: str) -> str:
  parts = urllib.parse.urlsplit(url)
  if parts.netloc not in ('', 'localhost'):
    raise FetchError(rec.UNSUPPORTED, f'remote file URL: {url}')
  return urllib.parse.unquote(parts.path, errors='surrogateescape')


def _classify_filesystem(e: BaseException, path: str) -> FetchError:
  text = f'{type(e).__name__}: {e}'
  lowered = text.lower()
  if isinstance(e, FileNotFoundError) or 'not found' in lowered or \
      'nosuchkey' in lowered or '404' in lowered:
    return FetchError(rec.NOT_FOUND, f'not found: {path}')
  if isinstance(e, PermissionError) or 'accessdenied' in lowered or \
      '403' in lowered:
    return FetchError(rec.FORBIDDEN, f'access denied: {path}')
  if isinstance(e, (TimeoutError, socket.timeout)):
    return FetchError(rec.TIMEOUT, f'timed out: {path}', True)
  return FetchError(rec.FETCH, text, True)


def _short(e: BaseException) -> str:
  return str(e).split('\n')[0][:300]
