"""A real headless Chromium (Debian's package), driven over the DevTools
protocol: open a page, collect what its console and runtime report, read the
DOM back, take a screenshot."""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest


def chromium_binary():
  for name in ('chromium', 'chromium-browser', 'google-chrome'):
    found = shutil.which(name)
    if found:
      return found
  return None


class Browser:
  """One headless Chromium process and one page, as a context manager."""

  def __init__(self, width=1280, height=900):
    binary = chromium_binary()
    if binary is None:
      if os.environ.get('CI'):
        raise AssertionError('chromium is not installed (apt-get install '
                             'chromium)')
      pytest.skip('chromium is not installed (apt-get install chromium)')
    self._profile = tempfile.mkdtemp(prefix='ev-predict-chromium-')
    self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [binary, '--headless=new', '--no-sandbox', '--disable-gpu',
         '--no-first-run', '--no-default-browser-check',
         # No network at all: a page that reaches out fails to load it.
         '--proxy-server=127.0.0.1:9', '--proxy-bypass-list=<-loopback>',
         f'--window-size={width},{height}', '--remote-debugging-port=0',
         f'--user-data-dir={self._profile}', 'about:blank'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    self._id = 0
    self.events = []
    self._ws = None

  def __enter__(self):
    import websocket  # pylint: disable=import-outside-toplevel
    port_file = os.path.join(self._profile, 'DevToolsActivePort')
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
      if time.monotonic() > deadline or self._proc.poll() is not None:
        raise AssertionError('chromium did not start')
      time.sleep(0.05)
    time.sleep(0.1)
    with open(port_file, encoding='ascii') as f:
      port = int(f.readline())
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list',
                                timeout=10) as r:
      pages = [t for t in json.load(r) if t['type'] == 'page']
    self._ws = websocket.create_connection(pages[0]['webSocketDebuggerUrl'],
                                           timeout=60, suppress_origin=True)
    for method in ('Page.enable', 'Runtime.enable', 'Log.enable',
                   'Network.enable'):
      self.call(method)
    return self

  def __exit__(self, *exc):
    try:
      if self._ws is not None:
        self._ws.close()
    finally:
      self._proc.kill()
      self._proc.wait()
      shutil.rmtree(self._profile, ignore_errors=True)

  def call(self, method, **params):
    self._id += 1
    mine = self._id
    self._ws.send(json.dumps({'id': mine, 'method': method,
                              'params': params}))
    while True:
      message = json.loads(self._ws.recv())
      if message.get('id') == mine:
        if 'error' in message:
          raise AssertionError(f'{method}: {message["error"]}')
        return message.get('result', {})
      self.events.append(message)

  def open(self, url, timeout=30):
    """Navigates and waits for the load event."""
    self.events.clear()
    self.call('Page.navigate', url=url)
    deadline = time.monotonic() + timeout
    while not any(e.get('method') == 'Page.loadEventFired'
                  for e in self.events):
      if time.monotonic() > deadline:
        raise AssertionError(f'{url} did not load')
      self._ws.settimeout(max(0.1, deadline - time.monotonic()))
      self.events.append(json.loads(self._ws.recv()))
    self.evaluate('1')   # let queued console events arrive

  def evaluate(self, expression):
    result = self.call('Runtime.evaluate', expression=expression,
                       returnByValue=True, awaitPromise=True)
    if 'exceptionDetails' in result:
      raise AssertionError(f'{expression}: {result["exceptionDetails"]}')
    return result['result'].get('value')

  def problems(self):
    """Console errors and warnings, uncaught exceptions, failed loads."""
    found = []
    for e in self.events:
      method, params = e.get('method'), e.get('params', {})
      if method == 'Runtime.exceptionThrown':
        found.append(('exception', params['exceptionDetails'].get('text')))
      elif method == 'Runtime.consoleAPICalled' and \
          params.get('type') in ('error', 'warning', 'assert'):
        found.append(('console', params.get('args')))
      elif method == 'Log.entryAdded' and \
          params['entry'].get('level') in ('error', 'warning'):
        found.append(('log', params['entry'].get('text')))
      elif method == 'Network.loadingFailed':
        found.append(('network', params.get('errorText')))
      elif method == 'Network.requestWillBeSent' and not params.get(
          'request', {}).get('url', '').startswith(('file:', 'data:',
                                                    'about:')):
        found.append(('request', params['request']['url']))
    return found

  def screenshot(self, path):
    data = self.call('Page.captureScreenshot', format='png',
                     captureBeyondViewport=True)['data']
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(base64.b64decode(data))
    return path
