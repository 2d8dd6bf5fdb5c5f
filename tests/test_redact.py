"""Signed request material never reaches a log: real oss2 and urllib3 DEBUG
output, captured from real requests to the OSS double."""
import io
import logging
import re
import sys

import oss2
import pytest
import requests

from tests.fakes.oss_server import OssServer
from ev_predict.transforms import redact

AK, SK = 'LTAI-redact-id', 'redact-secret-key'
STS_AK, STS_SK, STS_TOKEN = 'STS.redact-id', 'sts-secret', 'CAIS-sts-token+/='


@pytest.fixture(scope='module')
def server():
  with OssServer(credentials={AK: SK}, sts={STS_AK: (STS_SK, STS_TOKEN)},
                 buckets=('bkt',)) as srv:
    srv.put('bkt', 'dir/x.jpg', b'x' * 100)
    yield srv


@pytest.fixture
def factory():
  """Each test starts without redaction and leaves the factory as it was."""
  saved = logging.getLogRecordFactory()
  logging.setLogRecordFactory(logging.LogRecord)
  yield
  logging.setLogRecordFactory(saved)


def _traffic(server):
  """Requests signed every way oss2 signs them, with every log at DEBUG;
  returns the log text."""
  stream = io.StringIO()
  handler = logging.StreamHandler(stream)
  handler.setFormatter(logging.Formatter('%(name)s:%(message)s'))
  root = logging.getLogger()
  saved_level = root.level
  root.addHandler(handler)
  root.setLevel(logging.DEBUG)
  try:
    auths = [oss2.Auth(AK, SK), oss2.AuthV2(AK, SK),
             oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN),
             oss2.ProviderAuthV4(oss2.credentials.StaticCredentialsProvider(
                 AK, SK))]
    for auth in auths:
      bucket = oss2.Bucket(auth, server.endpoint, 'bkt', region='cn-hangzhou')
      assert bucket.get_object('dir/x.jpg').read() == b'x' * 100
      url = bucket.sign_url('GET', 'dir/x.jpg', 60)
      assert requests.get(url, timeout=10).status_code == 200
      try:
        raise RuntimeError(f'could not fetch {url}')
      except RuntimeError:
        logging.getLogger('ev_predict').exception('fetch failed')
    wrong = oss2.Bucket(oss2.Auth(AK, 'wrong'), server.endpoint, 'bkt')
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as info:
      wrong.get_object('dir/x.jpg')
    logging.getLogger('ev_predict').warning('refused: %s', info.value)
  finally:
    root.removeHandler(handler)
    root.setLevel(saved_level)
  return stream.getvalue()


def _signed_material(server):
  """Every signature, token and Authorization value the server received."""
  found = set()
  for r in server.requests:
    auth = r.headers.get('authorization')
    if auth:
      found.add(auth)
      found.update(re.findall(r'Signature[=:]([^,\s]+)', auth))
    for name in ('x-oss-security-token',):
      if r.headers.get(name):
        found.add(r.headers[name])
    for name in ('Signature', 'x-oss-signature', 'security-token',
                 'x-oss-security-token'):
      if r.query.get(name):
        found.add(r.query[name])
  return found


def _leaks(text, material):
  quoted = {requests.utils.quote(m, safe='') for m in material}
  return sorted(m for m in material | quoted if m in text)


def test_real_oss2_debug_logs_are_redacted(server, factory):
  # Without redaction the same traffic logs what a replay needs: the test
  # material is real.
  server.requests.clear()
  plain = _traffic(server)
  material = _signed_material(server)
  assert len(material) >= 8
  assert _leaks(plain, material)
  assert f"'authorization': 'OSS {AK}:" in plain
  assert 'Signature=' in plain and STS_TOKEN in plain

  redact.install()
  redact.install()   # idempotent: one wrapper
  server.requests.clear()
  text = _traffic(server)
  material = _signed_material(server)
  assert not _leaks(text, material)
  assert f'OSS {AK}:' not in text and STS_TOKEN not in text
  assert not re.search(r'Signature=(?!<redacted>)', text)
  # What is not secret stays readable.
  assert 'Send request, method: GET' in text
  assert 'dir%2Fx.jpg' in text and 'fetch failed' in text
  assert "'authorization': '<redacted>'" in text
  assert 'Traceback' in text and 'could not fetch' in text


# Secret values are spelt with a 9 (SIG9, TOK9, ID9): none occurs elsewhere.
@pytest.mark.parametrize('line, kept', [
    ("headers: {'date': 'Wed', 'authorization': 'OSS ID9:SIG9+/='}", "'date'"),
    ("{'authorization': b'OSS4-HMAC-SHA256 Credential=ID9/20240101/cn/oss/"
     "aliyun_v4_request,Signature=SIG9'}", '{'),
    ('Authorization: OSS2 AccessKeyId:ID9,Signature:SIG9\r\nHost: h',
     'Host: h'),
    ('"GET /b/k?OSSAccessKeyId=ID9&Expires=1&Signature=SIG9%2B HTTP/1.1" 200',
     'Expires=1'),
    ('/k?x-oss-credential=ID9%2F2024&x-oss-signature=SIG9&'
     'x-oss-security-token=TOK9&x-oss-date=2024', 'x-oss-date=2024'),
    ('?security-token=TOK9&Signature=SIG9', '?'),
    ("'x-oss-security-token': 'TOK9'", "'x-oss-security-token'"),
    ("b'GET\\n\\nx-oss-security-token:TOK9\\n/b/k'", '/b/k'),
    ("{'OSSAccessKeyId': 'ID9', 'SignatureProvided': 'SIG9'}",
     'OSSAccessKeyId'),
    ('<SignatureProvided>SIG9</SignatureProvided>', '<SignatureProvided>'),
])
def test_redact_lines(line, kept):
  clean = redact.redact(line)
  assert '<redacted>' in clean and kept in clean
  for secret in ('SIG9', 'TOK9', 'ID9'):
    assert secret not in clean, (secret, clean)


def test_plain_lines_are_untouched():
  for line in ('Make signature: string to be signed = GET', 'authorization '
               'failed for bucket b', 'x-oss-signature-version=OSS4', ''):
    assert redact.redact(line) == line


def test_exception_text_is_redacted_for_every_handler(factory):
  """Beam's worker log handler sends record.exc_info formatted by itself:
  a redacted record keeps only the redacted traceback text."""
  redact.install()
  try:
    raise ValueError('GET /k?OSSAccessKeyId=ID9&Signature=SIG9 failed')
  except ValueError:
    record = logging.getLogger('x').makeRecord(
        'x', logging.ERROR, __file__, 1, 'fetch %s', ('oss://b/k',),
        sys.exc_info())
  assert record.exc_info is None and 'SIG9' not in record.exc_text
  text = logging.Formatter().format(record)
  assert 'Traceback' in text and 'fetch oss://b/k' in text
  assert 'SIG9' not in text and 'ID9' not in text
