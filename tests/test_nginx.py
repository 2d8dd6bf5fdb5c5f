"""The nginx test server itself: keep-alive, and bodies left behind."""
import http.client

from tests.fakes.nginx import crafted_body


def test_keep_alive_statuses_and_redirects(nginx):
  with open(f'{nginx.root}/hello.txt', 'wb') as f:
    f.write(b'hello')
  before = len(nginx.requests())
  conn = http.client.HTTPConnection('127.0.0.1', nginx.port, timeout=5)
  got, sock = [], None
  for path in ('/hello.txt', '/status/404', '/redirect/hello.txt',
               '/redirect-308/hello.txt?x=1', '/chain/3/hello.txt',
               '/loop', '/status/503'):
    conn.request('GET', path)
    response = conn.getresponse()
    got.append((response.status, response.getheader('Location'),
                response.read()))
    assert not response.will_close   # one connection for all of them
    sock = sock if path != '/hello.txt' else conn.sock
    assert conn.sock is sock
  conn.close()
  assert got == [
      (200, None, b'hello'),
      (404, None, crafted_body(b'stale body of a 404')),
      (302, '/hello.txt', crafted_body(b'stale body of a 302')),
      (308, '/hello.txt?x=1', crafted_body(b'stale body of a 308')),
      (302, '/chain/2/hello.txt', crafted_body(b'stale body of a 302')),
      (302, '/loop', crafted_body(b'stale body of a 302')),
      (503, None, crafted_body(b'stale body of a 503')),
  ]
  assert nginx.requests()[before:] == [
      '/hello.txt', '/status/404', '/redirect/hello.txt',
      '/redirect-308/hello.txt?x=1', '/chain/3/hello.txt', '/loop',
      '/status/503']
