"""Where a process finds its OSS credentials: the environment, else an
ossutil-style config file; optionally a RAM role assumed through STS."""
import configparser
import os
from typing import Dict, Optional

import oss2

from ev_predict.transforms import storage


def config_file() -> Dict[str, str]:
  """ossutil's config (INI, section [Credentials]) if present."""
  path = os.environ.get('OSS_CONFIG_FILE') or os.path.expanduser(
      '~/.ossutilconfig')
  if not os.path.isfile(path):
    return {}
  parser = configparser.ConfigParser()
  try:
    parser.read(path, encoding='utf-8')
  except configparser.Error:
    return {}
  if not parser.has_section('Credentials'):
    return {}
  raw = {k.lower(): v.strip() for k, v in parser.items('Credentials')}
  return {
      'access_key_id': raw.get('accesskeyid', ''),
      'access_key_secret': raw.get('accesskeysecret', ''),
      'security_token': raw.get('ststoken', ''),
      'endpoint': raw.get('endpoint', ''),
  }


def base_credentials() -> oss2.credentials.Credentials:
  key_id = os.environ.get('OSS_ACCESS_KEY_ID')
  secret = os.environ.get('OSS_ACCESS_KEY_SECRET')
  token = os.environ.get('OSS_SESSION_TOKEN', '')
  if not (key_id and secret):
    conf = config_file()
    key_id, secret = conf.get('access_key_id'), conf.get('access_key_secret')
    token = conf.get('security_token', '')
  if not (key_id and secret):
    raise storage.ConfigError(
        'no OSS credentials: set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET '
        '(and OSS_SESSION_TOKEN for STS) or write ~/.ossutilconfig')
  return oss2.credentials.Credentials(key_id, secret, token or '')


class RoleProvider(oss2.credentials.CredentialsProvider):
  """Assumes a RAM role through STS with Alibaba's credentials library; the
  library refreshes the temporary credentials before they expire."""

  def __init__(self, role_arn: str):
    # pylint: disable=import-outside-toplevel
    from alibabacloud_credentials.client import Client
    from alibabacloud_credentials.models import Config
    base = base_credentials()
    self._client = Client(Config(
        type='ram_role_arn', access_key_id=base.access_key_id,
        access_key_secret=base.access_key_secret,
        security_token=base.security_token or None, role_arn=role_arn,
        role_session_name='ev-predict',
        sts_endpoint=os.environ.get('ALIBABA_CLOUD_STS_ENDPOINT')))

  def get_credentials(self):
    c = self._client.get_credential()
    return oss2.credentials.Credentials(
        c.access_key_id, c.access_key_secret, c.security_token or '')


class StaticProvider(oss2.credentials.CredentialsProvider):

  def __init__(self, credentials):
    self._credentials = credentials

  def get_credentials(self):
    return self._credentials


def provider(role_arn: Optional[str]) -> oss2.credentials.CredentialsProvider:
  return RoleProvider(role_arn) if role_arn else StaticProvider(
      base_credentials())
