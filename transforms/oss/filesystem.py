"""``oss://bucket/key`` as a Beam FileSystem, so ReadFromText, WriteToText,
FileSystems.open/match/copy/rename/delete and the fetch stage use OSS unchanged,
and as a storage.Storage (one-request reads, server-side concatenation).

Beam registers every imported FileSystem subclass: workers get this one through
``--beam_plugins=ev_predict.transforms.oss.filesystem.OssFileSystem`` (the CLI
adds it) or by importing this module.
"""
import io

from apache_beam.io.filesystem import (BeamIOError, CompressedFile,
                                       CompressionTypes, FileMetadata,
                                       FileSystem)
from apache_beam.io.filesystemio import DownloaderStream, UploaderStream
from apache_beam.options.pipeline_options import PipelineOptions

from ev_predict.pipeline import parameters
from ev_predict.transforms import storage
from ev_predict.transforms.oss.paths import PREFIX, parse_path


class OssOptions(PipelineOptions):
  """PAI's OSS parameters (no secrets: credentials come from each worker's
  environment)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    for p in parameters.group('oss'):
      p.add_to(parser)


def _oss_io():
  # oss2 (half a second to import) only when an oss:// path is used: Beam
  # makes a file system of every registered scheme to look one up.
  from ev_predict.transforms.oss import io as oss_io  # pylint: disable=import-outside-toplevel
  return oss_io


def settings_from(options):
  from ev_predict.transforms.oss.client import OssSettings  # pylint: disable=import-outside-toplevel
  if options is None:
    return OssSettings()
  if isinstance(options, dict):
    options = PipelineOptions.from_dictionary(options)
  o = options.view_as(OssOptions)
  return OssSettings(endpoints=o.ossHost, role_arn=o.arn)


class OssFileSystem(FileSystem, storage.Storage):

  CHUNK_SIZE = 1000   # objects per DeleteObjects request (oss_io's too)

  def __init__(self, pipeline_options):
    super().__init__(pipeline_options)
    self._options = pipeline_options
    self._client_io = None

  @property
  def _io(self):
    if self._client_io is None:
      self._client_io = _oss_io().OssIO(settings_from(self._options))
    return self._client_io

  @classmethod
  def scheme(cls):
    return 'oss'

  def join(self, basepath, *paths):
    if not basepath.startswith(PREFIX):
      raise ValueError(f'Basepath {basepath!r} must be an OSS path.')
    path = basepath
    for p in paths:
      path = path.rstrip('/') + '/' + p.lstrip('/')
    return path

  def split(self, path):
    path = path.strip()
    if not path.startswith(PREFIX):
      raise ValueError(f'Path {path!r} must be an OSS path.')
    head, _, tail = path[len(PREFIX):].rpartition('/')
    if not head:
      return path, ''
    return PREFIX + head, tail

  def mkdirs(self, path):
    pass  # object stores have no directories

  def has_dirs(self):
    return False

  def _list(self, dir_or_prefix):
    try:
      for info in self._io.list(dir_or_prefix):
        yield FileMetadata(info.path, info.size, info.last_updated)
    except Exception as e:  # pylint: disable=broad-except
      raise BeamIOError('List operation failed', {dir_or_prefix: e}) from e

  def _path_open(self, path, mode, mime_type, compression_type):
    compression_type = FileSystem._get_compression_type(path, compression_type)
    mime_type = CompressionTypes.mime_type(compression_type, mime_type)
    if mode == 'rb':
      # Large reads go in part-sized ranges, small ones through a buffer:
      # each range is one GET.
      raw = io.BufferedReader(
          DownloaderStream(_oss_io().OssDownloader(self._io, path),
                           read_buffer_size=_oss_io().PART_SIZE, mode=mode),
          buffer_size=1 << 20)
    else:
      raw = UploaderStream(_oss_io().OssUploader(self._io, path, mime_type),
                           mode=mode)
    if compression_type == CompressionTypes.UNCOMPRESSED:
      return raw
    return CompressedFile(raw, compression_type=compression_type)

  def create(self, path, mime_type='application/octet-stream',
             compression_type=CompressionTypes.AUTO):
    return self._path_open(path, 'wb', mime_type, compression_type)

  def open(self, path, mime_type='application/octet-stream',
           compression_type=CompressionTypes.AUTO):
    return self._path_open(path, 'rb', mime_type, compression_type)

  def _pairwise(self, op, sources, destinations, name):
    if len(sources) != len(destinations):
      raise BeamIOError(f'Unable to {name} unequal number of sources and '
                        'destinations')
    errors = {}
    for src, dest in zip(sources, destinations):
      try:
        op(src, dest)
      except Exception as e:  # pylint: disable=broad-except
        errors[(src, dest)] = e
    if errors:
      raise BeamIOError(f'{name.capitalize()} operation failed', errors)

  def copy(self, source_file_names, destination_file_names):
    self._pairwise(self._io.copy, source_file_names, destination_file_names,
                   'copy')

  def rename(self, source_file_names, destination_file_names):
    def move(src, dest):
      self._io.copy(src, dest)
      self._io.delete(src)
    self._pairwise(move, source_file_names, destination_file_names, 'rename')

  def _wrap(self, name, fn, path):
    try:
      return fn(path)
    except Exception as e:  # pylint: disable=broad-except
      raise BeamIOError(f'{name} operation failed', {path: e}) from e

  def exists(self, path):
    return self._wrap('exists', self._io.exists, path)

  def size(self, path):
    return self._wrap('size', lambda p: self._io.stat(p).size, path)

  def last_updated(self, path):
    return self._wrap('last_updated', lambda p: self._io.stat(p).last_updated,
                      path)

  def checksum(self, path):
    return self._wrap('checksum', lambda p: self._io.stat(p).etag, path)

  def metadata(self, path):
    def meta(p):
      info = self._io.stat(p)
      return FileMetadata(p, info.size, info.last_updated)
    return self._wrap('metadata', meta, path)

  def has_children(self, path) -> bool:
    """Whether objects exist under path/ (a 'directory')."""
    prefix = path.rstrip('/') + '/'
    return self._wrap('list', lambda p: next(iter(self._io.list(p)), None)
                      is not None, prefix)

  def delete(self, paths):
    """Beam's contract: a file, or a directory recursively (Beam removes
    its temporary folders so). ev-predict deletes its targets never so, only
    its own shard folder."""
    errors = {}
    for path in paths:
      try:
        self._io.delete_tree(path)
      except Exception as e:  # pylint: disable=broad-except
        errors[path] = e
    if errors:
      raise BeamIOError('Delete operation failed', errors)

  # -- storage.Storage ---------------------------------------------------
  def read_object(self, path, cap, timeout=None):
    """A whole object in one request, within timeout seconds in all."""
    # No retries here: the fetch stage retries with its own policy.
    return self._io.read(path, cap, retry=False, timeout=timeout)

  def concatenate(self, sources, target) -> bool:
    """Server-side when OSS allows it (parts >= 100 KiB), else streamed."""
    if all(s.startswith(PREFIX) for s in sources):
      sizes = [self._io.stat(s).size for s in sources]
      nonempty = [(s, n) for s, n in zip(sources, sizes) if n]
      if nonempty and _oss_io().OssIO.can_compose([n for _, n in nonempty]):
        self._io.compose([s for s, _ in nonempty], target,
                         [n for _, n in nonempty])
        return True   # a multipart completion is atomic
    storage.copy_streams(sources, target)
    return False

  def delete_object(self, path):
    """Deletes one object, never a prefix (the job's own files)."""
    self._io.delete(path)

  def report_lineage(self, path, lineage):
    try:
      bucket, key = parse_path(path, object_optional=True)
    except ValueError:
      return
    lineage.add('oss', bucket, *([key] if key else []), last_segment_sep='/')
