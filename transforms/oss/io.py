"""Operations on oss:// paths: objects, listings, server-side copies and
composition, and the Downloader/Uploader pair behind Beam's stream classes
(the structure of Beam's s3io). Every failure leaves here as a storage
error keyed by its path."""
import dataclasses
import errno
import logging
import time
from typing import Iterator, List, Optional, Sequence, Tuple

import oss2
from apache_beam.io.filesystemio import Downloader, Uploader

from ev_predict.transforms import storage
from ev_predict.transforms.oss import client as oss_client
from ev_predict.transforms.oss.client import (OssSettings, to_storage_error,
                                              with_retries)
from ev_predict.transforms.oss.paths import PREFIX, parse_path

_LOG = logging.getLogger(__name__)

PART_SIZE = 8 << 20        # multipart uploads and copies
MIN_COPY_PART = 100 << 10  # OSS refuses smaller non-final parts
MAX_DELETE_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
  path: str
  size: int
  last_updated: float
  etag: str


class OssIO:
  """Operations on oss:// paths for one set of settings.

  client_factory: bucket name -> oss2.Bucket; by default one shared client
  per bucket and process, built from settings and the environment's
  credentials."""

  def __init__(self, settings: OssSettings = OssSettings(),
               client_factory: Optional[oss_client.ClientFactory] = None):
    self._settings = settings
    self._client_factory = client_factory

  def client(self, bucket: str) -> oss2.Bucket:
    if self._client_factory is not None:
      return self._client_factory(bucket)
    return oss_client.bucket_client(self._settings, bucket)

  def _call(self, path: str, method: str, *args, **kwargs):
    bucket, key = parse_path(path, object_optional=True)
    try:
      return with_retries(getattr(self.client(bucket), method), key, *args,
                          **kwargs)
    except oss2.exceptions.OssError as e:
      raise to_storage_error(e, path) from e

  # -- single objects -----------------------------------------------------
  def stat(self, path: str) -> ObjectInfo:
    head = self._call(path, 'head_object')
    return ObjectInfo(path, head.content_length, float(head.last_modified),
                      (head.etag or '').strip('"'))

  def exists(self, path: str) -> bool:
    try:
      self.stat(path)
      return True
    except storage.NotFound:
      return False

  def read_range(self, path: str, start: int, end: int) -> bytes:
    """Bytes [start, end); a body cut short is retried, never returned."""
    bucket, key = parse_path(path)

    def fetch():
      result = self.client(bucket).get_object(
          key, byte_range=(start, end - 1),
          headers={'x-oss-range-behavior': 'standard'})
      data = result.read()
      if len(data) != end - start:
        raise oss2.exceptions.RequestError(
            IOError(f'short read: {len(data)} of {end - start} bytes'))
      return data

    try:
      return with_retries(fetch)
    except oss2.exceptions.OssError as e:
      raise to_storage_error(e, path) from e

  def read(self, path: str, max_bytes: Optional[int] = None,
           retry: bool = True, timeout: Optional[float] = None) -> bytes:
    """The whole object in one GET (images); an object over max_bytes is
    refused from its Content-Length, a body cut short is an error (retried
    here unless the caller has its own retry policy). timeout bounds each
    attempt as a whole, however slowly the bytes arrive. Raises storage
    errors only: nothing whose meaning hides in its message."""
    bucket, key = parse_path(path)

    def fetch():
      deadline = None if timeout is None else time.monotonic() + timeout
      result = self.client(bucket).get_object(key)
      try:
        size = result.content_length
        if max_bytes is not None and size is not None and size > max_bytes:
          raise storage.TooLarge(
              f'{size} bytes exceeds the {max_bytes}-byte cap')
        data = _read_body(result.resp.response.raw, deadline, max_bytes,
                          path)
      finally:
        result.resp.response.close()
      if size is not None and len(data) != size:
        raise oss2.exceptions.RequestError(
            IOError(f'short read: {len(data)} of {size} bytes'))
      return data

    try:
      return with_retries(fetch) if retry else fetch()
    except Exception as e:  # pylint: disable=broad-except
      raise to_storage_error(e, path) from e

  def delete(self, path: str) -> None:
    self._call(path, 'delete_object')

  # -- listings -----------------------------------------------------------
  def list(self, prefix_path: str) -> Iterator[ObjectInfo]:
    bucket, prefix = parse_path(prefix_path, object_optional=True)
    client = self.client(bucket)
    token = ''
    while True:
      try:
        page = with_retries(client.list_objects_v2, prefix=prefix,
                            continuation_token=token, max_keys=1000)
      except oss2.exceptions.OssError as e:
        raise to_storage_error(e, prefix_path) from e
      for obj in page.object_list:
        yield ObjectInfo(f'{PREFIX}{bucket}/{obj.key}', obj.size,
                         float(obj.last_modified), (obj.etag or '').strip('"'))
      if not page.is_truncated:
        return
      token = page.next_continuation_token

  def delete_tree(self, path: str) -> None:
    """Deletes an object, or every object under path/ (a 'directory')."""
    bucket, key = parse_path(path, object_optional=True)
    if not key.strip('/'):
      raise ValueError(f'refusing to delete a whole bucket: {path}')
    if not key.endswith('/') and self.exists(path):
      self.delete(path)
      return
    prefix = f'{PREFIX}{bucket}/{key.rstrip("/")}/'
    keys = [parse_path(o.path)[1] for o in self.list(prefix)]
    client = self.client(bucket)
    for i in range(0, len(keys), MAX_DELETE_BATCH):
      with_retries(client.batch_delete_objects, keys[i:i + MAX_DELETE_BATCH])

  # -- copies -------------------------------------------------------------
  def copy(self, src: str, dest: str) -> None:
    src_bucket, src_key = parse_path(src)
    dest_bucket, dest_key = parse_path(dest)
    size = self.stat(src).size
    if size <= 1 << 30:
      try:
        with_retries(self.client(dest_bucket).copy_object, src_bucket,
                     src_key, dest_key)
      except oss2.exceptions.OssError as e:
        raise to_storage_error(e, src) from e
      return
    self.compose([src], dest)

  def compose(self, sources: Sequence[str], dest: str,
              sizes: Optional[Sequence[int]] = None) -> None:
    """dest = concatenation of sources, copied server-side (UploadPartCopy):
    no byte passes through this process."""
    dest_bucket, dest_key = parse_path(dest)
    client = self.client(dest_bucket)
    sizes = list(sizes) if sizes is not None else [
        self.stat(s).size for s in sources]
    upload_id = with_retries(client.init_multipart_upload, dest_key).upload_id
    parts = []
    try:
      for src, size in zip(sources, sizes):
        src_bucket, src_key = parse_path(src)
        for start, end in _even_ranges(size, PART_SIZE):
          number = len(parts) + 1
          result = with_retries(
              client.upload_part_copy, src_bucket, src_key, (start, end - 1),
              dest_key, upload_id, number)
          parts.append(oss2.models.PartInfo(number, result.etag))
      with_retries(client.complete_multipart_upload, dest_key, upload_id,
                   parts)
    except BaseException:
      try:
        client.abort_multipart_upload(dest_key, upload_id)
      except Exception:  # pylint: disable=broad-except
        _LOG.warning('could not abort multipart upload to %s', dest)
      raise

  @staticmethod
  def can_compose(sizes: Sequence[int]) -> bool:
    """UploadPartCopy needs every part but the last to be >= 100 KiB."""
    return bool(sizes) and all(s >= MIN_COPY_PART for s in sizes[:-1]) and \
        sizes[-1] > 0


def _read_body(raw, deadline: Optional[float], max_bytes: Optional[int],
               path: str) -> bytes:
  """A response body (urllib3) read one socket read at a time, each with no
  more time than the attempt has left: a body trickling in byte by byte
  never outlives the deadline, as it would with a per-read socket timeout."""
  sock = getattr(getattr(raw, 'connection', None), 'sock', None)
  base = sock.gettimeout() if sock is not None else None
  chunks, total = [], 0
  while True:
    if deadline is not None:
      left = deadline - time.monotonic()
      if left <= 0:
        raise storage.Timeout(errno.ETIMEDOUT, f'timed out reading {path} '
                              f'({total} bytes in time)')
      if sock is not None:
        sock.settimeout(left if base is None else min(base, left))
    try:
      chunk = raw.read1(1 << 16, decode_content=True)
    except Exception:  # pylint: disable=broad-except
      if deadline is not None and time.monotonic() >= deadline:
        raise storage.Timeout(errno.ETIMEDOUT, f'timed out reading {path} '
                              f'({total} bytes in time)') from None
      raise
    if not chunk:
      return b''.join(chunks)
    total += len(chunk)
    if max_bytes is not None and total > max_bytes:
      raise storage.TooLarge(f'more than the {max_bytes}-byte cap')
    chunks.append(chunk)


def _even_ranges(size: int, part_size: int) -> List[Tuple[int, int]]:
  """[start, end) ranges of about equal size, none above part_size: equal
  parts keep every part of a source far above OSS's 100 KiB minimum, where
  fixed-size cuts could leave a tiny remainder in the middle of the upload."""
  count = max(1, -(-size // part_size))
  bounds = [size * i // count for i in range(count + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


class OssDownloader(Downloader):

  def __init__(self, io: OssIO, path: str):
    self._io = io
    self._path = path
    self._size = io.stat(path).size

  @property
  def size(self):
    return self._size

  def get_range(self, start, end):
    if start >= end:
      return b''
    return self._io.read_range(self._path, start, min(end, self._size))


class OssUploader(Uploader):
  """Buffers up to one part: a small file is one PutObject, a large one a
  multipart upload whose parts are sent as they fill."""

  def __init__(self, io: OssIO, path: str,
               mime_type: str = 'application/octet-stream'):
    self._io = io
    self._path = path
    self._bucket, self._key = parse_path(path)
    self._headers = {'Content-Type': mime_type}
    self._buffer = bytearray()
    self._upload_id = None
    self._parts: List = []

  def _client(self):
    return self._io.client(self._bucket)

  def put(self, data):
    self._buffer += data  # any buffer: Beam's streams pass memoryviews
    while len(self._buffer) >= PART_SIZE:
      chunk = bytes(self._buffer[:PART_SIZE])
      del self._buffer[:PART_SIZE]
      self._send_part(chunk)

  def _send_part(self, chunk: bytes):
    try:
      if self._upload_id is None:
        self._upload_id = with_retries(
            self._client().init_multipart_upload, self._key,
            headers=self._headers).upload_id
      number = len(self._parts) + 1
      result = with_retries(self._client().upload_part, self._key,
                            self._upload_id, number, chunk)
      self._parts.append(oss2.models.PartInfo(number, result.etag))
    except oss2.exceptions.OssError as e:
      self._abort()
      raise to_storage_error(e, self._path) from e

  def finish(self):
    try:
      if self._upload_id is None:
        with_retries(self._client().put_object, self._key,
                     bytes(self._buffer), headers=self._headers)
        return
      if self._buffer:
        self._send_part(bytes(self._buffer))
        self._buffer.clear()
      with_retries(self._client().complete_multipart_upload, self._key,
                   self._upload_id, self._parts)
    except oss2.exceptions.OssError as e:
      self._abort()
      raise to_storage_error(e, self._path) from e

  def _abort(self):
    if self._upload_id is not None:
      try:
        self._client().abort_multipart_upload(self._key, self._upload_id)
      except Exception:  # pylint: disable=broad-except
        pass
      self._upload_id = None
