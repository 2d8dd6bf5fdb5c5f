"""The fake OSS server's HTTP side: a threading server that tracks its
connections, and a keep-alive handler that parses requests, logs them and
sends replies (with the reset and slow-body misbehaviours)."""
import http.server
import logging
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import uuid

from tests.fakes.oss_protocol import OssError, RequestRecord

logger = logging.getLogger(__name__)


class OssHTTPServer(http.server.ThreadingHTTPServer):
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


class OssHandler(http.server.BaseHTTPRequestHandler):
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

