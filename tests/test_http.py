"""The HTTP side of the fetch stage against a real nginx (keep-alive) and a
misbehaving HTTP/1.1 server: every response is its own URL's, every attempt
ends by its deadline, and no request reaches an address that was not
checked."""
import ipaddress
import collections
import os
import socket
import subprocess
import time
import urllib.parse

import pytest

from tests import models
from tests.conftest import write_image
from tests.helpers import run_job, split_output_line
from tests.fakes.misbehaving_http import MisbehavingServer
from tests.fakes.nginx import Nginx, crafted_body
from tests.test_pipeline import check_result, expected_probs
from ev_predict.transforms import http
from ev_predict.transforms import record as rec
from ev_predict.transforms.fetch import FetchConfig, Fetcher
from ev_predict.transforms.record import Record


def fetch(fetcher, url):
  """(kind, data) of one record: kind None for success."""
  out = fetcher(Record(line=url, source=url))
  return (None, out.data) if out.ok else (out.error, out.message)


def files(root, n, prefix):
  """n files of distinct bytes under root: {name: bytes}."""
  made = {}
  for i in range(n):
    name = f'{prefix}{i}.bin'
    data = f'{prefix} file {i} '.encode() * (i + 1)
    with open(os.path.join(root, name), 'wb') as f:
      f.write(data)
    made[name] = data
  return made


# -- keep-alive: bodies left behind ----------------------------------------

def test_each_response_is_its_own_on_one_kept_alive_connection(nginx):
  """Error and redirect bodies that look like responses, then images, on a
  pool of one connection: each result is its own URL's bytes, and the
  connection is reused (the small bodies are read, not left)."""
  made = files(nginx.root, 6, 'ka')
  base = nginx.base
  sequence = [
      (f'{base}/status/404', rec.NOT_FOUND),
      (f'{base}/ka0.bin', made['ka0.bin']),
      (f'{base}/redirect/ka1.bin', made['ka1.bin']),
      (f'{base}/status/403', rec.FORBIDDEN),
      (f'{base}/ka2.bin', made['ka2.bin']),
      (f'{base}/chain/3/ka3.bin', made['ka3.bin']),
      (f'{base}/status/503', rec.FETCH),   # nginx closes after a 500
      (f'{base}/redirect-301/ka4.bin', made['ka4.bin']),
      (f'{base}/redirect-307/ka5.bin', made['ka5.bin']),
      (f'{base}/status/410', rec.NOT_FOUND),
      (f'{base}/redirect-308/ka0.bin', made['ka0.bin']),
      (f'{base}/loop', rec.FETCH),
      (f'{base}/redirect-303/ka1.bin', made['ka1.bin']),
      (f'{base}/ka2.bin', made['ka2.bin']),
  ]
  fetcher = Fetcher(FetchConfig(pool_size=1, retries=0, read_timeout=10))
  before = len(nginx.log())
  for url, want in sequence * 2:
    kind, data = fetch(fetcher, url)
    if isinstance(want, bytes):
      assert (kind, data) == (None, want), url
    else:
      assert kind == want, (url, data)
  connections = {c for c, _, _ in nginx.log()[before:]}
  assert len(connections) == 1


def test_a_big_error_body_is_not_read_and_not_left(nginx):
  """A 404 body past the drain limit: its connection is closed, not
  returned with the body on it."""
  made = files(nginx.root, 1, 'big404-')
  big = b'x' * (http._DRAIN_BYTES * 4)
  nginx.set_body(502, crafted_body(big))
  try:
    fetcher = Fetcher(FetchConfig(pool_size=1, retries=0, read_timeout=10))
    for _ in range(3):
      assert fetch(fetcher, f'{nginx.base}/status/502')[0] == rec.FETCH
      assert fetch(fetcher, f'{nginx.base}/big404-0.bin') == (
          None, made['big404-0.bin'])
  finally:
    nginx.set_body(502, crafted_body(b'stale body of a 502'))


def test_too_large_and_cut_bodies_do_not_poison_the_connection(
    nginx, misbehaving):
  made = files(nginx.root, 2, 'tl')
  fetcher = Fetcher(FetchConfig(pool_size=1, retries=0, read_timeout=10,
                                max_bytes=len(made['tl1.bin']) - 1))
  for _ in range(3):
    assert fetch(fetcher, f'{nginx.base}/tl1.bin')[0] == rec.TOO_LARGE
    assert fetch(fetcher, f'{nginx.base}/tl0.bin') == (None, made['tl0.bin'])
  # Chunked, no length: refused mid-body.
  small = Fetcher(FetchConfig(pool_size=1, retries=0, read_timeout=10,
                              max_bytes=100_000))
  for _ in range(5):
    assert fetch(small, f'{misbehaving.base}/endless?delay=0')[0] == \
        rec.TOO_LARGE
    assert fetch(small, f'{misbehaving.base}/ok/7') == (None, b'x' * 7)
    assert fetch(small, f'{misbehaving.base}/short-close/10')[0] == rec.FETCH
    assert fetch(small, f'{misbehaving.base}/ok/8') == (None, b'x' * 8)


def test_pipeline_lines_get_their_own_images(tmp_path, model_dirs, nginx):
  """404s whose bodies are whole responses carrying another image, and
  redirects with such bodies, between images on one connection: each
  line's probabilities are the model's on that line's own image."""
  model = model_dirs['uint8']
  decoy = write_image(tmp_path / 'decoy.png', 999)
  with open(decoy, 'rb') as f:
    decoy_bytes = f.read()
  images = {i: write_image(f'{nginx.root}/pl{i}.png', 300 + i)
            for i in range(6)}
  base = nginx.base
  lines, expect = [], {}
  for i, path in images.items():
    lines.append(f'{base}/status/404?{i}')
    lines.append(f'{base}/redirect/pl{i}.png')
    expect[lines[-1]] = path
    lines.append(f'{base}/pl{(i + 1) % 6}.png')
    expect[lines[-1]] = images[(i + 1) % 6]
    lines.append(f'{base}/chain/2/pl{(i + 2) % 6}.png?x={i}')
    expect[lines[-1]] = images[(i + 2) % 6]
  for code in (404, 302):
    nginx.set_body(code, crafted_body(decoy_bytes))
  try:
    results, errors, summary = run_job(
        tmp_path, lines, model, fetch_threads=1, fetch_retries=0)
  finally:
    for code in (404, 302):
      nginx.set_body(code, crafted_body(b'stale body of a %d' % code))
  assert summary['accounting_ok']
  kinds = collections.Counter(split_output_line(l)[1]['error'] for l in errors)
  assert kinds == {'not_found': 6}
  assert len(results) == len(expect)
  for l in results:
    line, body = split_output_line(l)
    check_result(body, expected_probs(model, expect[line.decode()]),
                 models.LABELS)


# -- one deadline per attempt ----------------------------------------------

@pytest.mark.parametrize('path,kind', [
    ('/slow/100?delay=0.1', rec.TIMEOUT),            # 10 s of body
    ('/headers-forever?delay=0.1', rec.TIMEOUT),
    ('/endless?delay=0.2', rec.TIMEOUT),             # under the size cap
    ('/short-open/10', rec.TIMEOUT),
    ('/silent', rec.TIMEOUT),
    ('/endless?delay=0', rec.TOO_LARGE),
])
def test_deadline_covers_headers_and_the_whole_body(misbehaving, path, kind):
  fetcher = Fetcher(FetchConfig(read_timeout=1.0, retries=0,
                                max_bytes=4 << 20))
  started = time.monotonic()
  got, message = fetch(fetcher, misbehaving.base + path)
  elapsed = time.monotonic() - started
  assert got == kind, message
  assert elapsed < 2.5
  if kind == rec.TIMEOUT:
    assert elapsed >= 0.9


def test_a_cut_body_is_retried_and_the_deadline_is_per_attempt(misbehaving):
  fetcher = Fetcher(FetchConfig(read_timeout=0.6, retries=2, backoff=0.05))
  started = time.monotonic()
  out = fetcher(Record(line='x', source=f'{misbehaving.base}/slow/50?'
                                        'delay=0.1'))
  elapsed = time.monotonic() - started
  assert out.error == rec.TIMEOUT and '3 attempts' in out.message
  assert misbehaving.requests.count('/slow/50?delay=0.1') == 3
  assert 1.8 <= elapsed < 4


def test_pipeline_slow_body_becomes_a_timeout(tmp_path, model_dirs,
                                               misbehaving):
  lines = [f'{misbehaving.base}/slow/200?delay=0.05']
  started = time.monotonic()
  results, errors, summary = run_job(tmp_path, lines, model_dirs['uint8'],
                                     fetch_timeout=1, fetch_retries=1)
  assert time.monotonic() - started < 30
  assert not results
  assert split_output_line(errors[0])[1]['error'] == 'timeout'
  assert summary['failed_by_kind'] == {'timeout': 1}


# -- private networks --------------------------------------------------------

def tricky_urls(port):
  """{url: kind} with block_private_networks: each names a local server."""
  return {
      f'http://127.0.0.1:{port}\\@8.8.8.8/t.bin': rec.BAD_LINE,
      f'http://8.8.8.8@127.0.0.1:{port}/t.bin': rec.BAD_LINE,
      f'http://u:p@127.0.0.1:{port}/t.bin': rec.BAD_LINE,
      f'http://[::ffff:127.0.0.1]:{port}/t.bin': rec.FORBIDDEN,
      f'http://[::ffff:7f00:1]:{port}/t.bin': rec.FORBIDDEN,
      f'http://[::1]:{port}/t.bin': rec.FORBIDDEN,
      f'http://2130706433:{port}/t.bin': rec.FORBIDDEN,
      f'http://0177.0.0.1:{port}/t.bin': rec.FORBIDDEN,
      f'http://0x7f.0.0.1:{port}/t.bin': rec.FORBIDDEN,
      f'http://127.1:{port}/t.bin': rec.FORBIDDEN,
      f'http://0.0.0.0:{port}/t.bin': rec.FORBIDDEN,
      f'http://0:{port}/t.bin': rec.FORBIDDEN,
      f'http://localhost:{port}/t.bin': rec.FORBIDDEN,
      f'http://LocalHost:{port}/t.bin': rec.FORBIDDEN,
      f'http://127.0.0.1:{port}/t.bin': rec.FORBIDDEN,
  }


def test_tricky_urls_reach_no_local_server(nginx):
  with open(f'{nginx.root}/t.bin', 'wb') as f:
    f.write(b'secret')
  fetcher = Fetcher(FetchConfig(block_private_networks=True, retries=0,
                                read_timeout=5))
  before = len(nginx.requests())
  got = {url: fetch(fetcher, url)[0] for url in tricky_urls(nginx.port)}
  assert got == tricky_urls(nginx.port)
  assert nginx.requests()[before:] == []


def test_backslashes_and_user_info_are_refused_whatever_the_setting(nginx):
  with open(f'{nginx.root}/t.bin', 'wb') as f:
    f.write(b'secret')
  fetcher = Fetcher(FetchConfig(retries=0, read_timeout=5))
  before = len(nginx.requests())
  for url, kind in tricky_urls(nginx.port).items():
    if kind == rec.BAD_LINE:
      assert fetch(fetcher, url)[0] == rec.BAD_LINE, url
  assert fetch(fetcher, f'{nginx.base}/t.bin\\x')[0] == rec.BAD_LINE
  assert nginx.requests()[before:] == []
  # Without blocking, the forms that name loopback are what they resolve to.
  assert fetch(fetcher, f'http://127.1:{nginx.port}/t.bin') == \
      (None, b'secret')


@pytest.fixture
def public_127_0_0_2(monkeypatch):
  """Pretends 127.0.0.2 is a public address, nothing else."""
  original = http.is_public
  monkeypatch.setattr(http, 'is_public', lambda a: str(a) == '127.0.0.2' or
                      original(a))


def test_redirect_hops_to_tricky_urls_are_refused(nginx, public_127_0_0_2):
  """An allowed server redirects to each tricky URL: the hop is refused,
  nginx on loopback sees nothing."""
  with open(f'{nginx.root}/t.bin', 'wb') as f:
    f.write(b'secret')
  targets = dict(tricky_urls(nginx.port))
  targets[f'/\\127.0.0.1:{nginx.port}/t.bin'] = rec.FORBIDDEN
  targets[f'http:\\\\127.0.0.1:{nginx.port}/t.bin'] = rec.FORBIDDEN
  targets[f'//127.0.0.1:{nginx.port}/t.bin'] = rec.FORBIDDEN
  fetcher = Fetcher(FetchConfig(block_private_networks=True, retries=0,
                                read_timeout=5))
  before = len(nginx.requests())
  with MisbehavingServer(host='127.0.0.2') as allowed:
    for target in targets:
      hop = f'{allowed.base}/redirect?to=' + urllib.parse.quote(target)
      kind, message = fetch(fetcher, hop)
      assert kind == rec.FORBIDDEN, (target, message)
    assert len(allowed.requests) == len(targets)
    # The allowed server itself is fetched (the rule is what is refused).
    assert fetch(fetcher, f'{allowed.base}/redirect?to=/ok/3') == \
        (None, b'xxx')
  assert nginx.requests()[before:] == []


def test_the_connection_goes_to_the_checked_address(monkeypatch,
                                                    public_127_0_0_2):
  """DNS rebinding: the name is public (127.0.0.2, pretended) when checked
  and loopback afterwards; the request goes to the checked address."""
  calls = []
  real = socket.getaddrinfo

  def rebinding(host, port, *args, **kwargs):
    if host != 'rebind.test':
      return real(host, port, *args, **kwargs)
    calls.append(host)
    ip = '127.0.0.2' if len(calls) == 1 else '127.0.0.1'
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (ip, port))]

  with MisbehavingServer(host='127.0.0.2') as checked:
    with MisbehavingServer(host='127.0.0.1', port=checked.port) as loopback:
      monkeypatch.setattr(socket, 'getaddrinfo', rebinding)
      fetcher = Fetcher(FetchConfig(block_private_networks=True, retries=0,
                                    read_timeout=5))
      got = fetch(fetcher, f'http://rebind.test:{checked.port}/ok/4')
      monkeypatch.setattr(socket, 'getaddrinfo', real)
  assert got == (None, b'xxxx')
  assert checked.requests == ['/ok/4'] and loopback.requests == []
  assert loopback.connections == 0


def test_non_utf8_bytes_in_a_url_are_sent_percent_encoded(nginx):
  name = b'caf\xe9 \xff.bin'
  with open(os.fsencode(nginx.root) + b'/' + name, 'wb') as f:
    f.write(b'odd bytes')
  fetcher = Fetcher(FetchConfig(retries=0, read_timeout=5))
  url = (nginx.base.encode() + b'/' + name).decode('utf-8', 'surrogateescape')
  assert fetch(fetcher, url) == (None, b'odd bytes')
  assert nginx.requests()[-1] == '/caf%E9%20%FF.bin'
  missing = (nginx.base.encode() + b'/\xfe\xfd').decode('utf-8',
                                                        'surrogateescape')
  assert fetch(fetcher, missing)[0] == rec.NOT_FOUND


# -- https: the name, not the address, is verified --------------------------

@pytest.fixture(scope='module')
def tls_nginx(tmp_path_factory):
  from tests.fakes.nginx import available
  if not available():
    pytest.skip('nginx is not installed')
  d = tmp_path_factory.mktemp('tls')
  cert, key = str(d / 'cert.pem'), str(d / 'key.pem')
  subprocess.run(
      ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days',
       '2', '-subj', '/CN=localhost', '-addext',
       'subjectAltName=DNS:localhost', '-keyout', key, '-out', cert],
      check=True, capture_output=True)
  root = d / 'root'
  root.mkdir()
  (root / 's.bin').write_bytes(b'over tls')
  with Nginx(root, tls=(cert, key)) as server:
    server.cert = cert
    yield server


def test_https_verifies_the_name_it_connects_for(tls_nginx, monkeypatch):
  monkeypatch.setenv('SSL_CERT_FILE', tls_nginx.cert)
  fetcher = Fetcher(FetchConfig(retries=0, read_timeout=5))
  port = tls_nginx.https_port
  assert fetch(fetcher, f'https://localhost:{port}/s.bin') == \
      (None, b'over tls')
  assert fetch(fetcher, f'https://localhost:{port}/s.bin') == \
      (None, b'over tls')
  log = tls_nginx.log()
  assert [sni for _, sni, _ in log[-2:]] == ['localhost', 'localhost']
  assert log[-1][0] == log[-2][0]     # kept alive
  kind, message = fetch(fetcher, f'https://127.0.0.1:{port}/s.bin')
  assert kind == rec.FETCH and 'certificate' in message.lower()
  assert len(tls_nginx.log()) == len(log)


def test_odd_hosts_become_error_records():
  fetcher = Fetcher(FetchConfig(retries=0, read_timeout=2))
  for url in ('http://x\u2100y.example/', 'http://caf\udce9.example/',
              'http://[::1]x/'):
    assert fetch(fetcher, url)[0] == rec.BAD_LINE, url


def test_parse_builds_the_request_from_one_parse():
  t = http.parse('HTTP://Example.COM:8080/a b/%41?q=1 2#frag')
  assert t == http.Target('http', 'example.com', 8080, '/a%20b/%41?q=1%202',
                          'example.com:8080')
  assert http.parse('https://[::1]/').host_header == '[::1]'
  assert http.parse('https://bücher.example/x').host == \
      'xn--bcher-kva.example'
  for bad in ('http://[::1/', 'http://h:99999/', 'http://:80/', 'http:///x',
              'http://a%40b/', 'http://h:0/', 'http://[::1]x/',
              'http://x\u2100y.example/', 'http://caf\udce9.example/'):
    with pytest.raises(http.FetchError) as e:
      http.parse(bad)
    assert e.value.kind == rec.BAD_LINE, bad


@pytest.mark.parametrize('address, public', [
    ('8.8.8.8', True), ('2606:4700::1111', True),
    ('64:ff9b::808:808', True),            # well-known NAT64 of a public v4
    ('::ffff:127.0.0.1', False), ('::7f00:1', False),   # mapped, compatible
    ('::ffff:0:7f00:1', False),            # SIIT
    ('64:ff9b::7f00:1', False), ('64:ff9b:1::7f00:1', False),  # NAT64
    ('2002:7f00:1::', False),              # 6to4 of loopback
    ('fec0::1', False), ('fe80::1', False), ('fc00::1', False),
    ('::', False), ('::1', False), ('0.0.0.0', False), ('127.0.0.1', False),
    ('10.0.0.1', False), ('169.254.169.254', False), ('100.64.0.1', False),
])
def test_which_addresses_count_as_public(address, public):
  """IPv6 ranges that reach IPv4 or local hosts on some networks (found from
  outside: ::/96, SIIT, local-use NAT64, site-local counted as public)."""
  assert http.is_public(ipaddress.ip_address(address)) is public
