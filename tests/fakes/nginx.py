"""A real nginx (Debian's /usr/sbin/nginx) serving a folder over HTTP/1.1
with keep-alive, plus endpoints that leave a body behind on the connection.

  /<file>                    the file under root
  /status/<code>             that status (4xx/5xx), with a body that itself
                             looks like a complete HTTP response: a client
                             that leaves it unread reads it as the answer to
                             its next request on the connection
  /redirect/<path>           302 to /<path> (same kind of body)
  /redirect-<301|303|307|308>/<path>
  /chain/<n>/<path>          n redirects (n <= 10), then /<path>
  /loop                      302 to itself, forever
  /paced/<file>              the file under root, at most `pace` requests a
                             second over all connections (nginx's limit_req
                             delays the others, in arrival order); only with
                             Nginx(root, pace=N)

Every request is logged; requests() returns their paths (as sent, with the
query) in order, log() the same with nginx's connection serial number and
the TLS server name (SNI, '' for none). With tls=(certfile, keyfile) the
same endpoints are also served over HTTPS at https_base
('https://127.0.0.1:PORT').
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

NGINX = '/usr/sbin/nginx'
STATUSES = (400, 401, 403, 404, 405, 408, 410, 413, 429, 500, 501, 502, 503,
            504)
REDIRECTS = (301, 302, 303, 307, 308)
MAX_CHAIN = 10


def available():
  return os.access(NGINX, os.X_OK)


def crafted_body(payload: bytes) -> bytes:
  """A body that is a whole HTTP/1.1 200 response carrying payload."""
  return (b'HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: '
          + str(len(payload)).encode() + b'\r\n\r\n' + payload)


class Nginx:
  """with Nginx(root) as server: server.base is 'http://127.0.0.1:PORT'."""

  def __init__(self, root, port=0, tls=None, pace=None):
    self.root = str(root)
    self._pace = pace
    self._port = port
    self._tls = tls
    self.https_port = None
    self.https_base = None
    self._dir = None
    self._proc = None
    self.port = None
    self.base = None

  def __enter__(self):
    self._dir = tempfile.mkdtemp(prefix='nginx-')
    os.makedirs(os.path.join(self._dir, 'bodies'))
    os.makedirs(os.path.join(self._dir, 'tmp'))
    for code in STATUSES + REDIRECTS:
      self.set_body(code, crafted_body(b'stale body of a %d' % code))
    # A port from the kernel can be taken again before nginx binds it.
    for _ in range(10):
      self.port = self._port or _free_port()
      self.https_port = _free_port() if self._tls else None
      if self._start():
        self.base = f'http://127.0.0.1:{self.port}'
        if self._tls:
          self.https_base = f'https://127.0.0.1:{self.https_port}'
        return self
      if self._port:
        break
    log = self._read('error.log').decode(errors='replace')
    self._cleanup()
    raise RuntimeError(f'nginx did not start:\n{log}')

  def __exit__(self, *exc):
    self._stop()
    self._cleanup()

  def set_body(self, code: int, data: bytes) -> None:
    """The body sent with every /status/<code> (and redirect <code>)."""
    with open(os.path.join(self._dir, 'bodies', str(code)), 'wb') as f:
      f.write(data)

  def requests(self):
    """Paths of the requests served so far, in order."""
    return [path for _, _, path in self.log()]

  def log(self):
    """(connection number, SNI name, path) of each request so far."""
    # nginx logs a request after sending its response: let a log line that
    # is being written land before counting.
    data = self._read('access.log')
    for _ in range(50):
      time.sleep(0.02)
      again = self._read('access.log')
      if again == data:
        break
      data = again
    lines = [l.decode('utf-8', 'surrogateescape').split(' ', 2)
             for l in data.splitlines()]
    return [(int(c), '' if sni == '-' else sni, path)
            for c, sni, path in lines]

  def _read(self, name):
    try:
      with open(os.path.join(self._dir, name), 'rb') as f:
        return f.read()
    except FileNotFoundError:
      return b''

  def _config(self):
    d = self._dir
    lines = [
        # pytest's tmp dirs are 0700: workers must run as their owner.
        'user root;' if os.geteuid() == 0 else '',
        'worker_processes 1;',
        f'pid {d}/nginx.pid;',
        f'error_log {d}/error.log;',
        'events { worker_connections 1024; }',
        'http {',
        "  log_format paths '$connection $ssl_server_name $request_uri';",
        f'  access_log {d}/access.log paths;',
        '  include /etc/nginx/mime.types;',
        '  default_type application/octet-stream;',
    ]
    for name in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'):
      lines.append(f'  {name}_temp_path {d}/tmp;')
    lines += [
        '  keepalive_timeout 60s;',
        '  keepalive_requests 1000000;',
        '  absolute_redirect off;',
    ]
    if self._pace:
      # One key for every request: a job's pace whatever its connections.
      lines.append(f'  limit_req_zone $server_port zone=paced:1m '
                   f'rate={int(self._pace)}r/s;')
    lines += [
        '  server {',
        f'    listen 127.0.0.1:{self.port};',
    ]
    if self._tls:
      lines += [
          f'    listen 127.0.0.1:{self.https_port} ssl;',
          f'    ssl_certificate {self._tls[0]};',
          f'    ssl_certificate_key {self._tls[1]};',
      ]
    lines += [
        f'    root {self.root};',
        f'    location ^~ /_body/ {{ internal; alias {d}/bodies/; }}',
    ]
    if self._pace:
      # A huge burst: requests over the pace wait their turn, none is
      # refused.
      lines.append(f'    location ^~ /paced/ {{ limit_req zone=paced '
                   f'burst=1000000; alias {self.root}/; }}')
    for code in STATUSES:
      lines.append(f'    location = /status/{code} '
                   f'{{ error_page {code} /_body/{code}; return {code}; }}')
    for code in REDIRECTS:
      prefix = 'redirect' if code == 302 else f'redirect-{code}'
      lines.append(f'    location ~ ^/{prefix}/(.*)$ {{ error_page {code} '
                   f'/_body/{code}; return {code} /$1$is_args$args; }}')
    lines.append('    location ~ ^/chain/1/(.*)$ { error_page 302 /_body/302; '
                 'return 302 /$1$is_args$args; }')
    for n in range(2, MAX_CHAIN + 1):
      lines.append(f'    location ~ ^/chain/{n}/(.*)$ {{ error_page 302 '
                   f'/_body/302; return 302 /chain/{n - 1}/$1$is_args$args; }}')
    lines += [
        '    location = /loop { error_page 302 /_body/302; return 302 /loop; }',
        '  }',
        '}',
    ]
    return '\n'.join(lines) + '\n'

  def _start(self):
    conf = os.path.join(self._dir, 'nginx.conf')
    with open(conf, 'w') as f:
      f.write(self._config())
    self._proc = subprocess.Popen(
        [NGINX, '-p', self._dir, '-c', conf, '-e', f'{self._dir}/error.log',
         '-g', 'daemon off;'],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
      if self._proc.poll() is not None:
        self._proc = None
        return False
      try:
        with socket.create_connection(('127.0.0.1', self.port), 1) as s:
          s.sendall(b'HEAD /_ready HTTP/1.0\r\n\r\n')
          if s.recv(16).startswith(b'HTTP/1.1 '):
            break
      except OSError:
        time.sleep(0.05)
    else:
      self._stop()
      return False
    # The readiness probe is not a request of any test.
    deadline = time.monotonic() + 2
    while b'/_ready' not in self._read('access.log') and \
        time.monotonic() < deadline:
      time.sleep(0.01)
    with open(os.path.join(self._dir, 'access.log'), 'wb'):
      pass
    return True

  def _stop(self):
    if self._proc is None:
      return
    self._proc.send_signal(signal.SIGTERM)   # fast shutdown
    try:
      self._proc.wait(10)
    except subprocess.TimeoutExpired:
      self._proc.kill()
      self._proc.wait()
    self._proc = None

  def _cleanup(self):
    if self._dir:
      shutil.rmtree(self._dir, ignore_errors=True)
      self._dir = None


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]
