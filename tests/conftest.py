"""Fixtures: real SavedModels, real image files and a real HTTP server."""
import http.server
import os
import threading
import time
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from ev_predict.pipeline import launcher

# What `ev-predict` sets first thing, here for the jobs tests run in this
# process and the worker processes those start: before TensorFlow loads.
launcher.quiet_runtime_logs([])

from tests import models  # pylint: disable=wrong-import-position


@pytest.fixture(scope='session')
def model_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('models')
  return {
      'uint8': models.save_uint8_model(str(root / 'uint8'),
                                       labels=models.LABELS),
      'float': models.save_float_logits_model(str(root / 'float')),
      'string': models.save_string_model(str(root / 'string')),
      'keras': models.save_keras_model(str(root / 'keras')),
  }


def write_image(path, seed, size=(40, 30), fmt=None):
  rng = np.random.default_rng(seed)
  arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(arr).save(path, format=fmt)
  return str(path)


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves files from server.root, plus a few misbehaving endpoints."""

  def log_message(self, *args):
    pass

  def do_GET(self):
    srv = self.server
    url = urllib.parse.urlsplit(self.path)
    path = urllib.parse.unquote(url.path)
    with srv.lock:
      srv.hits[path] = srv.hits.get(path, 0) + 1
      hits = srv.hits[path]
    if path.startswith('/status/'):
      return self._reply(int(path.split('/')[2]), b'nope')
    if path.startswith('/flaky/'):
      # Fails twice with 503, then serves the file: retries must recover.
      if hits <= 2:
        return self._reply(503, b'busy')
      path = path[len('/flaky'):]
    if path.startswith('/slow/'):
      # /slow/<seconds>/<file>: headers at once, body after a pause.
      _, _, delay, rest = path.split('/', 3)
      data = self._file(rest) or b''
      self.send_response(200)
      self.send_header('Content-Length', str(len(data)))
      self.end_headers()
      self.wfile.flush()
      time.sleep(float(delay))
      try:
        self.wfile.write(data)
      except OSError:
        pass
      return None
    if path.startswith('/redirect-loop'):
      self.send_response(302)
      self.send_header('Location', '/redirect-loop')
      self.end_headers()
      return None
    if path.startswith('/redirect-file'):
      self.send_response(302)
      self.send_header('Location', 'file:///etc/passwd')
      self.end_headers()
      return None
    if path.startswith('/redirect/'):
      self.send_response(302)
      self.send_header('Location', path[len('/redirect'):])
      self.end_headers()
      return None
    if path.startswith('/short/'):
      # Promises more bytes than it sends: must never become a decode input.
      data = self._file(path[len('/short'):])
      self.send_response(200)
      self.send_header('Content-Length', str(len(data) + 100))
      self.end_headers()
      self.wfile.write(data[:len(data) // 2])
      self.wfile.flush()
      self.close_connection = True
      return None
    data = self._file(path)
    if data is None:
      return self._reply(404, b'not found')
    return self._reply(200, data)

  def _file(self, path):
    full = os.path.join(self.server.root, path.lstrip('/'))
    if not os.path.isfile(full):
      return None
    with open(full, 'rb') as f:
      return f.read()

  def _reply(self, status, body):
    self.send_response(status)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)


@pytest.fixture(scope='session')
def http_server(tmp_path_factory):
  root = tmp_path_factory.mktemp('http')
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  server.daemon_threads = True
  server.root = str(root)
  server.hits = {}
  server.lock = threading.Lock()
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  server.base = f'http://127.0.0.1:{server.server_address[1]}'
  yield server
  server.shutdown()


@pytest.fixture(scope='session')
def nginx(tmp_path_factory):
  """A real nginx over HTTP/1.1 keep-alive serving nginx.root (tests write
  files there); see tests/fakes/nginx.py for its endpoints."""
  from tests.fakes.nginx import Nginx, available
  if not available():
    message = 'nginx is not installed (apt-get install nginx)'
    if os.environ.get('CI'):
      pytest.fail(message)   # CI must run these tests, not skip them
    pytest.skip(message)
  with Nginx(tmp_path_factory.mktemp('nginx')) as server:
    yield server


@pytest.fixture
def misbehaving():
  """tests/fakes/misbehaving_http.py on 127.0.0.1: slow, short, endless bodies,
  headers that never end, raw redirects."""
  from tests.fakes.misbehaving_http import MisbehavingServer
  with MisbehavingServer() as server:
    yield server


OSS_ID, OSS_SECRET = 'LTAI-test-id', 'Sec-9f8e7d6c5b4a-never-print-me'


@pytest.fixture(scope='session')
def oss_server():
  from tests.fakes.oss_server import OssServer
  with OssServer(credentials={OSS_ID: OSS_SECRET},
                 buckets=('data', 'models', 'out')) as server:
    yield server


@pytest.fixture
def oss_env(oss_server, monkeypatch, tmp_path):
  """Credentials in the environment (as on a worker), a private model cache,
  the server's endpoint, and no faults left over."""
  monkeypatch.setenv('OSS_ACCESS_KEY_ID', OSS_ID)
  monkeypatch.setenv('OSS_ACCESS_KEY_SECRET', OSS_SECRET)
  monkeypatch.delenv('OSS_SESSION_TOKEN', raising=False)
  monkeypatch.setenv('OSS_CONFIG_FILE', str(tmp_path / 'no-ossutilconfig'))
  monkeypatch.setenv('EV_PREDICT_CACHE', str(tmp_path / 'model-cache'))
  from ev_predict.transforms.oss import client
  client._clients.clear()  # pylint: disable=protected-access
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  FileSystems.set_options(PipelineOptions([f'--ossHost={oss_server.endpoint}']))
  oss_server.reset_faults()
  oss_server.requests.clear()
  yield oss_server
  oss_server.reset_faults()
  FileSystems.set_options(PipelineOptions([]))
