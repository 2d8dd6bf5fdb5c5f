"""oss://bucket/key names and endpoint spellings."""
from typing import Tuple

from ev_predict.transforms import storage

PREFIX = 'oss://'


def parse_path(path: str, object_optional: bool = False) -> Tuple[str, str]:
  """'oss://bucket/key' -> ('bucket', 'key'); storage.InvalidPath (a
  ValueError) for anything else."""
  if not path.startswith(PREFIX):
    raise storage.InvalidPath(f'not an OSS path: {path!r}')
  bucket, _, key = path[len(PREFIX):].partition('/')
  if not bucket or (not key and not object_optional):
    raise storage.InvalidPath(
        f'OSS path needs a bucket and an object: {path!r}')
  return bucket, key


def plain_key(key: str) -> bool:
  """No empty, '.' or '..' segment (one trailing '/' marks a folder)."""
  segments = key.split('/')
  if segments[-1] == '':
    segments.pop()
  return all(s not in ('', '.', '..') for s in segments)


def normalize_endpoint(host: str) -> str:
  host = host.strip().rstrip('/')
  if '://' not in host:
    host = 'http://' + host   # internal endpoints are plain HTTP
  return host
