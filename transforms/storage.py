"""What the stages need from a file system, and the errors it raises.

Stages ask for_path(path) and get a Storage: the file system itself where it
implements the protocol (oss://), else FileSystemStorage over whatever Beam
FileSystem serves the scheme. Failures are typed: a stage maps the type of an
error to a record kind and never reads its message, which holds the path
(a key such as 2024/img_1403.jpg must not make a reset look like a 403).
"""
import abc
import errno
import os
import time
from typing import Optional, Sequence

from apache_beam.io.filesystem import (BeamIOError, CompressionTypes,
                                       FileSystem)
from apache_beam.io.filesystems import FileSystems

_COPY_CHUNK = 8 << 20


class StorageError(Exception):
  """A failure of a storage operation; transient: worth another attempt."""
  transient = False

  @property
  def reason(self) -> str:
    """The message without the errno prefix that OSError's str() adds."""
    return reason_of(self)


class NotFound(StorageError, FileNotFoundError):
  pass


class Forbidden(StorageError, PermissionError):
  pass


class Timeout(StorageError, TimeoutError):
  transient = True


class Transient(StorageError, OSError):
  """A connection reset, a body cut short, an I/O error of unknown cause."""
  transient = True


class ServerError(StorageError, OSError):
  """An error reply of the service other than not found and forbidden."""

  def __init__(self, status: int, message: str):
    super().__init__(errno.EIO, message)
    self.status = status
    self.transient = status >= 500 or status in (408, 429)

  def __reduce__(self):
    return type(self), (self.status, self.strerror)


class TooLarge(StorageError):
  """An object over the caller's byte cap (not read)."""


class ConfigError(StorageError, ValueError):
  """The storage is not configured well enough to make a request."""


class InvalidPath(StorageError, ValueError):
  """A path that names no object (oss://bucket without a key...)."""


class Unsupported(StorageError, ValueError):
  """No file system serves the path's scheme."""


class Storage(abc.ABC):
  """The operations of a file system that stages use beyond Beam's."""

  @abc.abstractmethod
  def read_object(self, path: str, cap: int,
                  timeout: Optional[float] = None) -> bytes:
    """The whole object, within timeout seconds in all (one attempt: the
    caller has its own retry policy); TooLarge past cap bytes."""

  @abc.abstractmethod
  def concatenate(self, sources: Sequence[str], target: str) -> bool:
    """target (a new file) = sources in the given order; True when composed
    server-side (no byte passed through this process)."""

  @abc.abstractmethod
  def delete_object(self, path: str) -> None:
    """Deletes one file, never a directory or a prefix."""

  def has_children(self, path: str) -> bool:  # pylint: disable=unused-argument
    """Whether objects exist under path/: an object store's 'directory',
    which exists only in its objects' names. Only such a store has them."""
    return False


class FileSystemStorage(Storage):
  """The protocol over any Beam FileSystem, through its open/create/delete."""

  def __init__(self, fs: FileSystem):
    self._fs = fs

  def read_object(self, path, cap, timeout=None):
    """Read in chunks until the deadline, which is checked between chunks
    (a single read that blocks is that file system's own timeout to
    bound)."""
    try:
      return self._read(path, cap, timeout)
    except Exception as e:  # pylint: disable=broad-except
      raise translate(e, path) from e

  def _read(self, path, cap, timeout):
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks, total = [], 0
    with self._fs.open(path,
                       compression_type=CompressionTypes.UNCOMPRESSED) as f:
      while True:
        if deadline is not None and time.monotonic() >= deadline:
          raise Timeout(errno.ETIMEDOUT, f'timed out reading {path} '
                        f'({total} bytes in {timeout} s)')
        chunk = f.read(min(1 << 16, cap + 1 - total))
        if not chunk:
          return b''.join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
          raise TooLarge(f'more than the {cap}-byte cap')

  def concatenate(self, sources, target):
    copy_streams(sources, target)
    return False

  def delete_object(self, path):
    if os.path.isdir(path):
      raise IsADirectoryError(path)
    self._fs.delete([path])


def copy_streams(sources: Sequence[str], target: str) -> None:
  """target = sources, every byte streamed through this process."""
  with FileSystems.create(
      target, compression_type=CompressionTypes.UNCOMPRESSED) as out:
    for source in sources:
      with FileSystems.open(
          source, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while True:
          chunk = f.read(_COPY_CHUNK)
          if not chunk:
            break
          out.write(chunk)


def for_path(path: str) -> Storage:
  """The Storage for path's scheme; Unsupported if no file system has it."""
  try:
    fs = FileSystems.get_filesystem(path)
  except ValueError as e:
    raise Unsupported(f'unsupported scheme in {path!r}') from e
  return fs if isinstance(fs, Storage) else FileSystemStorage(fs)


def translate(e: BaseException, path: str) -> BaseException:
  """A file system's exception as a StorageError, by its type only; one with
  no typed meaning (an OSError of unknown cause) is returned as it is."""
  e = cause_of(e)
  if isinstance(e, StorageError):
    return e
  if isinstance(e, FileNotFoundError):
    return NotFound(errno.ENOENT, f'not found: {path}')
  if isinstance(e, PermissionError):
    return Forbidden(errno.EACCES, reason_of(e))
  if isinstance(e, TimeoutError):
    return Timeout(errno.ETIMEDOUT, reason_of(e))
  if isinstance(e, ValueError):   # a path this file system cannot parse
    return InvalidPath(str(e))
  return e


def cause_of(e: BaseException) -> BaseException:
  """The per-path cause that a BeamIOError about one path wraps, else e."""
  if isinstance(e, BeamIOError) and len(e.exception_details or {}) == 1:
    return next(iter(e.exception_details.values()))
  return e


def reason_of(e: BaseException) -> str:
  """An error's message without the errno prefix that OSError's str()
  adds."""
  return e.strerror if isinstance(e, OSError) and e.strerror else str(e)
