"""Request authentication as OSS does it: V1, V2 and V4 signatures (headers
and presigned URLs), STS security tokens and clock skew."""
import base64
import calendar
import email.utils
import hashlib
import hmac
import time

from tests.fakes.oss_protocol import (OssError, V1_SUBRESOURCES, canon_query,
                                      uri_encode)


class AuthMixin:
  """OssServer's signature checks; reads self.credentials, self.sts and
  self.max_clock_skew."""

  def _secret(self, access_key_id, token):
    if access_key_id in self.credentials:
      return self.credentials[access_key_id]
    if access_key_id in self.sts:
      secret, expected = self.sts[access_key_id]
      if token != expected:
        raise OssError(403, 'InvalidSecurityToken',
                       'The security token you provided is invalid.')
      return secret
    raise OssError(403, 'InvalidAccessKeyId',
                   'The OSS Access Key Id you provided does not exist in our '
                   'records.', OSSAccessKeyId=access_key_id)

  def _check_skew(self, when):
    if self.max_clock_skew is not None and \
        abs(time.time() - when) > self.max_clock_skew:
      raise OssError(403, 'RequestTimeTooSkewed', 'The difference between the '
                     'request time and the current time is too large.')

  @staticmethod
  def _mismatch(string_to_sign, access_key_id, **extra):
    return OssError(403, 'SignatureDoesNotMatch',
                    'The request signature we calculated does not match the '
                    'signature you provided. Check your key and signing '
                    'method.', StringToSign=string_to_sign,
                    OSSAccessKeyId=access_key_id, **extra)

  def _authenticate(self, method, bucket, key, params, headers):
    auth = headers.get('Authorization')
    if auth is None:
      if 'OSSAccessKeyId' in params and 'Signature' in params:
        return self._auth_v1(method, bucket, key, params, headers, presigned=True)
      version = params.get('x-oss-signature-version')
      if version == 'OSS2':
        return self._auth_v2(method, bucket, key, params, headers, None)
      if version == 'OSS4-HMAC-SHA256':
        return self._auth_v4(method, bucket, key, params, headers, None)
      raise OssError(403, 'AccessDenied', 'AccessDenied: anonymous access is '
                     'not allowed on this server.')
    if auth.startswith('OSS '):
      return self._auth_v1(method, bucket, key, params, headers, auth=auth)
    if auth.startswith('OSS2 '):
      return self._auth_v2(method, bucket, key, params, headers, auth)
    if auth.startswith('OSS4-HMAC-SHA256 '):
      return self._auth_v4(method, bucket, key, params, headers, auth)
    raise OssError(400, 'InvalidArgument', 'Authorization header is invalid.')

  @staticmethod
  def _oss_headers(headers, extra=()):
    """Sorted, lower-cased x-oss-* (and `extra`) headers as 'name:value\\n'.
    Header values are decoded as latin-1 by http.server and signed by oss2
    as UTF-8 bytes of the same str; comparing strs keeps that consistent."""
    pairs = sorted((k.lower(), v) for k, v in headers.items()
                   if k.lower().startswith('x-oss-') or k.lower() in extra)
    return ''.join(f'{k}:{v}\n' for k, v in pairs)

  def _auth_v1(self, method, bucket, key, params, headers, auth=None,
               presigned=False):
    # oss2.auth.ProviderAuth: HMAC-SHA1 over
    #   VERB \n Content-MD5 \n Content-Type \n Date \n
    #   canonical x-oss- headers + /bucket/key[?sorted signed sub-resources]
    # with the *unquoted* key; for presigned URLs Date is the Expires value.
    if presigned:
      access_key_id, signature = params['OSSAccessKeyId'], params['Signature']
      token = params.get('security-token')
      date = params.get('Expires', '')
      if not date.isdigit() or int(date) < time.time():
        raise OssError(403, 'AccessDenied', 'Request has expired.')
    else:
      access_key_id, sep, signature = auth[4:].strip().rpartition(':')
      if not sep:
        raise OssError(400, 'InvalidArgument', 'Authorization header is invalid.')
      token = headers.get('x-oss-security-token')
      date = headers.get('x-oss-date') or headers.get('Date') or ''
      try:
        self._check_skew(email.utils.parsedate_to_datetime(date).timestamp())
      except (TypeError, ValueError):
        raise OssError(403, 'AccessDenied', 'Invalid Date header.') from None
    secret = self._secret(access_key_id, token)
    sub = sorted((k, v) for k, v in params.items() if k in V1_SUBRESOURCES)
    resource = f'/{bucket}/{key}' if bucket else '/'
    if sub:
      resource += '?' + '&'.join(k + '=' + v if v else k for k, v in sub)
    string_to_sign = '\n'.join([
        method, headers.get('Content-MD5', ''), headers.get('Content-Type', ''),
        date, self._oss_headers(headers) + resource])
    expected = base64.b64encode(hmac.new(
        secret.encode('utf-8'), string_to_sign.encode('utf-8'),
        hashlib.sha1).digest()).decode('ascii')
    if not hmac.compare_digest(expected, signature):
      raise self._mismatch(string_to_sign, access_key_id)

  def _auth_v2(self, method, bucket, key, params, headers, auth):
    # oss2.auth.ProviderAuthV2: HMAC-SHA256; resource is the fully
    # uri-encoded /bucket/key plus *all* query parameters.
    params = dict(params)
    if auth is None:   # presigned
      fields = {'AccessKeyId': params.get('x-oss-access-key-id', ''),
                'Signature': params.pop('x-oss-signature', ''),
                'AdditionalHeaders': params.get('x-oss-additional-headers', '')}
      token = params.get('security-token')
      date = params.get('x-oss-expires', '')
      if not date.isdigit() or int(date) < time.time():
        raise OssError(403, 'AccessDenied', 'Request has expired.')
    else:
      fields = dict(f.strip().partition(':')[::2] for f in auth[5:].split(','))
      token = headers.get('x-oss-security-token')
      date = headers.get('Date', '')
    access_key_id = fields.get('AccessKeyId', '')
    secret = self._secret(access_key_id, token)
    additional = sorted(h.lower() for h in
                        fields.get('AdditionalHeaders', '').split(';') if h)
    resource = uri_encode(f'/{bucket}/{key}' if bucket else '/')
    if params:
      resource += '?' + canon_query(params)
    string_to_sign = (f'{method}\n{headers.get("Content-MD5", "")}\n'
                      f'{headers.get("Content-Type", "")}\n{date}\n'
                      + self._oss_headers(headers, additional)
                      + ';'.join(additional) + '\n' + resource)
    expected = base64.b64encode(hmac.new(
        secret.encode('utf-8'), string_to_sign.encode('utf-8'),
        hashlib.sha256).digest()).decode('ascii')
    if not hmac.compare_digest(expected, fields.get('Signature', '')):
      raise self._mismatch(string_to_sign, access_key_id)

  def _auth_v4(self, method, bucket, key, params, headers, auth):
    # oss2.auth.ProviderAuthV4.  Credential scope is
    # <date>/<region>/<product>/aliyun_v4_request; any region is accepted,
    # but the signature is verified with the one in the scope.
    params = dict(params)
    if auth is None:   # presigned
      credential = params.get('x-oss-credential', '')
      signature = params.pop('x-oss-signature', '')
      additional = params.get('x-oss-additional-headers', '')
      token = params.get('x-oss-security-token')
      date_time = params.get('x-oss-date', '')
      payload = 'UNSIGNED-PAYLOAD'
    else:
      fields = dict(f.strip().partition('=')[::2]
                    for f in auth[len('OSS4-HMAC-SHA256 '):].split(','))
      credential = fields.get('Credential', '')
      signature = fields.get('Signature', '')
      additional = fields.get('AdditionalHeaders', '')
      token = headers.get('x-oss-security-token')
      date_time = headers.get('x-oss-date', '')
      payload = headers.get('x-oss-content-sha256', 'UNSIGNED-PAYLOAD')
    access_key_id, _, scope = credential.partition('/')
    parts = scope.split('/')
    if len(parts) != 4 or parts[3] != 'aliyun_v4_request':
      raise OssError(400, 'InvalidArgument', 'Invalid credential in V4 auth.')
    try:
      when = calendar.timegm(time.strptime(date_time, '%Y%m%dT%H%M%SZ'))
    except ValueError:
      raise OssError(403, 'AccessDenied', 'Invalid x-oss-date.') from None
    if auth is None:
      expires = params.get('x-oss-expires', '')
      if not expires.isdigit() or when + int(expires) < time.time():
        raise OssError(403, 'AccessDenied', 'Request has expired.')
    else:
      self._check_skew(when)
    secret = self._secret(access_key_id, token)
    additional = sorted(h.lower() for h in additional.split(';') if h)
    canonical_request = '\n'.join([
        method, uri_encode(f'/{bucket}/{key}' if bucket else '/', True),
        canon_query(params),
        self._oss_headers(headers, set(additional) |
                          {'content-type', 'content-md5'}),
        ';'.join(additional), payload])
    string_to_sign = '\n'.join([
        'OSS4-HMAC-SHA256', date_time, scope,
        hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()])
    signing_key = ('aliyun_v4' + secret).encode('utf-8')
    for part in parts:   # date, region, product, 'aliyun_v4_request'
      signing_key = hmac.new(signing_key, part.encode('utf-8'),
                             hashlib.sha256).digest()
    expected = hmac.new(signing_key, string_to_sign.encode('utf-8'),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
      raise self._mismatch(string_to_sign, access_key_id,
                           CanonicalRequest=canonical_request)
