"""HTTP(S) GETs for the fetch stage.

A URL is parsed once, here, and the request is built from that parse alone.
Its host is resolved once; the job's access policy judges every address
(-Dblock_private_networks), and the connection goes to an address that was
judged, never to a second resolution (DNS rebinding). Each attempt has one deadline for
connect, headers and the whole body, redirects included. Every response ends
with its body read to the end (then its connection is kept for the next
request) or with its connection closed: a body left on a kept-alive
connection would be read as the answer to the next request.
"""
import collections
import functools
import heapq
import http.client
import ipaddress
import itertools
import re
import socket
import ssl
import threading
import time
import urllib.parse
from typing import List, NamedTuple

import urllib3

from ev_predict.transforms import record as rec


class FetchError(Exception):

  def __init__(self, kind: str, message: str, transient: bool = False):
    super().__init__(message)
    self.kind = kind
    self.transient = transient


_TRANSIENT_STATUS = frozenset([408, 429, 500, 502, 503, 504])
_REDIRECTS = frozenset([301, 302, 303, 307, 308])
# Error and redirect bodies up to this size are read so that the connection
# can serve the next request; past it a new connection is cheaper.
_DRAIN_BYTES = 64 << 10
_MAX_POOLS = 64            # (scheme, address, port, host) pools kept
_DNS_TTL = 30.0            # seconds an answer is reused: one lookup per image
_DNS_ENTRIES = 4096        # would cost more than the image often enough
# Lowercase host names as they are sent; '_' occurs in real ones.
_HOST = re.compile(r'[a-z0-9_.-]+\Z')
# RFC 3986 reserved characters and '%': kept as they are in the request
# target; everything else (spaces, non-ASCII, raw non-UTF-8 bytes) is
# percent-encoded.
_SAFE = "!$%&'()*+,/:;=?@[]~"
_GLOBAL_UNICAST = ipaddress.ip_network('2000::/3')
_NAT64 = ipaddress.ip_network('64:ff9b::/96')
_STALE = (http.client.RemoteDisconnected, ConnectionResetError,
          BrokenPipeError, ConnectionAbortedError)


def resolve(host: str, port: int) -> List[str]:
  """The addresses of host, in the order to try them (tests replace it)."""
  infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  return list(dict.fromkeys(info[4][0] for info in infos))


def is_public(address) -> bool:
  """Whether an ipaddress address is public (block_private_networks fetches
  only from those; tests replace it)."""
  if address.version == 6:
    # IPv6 forms that carry an IPv4 address are judged by that address too.
    embedded = [address.ipv4_mapped, address.sixtofour,
                *(address.teredo or ())]
    if address in _NAT64:
      embedded.append(ipaddress.IPv4Address(int(address) & 0xffffffff))
    if any(v4 is not None and not is_public(v4) for v4 in embedded):
      return False
    # Only global unicast (2000::/3) and the well-known NAT64 prefix: the
    # IPv4-compatible ::/96, SIIT ::ffff:0:0:0/96, local-use NAT64
    # 64:ff9b:1::/48 and site-local fec0::/10 reach IPv4 or local hosts on
    # some networks, and Python's is_global does not list them all.
    if address not in _GLOBAL_UNICAST and address not in _NAT64:
      return False
  return address.is_global and not address.is_multicast


class Target(NamedTuple):
  scheme: str
  host: str          # what is resolved and verified: IDNA, no brackets
  port: int
  path: str          # the request target: path and query, ASCII
  host_header: str


def parse(url: str) -> Target:
  """The one parse of an http(s) URL; FetchError(bad_line) if refused.

  Backslashes and user info are refused: parsers disagree on where such a
  host ends, which is how a URL passes a check for one host and reaches
  another."""
  if '\\' in url:
    raise FetchError(rec.BAD_LINE, f'backslash in URL refused: {url}')
  try:
    parts = urllib.parse.urlsplit(url)
    explicit_port = parts.port
  except ValueError as e:
    raise FetchError(rec.BAD_LINE, f'invalid URL ({e}): {url}') from e
  scheme = parts.scheme.lower()
  if scheme not in ('http', 'https'):
    raise FetchError(rec.UNSUPPORTED, f'not an http(s) URL: {url}')
  if '@' in parts.netloc:
    raise FetchError(rec.BAD_LINE, f'user info in URL refused: {url}')
  host = parts.hostname or ''
  if parts.netloc.startswith('['):
    after = parts.netloc[parts.netloc.find(']') + 1:]
    if after and not after.startswith(':'):
      raise FetchError(rec.BAD_LINE, f'invalid host: {url}')
    try:
      host = str(ipaddress.IPv6Address(host))
    except ValueError as e:
      raise FetchError(rec.BAD_LINE, f'invalid IPv6 host: {url}') from e
  elif not _HOST.match(host):
    try:
      host = host.encode('idna').decode('ascii')
    except UnicodeError as e:
      raise FetchError(rec.BAD_LINE, f'invalid host: {url}') from e
    if not _HOST.match(host):
      raise FetchError(rec.BAD_LINE, f'invalid host: {url}')
  default = 443 if scheme == 'https' else 80
  port = default if explicit_port is None else explicit_port
  if not port:
    raise FetchError(rec.BAD_LINE, f'invalid port: {url}')
  path = (parts.path or '/') + (f'?{parts.query}' if parts.query else '')
  # Lines are decoded with surrogateescape: the bytes go out as they came.
  path = urllib.parse.quote(path.encode('utf-8', 'surrogateescape'), _SAFE)
  host_header = f'[{host}]' if ':' in host else host
  if port != default:
    host_header += f':{port}'
  return Target(scheme, host, port, path, host_header)


class HttpClient:
  """Thread-safe GETs with connection reuse per (scheme, address, port,
  host)."""

  def __init__(self, config, access):
    # config: a fetch.FetchConfig (connect_timeout, read_timeout, max_bytes,
    # max_redirects, pool_size); access: the job's access.AccessPolicy,
    # which judges every address a host resolves to.
    self._config = config
    self._access = access
    self._lock = threading.Lock()
    self._pools = collections.OrderedDict()
    self._dns = {}
    self._watchdog = _Watchdog()

  def get(self, url: str) -> bytes:
    """The body of url, following redirects; FetchError otherwise."""
    deadline = time.monotonic() + self._config.read_timeout
    target = parse(url)
    # Redirects are followed here so that every hop is parsed and checked
    # like the first URL.
    for _ in range(self._config.max_redirects + 1):
      result = self._exchange(target, url, deadline)
      if isinstance(result, bytes):
        return result
      url, target = _redirect(url, result)
    raise FetchError(rec.FETCH, f'too many redirects (more than '
                     f'{self._config.max_redirects})')

  def _exchange(self, target: Target, url: str, deadline: float):
    """The body (bytes) or a redirect's Location (str)."""
    error = None
    for address in self._addresses(target):
      try:
        return self._on(self._pool(target, address), target, url, deadline)
      except _Unreachable as e:
        error = e.error   # the host's next address may answer
    raise error

  def _addresses(self, target: Target) -> List[str]:
    key = (target.host, target.port)
    now = time.monotonic()
    cached = self._dns.get(key)
    if cached and cached[0] > now:
      addresses = cached[1]
    else:
      try:
        addresses = resolve(target.host, target.port)
      except (OSError, UnicodeError) as e:
        raise FetchError(rec.FETCH, f'cannot resolve host {target.host}') \
            from e
      if not addresses:
        raise FetchError(rec.FETCH, f'cannot resolve host {target.host}')
      with self._lock:
        if len(self._dns) >= _DNS_ENTRIES:
          self._dns.clear()
        self._dns[key] = (now + _DNS_TTL, addresses)
    refused = self._access.refused_address(addresses)
    if refused is not None:
      raise FetchError(rec.FORBIDDEN, f'{target.host} resolves to a '
                       f'non-public address {refused}')
    return addresses

  def _pool(self, target: Target, address: str) -> '_Pool':
    key = (target.scheme, address, target.port, target.host)
    with self._lock:
      pool = self._pools.get(key)
      if pool is not None:
        self._pools.move_to_end(key)
        return pool
      pool = self._pools[key] = _Pool(functools.partial(
          _connection, *key), self._config.pool_size)
      if len(self._pools) > _MAX_POOLS:
        self._pools.popitem(last=False)[1].close()
    return pool

  def _on(self, pool: '_Pool', target: Target, url: str, deadline: float):
    conn, reused = pool.get()
    watch, complete = None, False
    try:
      for _ in range(2):
        self._connect(conn, deadline)
        watch = self._watchdog.watch(conn.sock, deadline)
        try:
          response = self._send(conn, target, deadline)
          break
        except _STALE:
          # The server closed an idle kept-alive connection as we reused
          # it: the request never arrived. Once more on a new connection.
          if not reused or watch.fired:
            raise
          self._watchdog.unwatch(watch)
          conn.close()
          reused = False
      result, complete = self._read(response, url, watch)
    except (FetchError, _Unreachable):
      raise
    except Exception as e:  # pylint: disable=broad-except
      if watch is not None and watch.fired:
        raise self._timeout(url) from e
      raise _classify(e) from e
    finally:
      fired = watch is not None and self._watchdog.unwatch(watch)
      # Only a body read to its end leaves the connection ready for the
      # next request ("closed" is no sign of it: urllib3 also closes a
      # response it abandons mid-body, the rest of it still on the socket).
      if complete and not fired and conn.sock is not None:
        pool.put(conn)
      else:
        conn.close()
    if isinstance(result, FetchError):
      raise result
    return result

  def _connect(self, conn, deadline: float) -> None:
    if conn.sock is not None:
      return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      raise _Unreachable(self._timeout(f'{conn.host}:{conn.port}'))
    conn.timeout = min(self._config.connect_timeout, remaining)
    try:
      conn.connect()
    except (urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.ConnectTimeoutError, TimeoutError) as e:
      raise _Unreachable(_classify(e)) from e

  def _send(self, conn, target: Target, deadline: float):
    # Per socket operation; the watchdog bounds the sum.
    conn.timeout = max(deadline - time.monotonic(), 0.001)
    conn.request('GET', target.path, headers={'Host': target.host_header},
                 preload_content=False, decode_content=True,
                 enforce_content_length=True)
    return conn.getresponse()

  def _read(self, response, url: str, watch: '_Watch'):
    """(the body, a Location or the FetchError of a status, whether the
    body was read to its end)."""
    status = response.status
    if status in _REDIRECTS or status >= 400:
      location = response.headers.get('Location')
      complete = _drain(response)
      if status >= 400:
        return _status_error(status, url), complete
      if not location:
        return FetchError(rec.FETCH, f'HTTP {status} without Location for '
                          f'{url}'), complete
      return location, complete
    limit = self._config.max_bytes
    length = response.headers.get('Content-Length')
    if length and length.isdigit() and int(length) > limit:
      raise FetchError(rec.TOO_LARGE,
                       f'{length} bytes exceeds the {limit}-byte cap')
    chunks, total = [], 0
    for chunk in response.stream(1 << 16):
      total += len(chunk)
      if total > limit:
        raise FetchError(rec.TOO_LARGE, f'body exceeds the {limit}-byte cap')
      chunks.append(chunk)
    if watch.fired:
      # A body that ends with the connection looks complete when cut.
      raise self._timeout(url)
    return b''.join(chunks), True

  def _timeout(self, url: str) -> FetchError:
    return FetchError(rec.TIMEOUT, f'no complete response within '
                      f'{self._config.read_timeout:g} s from {url}', True)


def _redirect(url: str, location: str):
  """(url, Target) of a redirect's Location; FetchError(forbidden) if the
  hop is refused."""
  # http.client decodes header bytes as latin-1; the bytes are what count.
  location = location.encode('latin-1', 'replace').decode(
      'utf-8', 'surrogateescape')
  if '\\' in location:
    raise FetchError(rec.FORBIDDEN,
                     f'redirect to a URL with a backslash refused: {url}')
  try:
    url = urllib.parse.urljoin(url, location)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
  except ValueError as e:
    raise FetchError(rec.FORBIDDEN, f'redirect to an invalid URL: {e}') from e
  if scheme not in ('http', 'https'):
    raise FetchError(rec.FORBIDDEN,
                     f'redirect to a {scheme or "relative"} URL refused')
  try:
    return url, parse(url)
  except FetchError as e:
    raise FetchError(rec.FORBIDDEN, f'redirect refused: {e}') from e


def _connection(scheme: str, address: str, port: int, host: str):
  if scheme == 'https':
    # The name, not the address, for SNI and the certificate check.
    return urllib3.connection.HTTPSConnection(
        address, port, server_hostname=host, cert_reqs='CERT_REQUIRED')
  return urllib3.connection.HTTPConnection(address, port)


def _drain(response) -> bool:
  """Reads what is left of a small body; whether it was all read (then the
  connection can serve the next request)."""
  try:
    response.read(_DRAIN_BYTES, decode_content=False)
  except Exception:  # pylint: disable=broad-except
    return False
  # Past the limit the body is left: its connection is closed instead.
  return response.closed


class _Unreachable(Exception):
  """Connecting to one address failed: another may answer."""

  def __init__(self, error: FetchError):
    super().__init__(str(error))
    self.error = error


class _Pool:
  """Idle connections to one (scheme, address, port, host)."""

  def __init__(self, make, size: int):
    self._make = make
    self._size = size
    self._idle = []
    self._lock = threading.Lock()
    self._closed = False

  def get(self):
    """(connection, whether it served a request before)."""
    while True:
      with self._lock:
        conn = self._idle.pop() if self._idle else None
      if conn is None:
        return self._make(), False
      if conn.is_connected:    # not closed by the server while idle
        return conn, True
      conn.close()

  def put(self, conn) -> None:
    with self._lock:
      if not self._closed and len(self._idle) < self._size:
        self._idle.append(conn)
        return
    conn.close()

  def close(self) -> None:
    with self._lock:
      self._closed = True
      idle, self._idle = self._idle, []
    for conn in idle:
      conn.close()


class _Watch:
  __slots__ = ('deadline', 'seq', 'sock', 'fired')

  def __init__(self, deadline, seq, sock):
    self.deadline, self.seq, self.sock, self.fired = deadline, seq, sock, False

  def __lt__(self, other):
    return (self.deadline, self.seq) < (other.deadline, other.seq)


class _Watchdog:
  """Shuts a socket down at its deadline, which ends any read blocked on it:
  socket timeouts restart with every byte, so a body sent a byte a second
  or headers that never end would outlast them."""

  def __init__(self):
    self._cv = threading.Condition()
    self._heap = []
    self._seq = itertools.count()
    self._thread = None

  def watch(self, sock, deadline: float) -> _Watch:
    watch = _Watch(deadline, next(self._seq), sock)
    with self._cv:
      heapq.heappush(self._heap, watch)
      if self._thread is None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='fetch-deadlines')
        self._thread.start()
      if self._heap[0] is watch:
        self._cv.notify()
    return watch

  def unwatch(self, watch: _Watch) -> bool:
    """Ends the watch; whether it had fired."""
    with self._cv:
      watch.sock = None
      return watch.fired

  def _run(self):
    with self._cv:
      while True:
        now = time.monotonic()
        while self._heap and (self._heap[0].sock is None or
                              self._heap[0].deadline <= now):
          watch = heapq.heappop(self._heap)
          if watch.sock is not None:
            watch.fired = True
            try:
              # socket.socket's own: SSLSocket.shutdown would drop its
              # SSL state under a read in progress.
              socket.socket.shutdown(watch.sock, socket.SHUT_RDWR)
            except OSError:
              pass
            watch.sock = None
        self._cv.wait(self._heap[0].deadline - now if self._heap else None)


def _status_error(status: int, url: str) -> FetchError:
  if status in (404, 410):
    return FetchError(rec.NOT_FOUND, f'HTTP {status} for {url}')
  if status in (401, 403):
    return FetchError(rec.FORBIDDEN, f'HTTP {status} for {url}')
  return FetchError(rec.FETCH, f'HTTP {status} for {url}',
                    transient=status in _TRANSIENT_STATUS)


def _classify(e: BaseException) -> FetchError:
  exc = urllib3.exceptions
  if isinstance(e, FetchError):
    return e
  if isinstance(e, exc.NewConnectionError):
    # urllib3 makes this a ConnectTimeoutError subclass, but a refused or
    # unreachable host did not time out.
    return FetchError(rec.FETCH, f'cannot connect: {rec.first_line(e)}', True)
  if isinstance(e, (exc.TimeoutError, socket.timeout, TimeoutError)):
    return FetchError(rec.TIMEOUT, f'timed out: {rec.first_line(e)}', True)
  if isinstance(e, (ssl.SSLCertVerificationError, ssl.CertificateError)):
    return FetchError(rec.FETCH, f'certificate refused: {rec.first_line(e)}')
  return FetchError(rec.FETCH, f'{type(e).__name__}: {rec.first_line(e)}',
                    True)
