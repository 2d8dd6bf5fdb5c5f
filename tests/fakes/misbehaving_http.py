"""An HTTP/1.1 keep-alive server (raw sockets) for what nginx will not do.

  /ok/<n>                 200, n bytes, keep-alive
  /slow/<n>?delay=s       Content-Length n, then one byte every s seconds
  /short-open/<n>         Content-Length n + 100, n bytes, then silence with
                          the connection open
  /short-close/<n>        the same, then the connection closes
  /endless?delay=s        chunked, a 64 KiB chunk every s seconds, forever
  /headers-forever?delay=s  a status line, then one header byte every s
                          seconds, the headers never end
  /silent                 reads the request, never answers
  /redirect?to=<location> 302 with that Location, byte for byte (the value is
                          percent-decoded from the query)

Nothing runs past max_seconds (per connection), and stopping the server ends
every connection at once. .requests lists the request paths (with the
query) in arrival order; .connections counts accepted connections.
"""
import socket
import threading
import time
import urllib.parse


class MisbehavingServer:

  def __init__(self, host='127.0.0.1', port=0, max_seconds=20.0):
    self.host = host
    self._port = port
    self.max_seconds = max_seconds
    self.requests = []
    self.connections = 0
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._socks = set()
    self._listener = None
    self.port = None
    self.base = None

  def __enter__(self):
    self._listener = socket.socket()
    self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    self._listener.bind((self.host, self._port))
    self._listener.listen(64)
    self.port = self._listener.getsockname()[1]
    self.base = f'http://{self.host}:{self.port}'
    threading.Thread(target=self._accept, daemon=True).start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._listener.close()
    with self._lock:
      socks = list(self._socks)
    for s in socks:
      _shutdown(s)

  def _accept(self):
    while not self._stop.is_set():
      try:
        sock, _ = self._listener.accept()
      except OSError:
        return
      with self._lock:
        self.connections += 1
        self._socks.add(sock)
      threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

  def _serve(self, sock):
    end = time.monotonic() + self.max_seconds
    buf = b''
    try:
      while not self._stop.is_set():
        while b'\r\n\r\n' not in buf:
          sock.settimeout(max(0.01, end - time.monotonic()))
          data = sock.recv(65536)
          if not data:
            return
          buf += data
        head, buf = buf.split(b'\r\n\r\n', 1)
        target = head.split(b'\r\n')[0].split(b' ')[1].decode('latin-1')
        with self._lock:
          self.requests.append(target)
        if not self._reply(sock, target, end):
          return
    except OSError:
      return
    finally:
      with self._lock:
        self._socks.discard(sock)
      sock.close()

  def _wait(self, seconds, end):
    """Sleeps; False once the server stops or the connection's time is up."""
    return not self._stop.wait(min(seconds, max(0, end - time.monotonic()))) \
        and time.monotonic() < end

  def _reply(self, sock, target, end):
    """Answers one request; False: close the connection."""
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    delay = float(query.get('delay', ['1'])[0])
    parts = url.path.strip('/').split('/')
    name, arg = parts[0], int(parts[1]) if len(parts) > 1 and \
        parts[1].isdigit() else 0
    if name == 'ok':
      sock.sendall(_head(200, arg) + b'x' * arg)
      return True
    if name == 'slow':
      sock.sendall(_head(200, arg))
      for _ in range(arg):
        if not self._wait(delay, end):
          return False
        sock.sendall(b'x')
      return True
    if name in ('short-open', 'short-close'):
      sock.sendall(_head(200, arg + 100) + b'x' * arg)
      if name == 'short-open':
        self._wait(self.max_seconds, end)
      return False
    if name == 'endless':
      sock.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')
      chunk = b'%x\r\n' % 65536 + b'x' * 65536 + b'\r\n'
      while self._wait(delay, end):
        sock.sendall(chunk)
      return False
    if name == 'headers-forever':
      sock.sendall(b'HTTP/1.1 200 OK\r\nX-Slow: ')
      while self._wait(delay, end):
        sock.sendall(b'a')
      return False
    if name == 'silent':
      self._wait(self.max_seconds, end)
      return False
    if name == 'redirect':
      location = urllib.parse.unquote_to_bytes(
          url.query.split('to=', 1)[1] if 'to=' in url.query else '/')
      body = b'moved'
      sock.sendall(b'HTTP/1.1 302 Found\r\nLocation: ' + location +
                   b'\r\nContent-Length: 5\r\n\r\n' + body)
      return True
    sock.sendall(_head(404, 9) + b'not found')
    return True


def _head(status, length):
  reason = {200: b'OK', 404: b'Not Found'}[status]
  return (b'HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n'
          % (status, reason, length))


def _shutdown(sock):
  try:
    sock.shutdown(socket.SHUT_RDWR)
  except OSError:
    pass
