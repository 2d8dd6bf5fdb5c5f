"""The job's access policy: which sources it may read, decided before any
request (the launcher checks its own paths with the same rules).

-Dbuckets: oss:// locations (exact keys, see allowed()); -Dallow_local_files:
local paths and file:// URLs; -Dblock_private_networks: http(s) hosts that
resolve to non-public addresses (the HTTP client asks refused_address with
what it resolved, then connects only to those addresses).
"""
import dataclasses
import ipaddress
import re
import urllib.parse
from typing import Iterable, Optional, Sequence, Tuple

from ev_predict.transforms import http
from ev_predict.transforms import record as rec
from ev_predict.transforms.oss.paths import PREFIX, parse_path, plain_key

_CONTROL = re.compile('[\x00-\x1f\x7f]')
# What urlsplit (and Beam's scheme match, after strip()) skip before a scheme.
_LEADING = ''.join(map(chr, range(33)))


@dataclasses.dataclass(frozen=True)
class AccessPolicy:
  # oss:// locations this job may read (empty: any); others are refused
  # without a request.
  allowed_prefixes: Tuple[str, ...] = ()
  # For untrusted file lists: refuse URLs whose host resolves to a loopback,
  # private, link-local or otherwise non-public address (SSRF).
  block_private_networks: bool = False
  # False for untrusted lists: local paths and file:// URLs are refused
  # without touching the disk.
  allow_local_files: bool = True

  def refusal(self, source: str) -> Optional[Tuple[str, str]]:
    """(record kind, message) when the policy refuses source, else None."""
    if _CONTROL.search(source):
      # urlsplit drops tabs and leading control characters that a plain
      # string test keeps ('fi\tle:///etc/x' reads as file:///etc/x).
      return rec.BAD_LINE, 'control character in the path or URL'
    if not self.allow_local_files and is_local(source):
      return rec.FORBIDDEN, (f'{source} is a local file '
                             '(-Dallow_local_files=false)')
    try:
      inside = allowed(source, self.allowed_prefixes)
    except ValueError as e:
      return rec.BAD_LINE, str(e)
    if not inside:
      return rec.FORBIDDEN, f'{source} is outside the allowed buckets'
    return None

  def refused_address(self, addresses: Iterable[str]):
    """The first of a host's resolved addresses that the policy refuses
    (an ipaddress address), None if it may be connected to."""
    if not self.block_private_networks:
      return None
    for address in addresses:
      ip = ipaddress.ip_address(address.split('%')[0])
      if not http.is_public(ip):
        return ip
    return None


def scheme_of(source: str) -> str:
  """The scheme that both the access rules and the readers go by: one
  function, so that a check and a read never see different schemes."""
  if '://' not in source:
    return ''
  try:
    return urllib.parse.urlsplit(source).scheme.lower()
  except ValueError:   # a host NFKC-normalizing to '/', '@'...: the
    return source.split(':', 1)[0].lower()  # reader says what is wrong


def is_local(source: str) -> bool:
  return scheme_of(source) in ('', 'file')


def parse_allow_list(buckets: Optional[str]) -> Tuple[str, ...]:
  """'-Dbuckets=oss://a/x/,oss://b/' -> normalized prefixes; empty: no limit."""
  prefixes = []
  for item in (buckets or '').split(','):
    item = item.strip()
    if not item:
      continue
    bucket, key = parse_path(item, object_optional=True)  # raises if malformed
    if not plain_key(key):
      raise ValueError(f'{item!r} has an empty, "." or ".." segment')
    # A bare bucket or a folder: never let 'oss://b/img' also allow 'imgX'.
    prefixes.append(f'{PREFIX}{bucket}/' + (key if not key or
                                             key.endswith('/') else key + '/'))
  return tuple(prefixes)


def allowed(path: str, prefixes: Sequence[str], folder: bool = False) -> bool:
  """Whether an allow-list admits path: the bucket is a listed one and the
  exact key that will be requested starts with a listed key prefix. Nothing
  is normalised: OSS keys are flat strings, so oss://b//x is the key '/x',
  outside oss://b/x/. Keys with an empty, '.' or '..' segment are refused
  under a list whatever the prefix: tools that mount or sync buckets
  normalise them, so what a reviewer reads is not what would be requested.
  folder: path may also name a listed folder itself (a model directory
  given without its trailing slash)."""
  if not prefixes:
    return True
  if not path.startswith(PREFIX):
    # 'OSS://x', ' oss://x': not ours to guess what a file system makes of.
    return not path.lstrip(_LEADING).lower().startswith('oss:')
  bucket, key = parse_path(path, object_optional=True)
  if not plain_key(key):
    return False
  for prefix in prefixes:
    prefix_bucket, prefix_key = parse_path(prefix, object_optional=True)
    if bucket == prefix_bucket and (key.startswith(prefix_key) or (
        folder and key + '/' == prefix_key)):
      return True
  return False
