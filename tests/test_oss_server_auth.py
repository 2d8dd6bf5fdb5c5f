"""The fake OSS server through oss2: authentication (V1, V2, V4 and STS
signatures, wrong or unknown keys, tampering, clock skew, presigned URLs)."""
import oss2
import pytest
import requests

# The fixtures too: pytest finds them among the module's globals.
from tests.oss_server_helpers import (
    AK, ODD_KEY, SK, STS_AK, STS_SK, STS_TOKEN, bucket, name, server)


# ---- authentication ----------------------------------------------------------


def test_wrong_secret_is_signature_does_not_match(server, name, bucket):
  bucket.put_object('k', b'v')
  bad = oss2.Bucket(oss2.Auth(AK, 'wrong'), server.endpoint, name)
  for call in [lambda: bad.get_object('k'), lambda: bad.put_object('k', b'x'),
               lambda: bad.list_objects(), lambda: bad.head_object('k'),
               lambda: bad.delete_object('k')]:
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as e:
      call()
    assert e.value.status == 403 and e.value.code == 'SignatureDoesNotMatch'
  assert server.get(name, 'k') == b'v'
  assert server.requests[-1].status == 403 and server.requests[-1].op is None


def test_unknown_key_id_and_anonymous(server, name, bucket):
  stranger = oss2.Bucket(oss2.Auth('who', SK), server.endpoint, name)
  with pytest.raises(oss2.exceptions.ServerError) as e:
    stranger.get_object('k')
  assert (e.value.status, e.value.code) == (403, 'InvalidAccessKeyId')
  anonymous = oss2.Bucket(oss2.AnonymousAuth(), server.endpoint, name)
  with pytest.raises(oss2.exceptions.AccessDenied) as e:
    anonymous.get_object('k')
  assert e.value.status == 403


def test_tampered_request_is_rejected(server, name, bucket):
  # A signature only verifies for what was signed: change the signed
  # Content-Type after signing and the server must notice.
  real_sign = oss2.Auth._sign_request

  def sign_then_tamper(self, req, bucket_name, key):
    real_sign(self, req, bucket_name, key)
    req.headers['Content-Type'] = 'text/evil'

  oss2.Auth._sign_request = sign_then_tamper
  try:
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
      bucket.put_object('k.txt', b'v')
  finally:
    oss2.Auth._sign_request = real_sign


def test_clock_skew(server, name, bucket, monkeypatch):
  monkeypatch.setattr(oss2.utils, 'http_date',
                      lambda timeval=None: 'Mon, 01 Jan 2001 00:00:00 GMT')
  with pytest.raises(oss2.exceptions.ServerError) as e:
    bucket.get_object('k')
  assert (e.value.status, e.value.code) == (403, 'RequestTimeTooSkewed')


@pytest.mark.parametrize('make_auth', [
    lambda: oss2.AuthV2(AK, SK),
    lambda: oss2.AuthV4(AK, SK),
    lambda: oss2.ProviderAuthV4(
        oss2.credentials.StaticCredentialsProvider(AK, SK)),
    lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN),
    lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN, auth_version='v2'),
    lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN, auth_version='v4'),
], ids=['v2', 'v4', 'provider-v4', 'sts-v1', 'sts-v2', 'sts-v4'])
@pytest.mark.parametrize('region', ['cn-hangzhou', 'ap-southeast-1'])
def test_other_signature_versions(server, name, make_auth, region):
  bucket = oss2.Bucket(make_auth(), server.endpoint, name, region=region)
  data = b'signed ' * 100
  bucket.put_object(ODD_KEY, data, headers={'x-oss-meta-a': '1'})
  assert bucket.get_object(ODD_KEY, byte_range=(0, 5)).read() == data[:6]
  assert [o.key for o in oss2.ObjectIteratorV2(bucket, max_keys=1)] == [ODD_KEY]
  assert [o.key for o in oss2.ObjectIterator(bucket, max_keys=1)] == [ODD_KEY]
  upload_id = bucket.init_multipart_upload('mp').upload_id
  part = bucket.upload_part('mp', upload_id, 1, b'p')
  bucket.complete_multipart_upload('mp', upload_id,
                                   [oss2.models.PartInfo(1, part.etag)])
  bucket.batch_delete_objects([ODD_KEY, 'mp'])
  assert server.keys(name) == []


@pytest.mark.parametrize('version', ['v1', 'v4'])
def test_sts_token_must_match(server, name, version):
  wrong = oss2.Bucket(oss2.StsAuth(STS_AK, STS_SK, 'forged', auth_version=version),
                      server.endpoint, name, region='cn-hangzhou')
  with pytest.raises(oss2.exceptions.ServerError) as e:
    wrong.put_object('k', b'v')
  assert (e.value.status, e.value.code) == (403, 'InvalidSecurityToken')
  bad_secret = oss2.Bucket(oss2.StsAuth(STS_AK, 'nope', STS_TOKEN, auth_version=version),
                           server.endpoint, name, region='cn-hangzhou')
  with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
    bad_secret.put_object('k', b'v')
  # Without a token the STS key id is useless too (V1 signs no token then).
  tokenless = oss2.Bucket(oss2.Auth(STS_AK, STS_SK), server.endpoint, name)
  with pytest.raises(oss2.exceptions.ServerError) as e:
    tokenless.put_object('k', b'v')
  assert e.value.code == 'InvalidSecurityToken'
  assert server.keys(name) == []


@pytest.mark.parametrize('make_auth', [
    lambda: oss2.Auth(AK, SK), lambda: oss2.AuthV2(AK, SK),
    lambda: oss2.AuthV4(AK, SK), lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN)],
    ids=['v1', 'v2', 'v4', 'sts'])
def test_presigned_urls(server, name, make_auth):
  bucket = oss2.Bucket(make_auth(), server.endpoint, name, region='cn-hangzhou')
  server.put(name, ODD_KEY, b'presigned')
  url = bucket.sign_url('GET', ODD_KEY, 60)
  assert bucket.get_object_with_url(url).read() == b'presigned'
  assert requests.get(url, timeout=10).content == b'presigned'
  tampered = url.replace(oss2.compat.urlquote(ODD_KEY, ''), 'other')
  assert requests.get(tampered, timeout=10).status_code == 403
  put_url = bucket.sign_url('PUT', 'up', 60)
  bucket.put_object_with_url(put_url, b'uploaded')
  assert server.get(name, 'up') == b'uploaded'


def test_expired_presigned_url(server, name, bucket):
  server.put(name, 'k', b'v')
  url = bucket.sign_url('GET', 'k', -10)
  with pytest.raises(oss2.exceptions.AccessDenied):
    bucket.get_object_with_url(url)
