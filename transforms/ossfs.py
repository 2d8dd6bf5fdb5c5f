"""``oss://bucket/key`` as a Beam FileSystem, so ReadFromText, WriteToText,
FileSystems.open/match/copy/rename/delete and the fetch stage use OSS unchanged.

Beam registers every imported FileSystem subclass: workers get this one through
``--beam_plugins=ev_predict.transforms.ossfs.OssFileSystem`` (the CLI adds it) or by
importing the fetch stage.
"""
import io

from apache_beam.io.filesystem import (BeamIOError, CompressedFile,
                                       CompressionTypes, FileMetadata,
                                       FileSystem)
from apache_beam.io.filesystemio import DownloaderStream, UploaderStream
from apache_beam.options.pipeline_options import PipelineOptions

from ev_predict.pipeline import parameters
from ev_predict.transforms import ossio


class OssOptions(PipelineOptions):
  """PAI's OSS parameters (no secrets: credentials come from each worker's
  environment)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    for p in parameters.group('oss'):
      p.add_to(parser)


def settings_from(options) -> ossio.OssSettings:
  if options is None:
    return ossio.OssSettings()
  if isinstance(options, dict):
    options = PipelineOptions.from_dictionary(options)
  o = options.view_as(OssOptions)
  return ossio.OssSettings(endpoints=o.ossHost, role_arn=o.arn)


class OssFileSystem(FileSystem):

  CHUNK_SIZE = ossio.MAX_DELETE_BATCH

  def __init__(self, pipeline_options):
    super().__init__(pipeline_options)
    self._io = ossio.OssIO(settings_from(pipeline_options))

  @classmethod
  def scheme(cls):
    return 'oss'

  def join(self, basepath, *paths):
    if not basepath.startswith(ossio.PREFIX):
      raise ValueError(f'Basepath {basepath!r} must be an OSS path.')
    path = basepath
    for p in paths:
      path = path.rstrip('/') + '/' + p.lstrip('/')
    return path

  def split(self, path):
    path = path.strip()
    if not path.startswith(ossio.PREFIX):
      raise ValueError(f'Path {path!r} must be an OSS path.')
    head, _, tail = path[len(ossio.PREFIX):].rpartition('/')
    if not head:
      return path, ''
    return ossio.PREFIX + head, tail

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
          DownloaderStream(ossio.OssDownloader(self._io, path),
                           read_buffer_size=ossio.PART_SIZE, mode=mode),
          buffer_size=1 << 20)
    else:
      raw = UploaderStream(ossio.OssUploader(self._io, path, mime_type),
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

  def delete_object(self, path):
    """Deletes one object, never a prefix (the job's own files)."""
    self._wrap('delete', self._io.delete, path)

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

  def read_object(self, path, max_bytes, timeout=None):
    """A whole object in one request, within timeout seconds in all; raises
    ossio.TooLarge over the cap, else the OSErrors of ossio.to_io_error."""
    # No retries here: the fetch stage retries with its own policy.
    return self._io.read(path, max_bytes, retry=False, timeout=timeout)

  def concatenate(self, sources, destination) -> bool:
    """Server-side concatenation when OSS allows it (parts >= 100 KiB);
    False tells the caller to stream the bytes instead."""
    if not all(s.startswith(ossio.PREFIX) for s in sources):
      return False
    sizes = [self._io.stat(s).size for s in sorted(sources)]
    nonempty = [(s, n) for s, n in zip(sorted(sources), sizes) if n]
    if not nonempty or not ossio.OssIO.can_compose([n for _, n in nonempty]):
      return False
    self._io.compose([s for s, _ in nonempty], destination,
                     [n for _, n in nonempty])
    return True

  def report_lineage(self, path, lineage):
    try:
      bucket, key = ossio.parse_path(path, object_optional=True)
    except ValueError:
      return
    lineage.add('oss', bucket, *([key] if key else []), last_segment_sep='/')
