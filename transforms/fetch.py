"""Fetch image bytes for records that name a source: local, file://, http(s) or
any scheme registered with Beam's FileSystems (oss:// arrives as a plugin)."""
import dataclasses
import errno
import ipaddress
import os
import random
import socket
import time
import urllib.parse
from typing import Tuple

import urllib3
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import ossio
from transforms import record as rec
from transforms.record import Record


@dataclasses.dataclass(frozen=True)
class FetchConfig:
  connect_timeout: float = 10.0
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


class FetchError(Exception):

  def __init__(self, kind: str, message: str, transient: bool = False):
    super().__init__(message)
    self.kind = kind
    self.transient = transient


_TRANSIENT_STATUS = frozenset([408, 429, 500, 502, 503, 504])


class Fetcher:
  """Thread-safe: one per worker process, called from many threads."""

  def __init__(self, config: FetchConfig = FetchConfig()):
    self._config = config
    # FileSystems.get_filesystem builds a new instance (parsing the pipeline
    # options) on every call: once per scheme is enough for a worker.
    self._filesystems = {}
    self._http = urllib3.PoolManager(
        maxsize=config.pool_size, block=False,
        timeout=urllib3.Timeout(
            connect=config.connect_timeout, read=config.read_timeout),
        # Retries and redirects are ours (per kind, with backoff).
        retries=False)

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
    scheme = urllib.parse.urlsplit(source).scheme.lower() if '://' in source \
        else ''
    if scheme in ('http', 'https'):
      return self._read_http(source)
    if scheme == 'file':
      return self._read_local(_file_url_to_path(source))
    if not scheme:
      return self._read_local(source)
    return self._read_filesystem(source)

  def _read_http(self, url: str) -> bytes:
    # Redirects are followed here, not by urllib3, so that every hop is
    # checked: http(s) only, and no private addresses when so configured.
    for _ in range(self._config.max_redirects + 1):
      self._check_url(url)
      try:
        response = self._http.request(
            'GET', url, preload_content=False, decode_content=True,
            redirect=False)
      except (urllib3.exceptions.HTTPError, OSError) as e:
        raise _classify_urllib3(e) from e
      try:
        if response.status in (301, 302, 303, 307, 308):
          location = response.headers.get('Location')
          if not location:
            raise FetchError(rec.FETCH, f'HTTP {response.status} without '
                             f'Location for {url}')
          url = urllib.parse.urljoin(url, location)
          continue
        return self._read_body(response, url)
      finally:
        response.release_conn()
    raise FetchError(rec.FETCH, f'too many redirects (more than '
                     f'{self._config.max_redirects})')

  def _check_url(self, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ('http', 'https'):
      raise FetchError(rec.FORBIDDEN,
                       f'redirect to a {parts.scheme or "relative"} URL '
                       'refused')
    if not parts.hostname:
      raise FetchError(rec.BAD_LINE, f'invalid URL: {url}')
    if self._config.block_private_networks:
      _refuse_private(parts.hostname, parts.port or (
          443 if parts.scheme.lower() == 'https' else 80))

  def _read_body(self, response, url: str) -> bytes:
    try:
      status = response.status
      if status >= 400:
        raise _status_error(status, url)
      length = response.headers.get('Content-Length')
      if length and length.isdigit() and int(length) > self._config.max_bytes:
        raise FetchError(
            rec.TOO_LARGE,
            f'{length} bytes exceeds the {self._config.max_bytes}-byte cap')
      return _read_capped(response, self._config.max_bytes)
    except urllib3.exceptions.HTTPError as e:
      # Includes a body shorter than its Content-Length: never a decode input.
      raise _classify_urllib3(e) from e
    except OSError as e:
      raise FetchError(rec.FETCH, f'{type(e).__name__}: {e}', True) from e

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


def _refuse_private(host: str, port: int) -> None:
  try:
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
  except socket.gaierror as e:
    raise FetchError(rec.FETCH, f'cannot resolve host {host}') from e
  for info in infos:
    address = ipaddress.ip_address(info[4][0].split('%')[0])
    if not address.is_global or address.is_multicast:
      raise FetchError(rec.FORBIDDEN,
                       f'{host} resolves to a non-public address {address}')


def _file_url_to_path(url: str) -> str:
  parts = urllib.parse.urlsplit(url)
  if parts.netloc not in ('', 'localhost'):
    raise FetchError(rec.UNSUPPORTED, f'remote file URL: {url}')
  return urllib.parse.unquote(parts.path, errors='surrogateescape')


def _read_capped(response, limit: int) -> bytes:
  chunks, total = [], 0
  for chunk in response.stream(1 << 16):
    total += len(chunk)
    if total > limit:
      raise FetchError(rec.TOO_LARGE,
                       f'body exceeds the {limit}-byte cap')
    chunks.append(chunk)
  return b''.join(chunks)


def _status_error(status: int, url: str) -> FetchError:
  if status in (404, 410):
    return FetchError(rec.NOT_FOUND, f'HTTP {status} for {url}')
  if status in (401, 403):
    return FetchError(rec.FORBIDDEN, f'HTTP {status} for {url}')
  return FetchError(rec.FETCH, f'HTTP {status} for {url}',
                    transient=status in _TRANSIENT_STATUS)


def _classify_urllib3(e: BaseException) -> FetchError:
  exc = urllib3.exceptions
  if isinstance(e, FetchError):
    return e
  if isinstance(e, exc.NameResolutionError):
    return FetchError(rec.FETCH, f'cannot resolve host: {_short(e)}')
  if isinstance(e, exc.NewConnectionError):
    # urllib3 makes this a ConnectTimeoutError subclass, but a refused or
    # unreachable host did not time out.
    return FetchError(rec.FETCH, f'cannot connect: {_short(e)}', True)
  if isinstance(e, (exc.TimeoutError, socket.timeout, TimeoutError)):
    return FetchError(rec.TIMEOUT, f'timed out: {_short(e)}', True)
  if isinstance(e, exc.LocationValueError):
    return FetchError(rec.BAD_LINE, f'invalid URL: {e}')
  return FetchError(rec.FETCH, f'{type(e).__name__}: {_short(e)}', True)


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
