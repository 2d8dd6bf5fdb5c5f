"""Remote model directories (oss://, …) copied once per worker machine into a
private local cache, since tf.saved_model.load reads only local paths.

The cache key covers the path and every file's relative name, size and
checksum (the ETag on OSS), so a re-uploaded model is fetched again. A file lock makes
concurrent worker processes download it once; the copy is staged and renamed
into place, so a crashed download is never mistaken for a model.
"""
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_CHUNK = 8 << 20


def cache_root() -> str:
  root = os.environ.get('EV_PREDICT_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'ev-predict', 'models')
  os.makedirs(root, mode=0o700, exist_ok=True)
  os.chmod(root, 0o700)   # models can be proprietary: private to the user
  return root


def is_local(path: str) -> bool:
  return '://' not in path or path.startswith('file://')


def local_model_dir(path: str) -> str:
  """A local directory holding the model at path (path itself if local)."""
  if is_local(path):
    return path[len('file://'):] if path.startswith('file://') else path
  base = path.rstrip('/') + '/'
  files = sorted(
      (m.path[len(base):], m.size_in_bytes, FileSystems.checksum(m.path))
      for m in FileSystems.match([base + '**'])[0].metadata_list
      if m.path.startswith(base) and not m.path.endswith('/'))
  if not any(rel == 'saved_model.pb' for rel, _, _ in files):
    raise FileNotFoundError(f'no saved_model.pb under {path}')
  key = hashlib.sha256(
      json.dumps([path, files]).encode('utf-8')).hexdigest()[:32]
  root = cache_root()
  target = os.path.join(root, key)
  with open(os.path.join(root, key + '.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.isdir(target):
      return target
    staging = tempfile.mkdtemp(prefix=key + '.tmp-', dir=root)
    try:
      for rel, _, _ in files:
        dest = os.path.join(staging, *rel.split('/'))
        if not os.path.abspath(dest).startswith(staging + os.sep):
          raise ValueError(f'unsafe file name in model: {rel!r}')
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with FileSystems.open(
            base + rel, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
            open(dest, 'wb') as out:
          shutil.copyfileobj(src, out, _CHUNK)
      os.rename(staging, target)
    except BaseException:
      shutil.rmtree(staging, ignore_errors=True)
      raise
  return target


# Small facts about a model that cost an import of TensorFlow to learn (its
# signatures; whether OpenVINO agrees with it), kept beside the converted
# models so that a warm start needs neither (docs/performance.md, Start-up).
# A fact that cannot be kept or read is simply learnt again.


def recall(kind: str, key: str):
  """A fact kept by remember(), or None."""
  try:
    path = _fact_path(kind, key)
    if not stat.S_ISREG(os.lstat(path).st_mode):
      return None             # never open a FIFO or follow a link here
    with open(path, encoding='utf-8') as f:
      return json.loads(f.read(1 << 20))
  except (OSError, ValueError, RecursionError):
    return None


def remember(kind: str, key: str, value) -> None:
  tmp = None
  try:
    path = _fact_path(kind, key)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'{key}.tmp-',
                               dir=os.path.dirname(path))
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(value, f)
    os.replace(tmp, path)
    tmp = None
  except OSError:
    pass
  finally:
    if tmp:
      try:
        os.unlink(tmp)
      except OSError:
        pass


def forget(kind: str, key: str) -> None:
  try:
    os.unlink(_fact_path(kind, key))
  except OSError:
    pass


def fact_key(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, default=str).encode('utf-8')
                        ).hexdigest()[:32]


def _fact_path(kind: str, key: str) -> str:
  return os.path.join(cache_root(), kind, key + '.json')
