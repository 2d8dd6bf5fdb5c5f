"""A job's resume state: the file list cut into chunks, and a folder beside
the result where each chunk's outcome is committed as soon as it is whole.

    <result>.ev-resume/
      manifest.json        ours: the key of the job (list, model, parameters)
      plan.json            the chunks: byte offsets into the list, line counts
      launcher.json        the launcher that owns the folder now
      chunks/c00000012.done            a committed chunk: counts and its files
      chunks/c00000012-<attempt>.ok    its result lines, in input order
      chunks/c00000012-<attempt>.err   its error lines, in input order
      progress/<worker>.json           live counts (transforms/progress.py)
      staging-<run>         exists while a run writes its staging files
      commit-<run>          exists while a run swaps the final files in
      table/list.jsonl      a table job's list: a line per row (transforms/table.py)
      table/lines*.tmp-<run>  its result and error lines, before the tables

A chunk is a run of consecutive lines of the list; its files hold its lines in
input order, so the result is the chunks' files concatenated in chunk order:
input order at any number of workers, with no sort. A chunk's .done marker is
written last and atomically: a chunk without one (a killed worker) is redone
whole, one with one is never fetched again. The folder is removed once the
final files are committed.

Workers write chunks (transforms/write.py, CommitChunks); the launcher decides
what to resume (pipeline/resume.py). Both name files through this module.
"""
import dataclasses
import json
import os
import posixpath
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

FORMAT = 'ev-predict-resume/1'
SUFFIX = '.ev-resume'
_BOM = b'\xef\xbb\xbf'
_BLOCK = 8 << 20


def is_blank(line: bytes) -> bool:
  """transforms/read.py parse_line's rule: whitespace and a BOM only."""
  line = line.strip()
  if line.startswith(_BOM):
    line = line[len(_BOM):].strip()
  return not line


@dataclasses.dataclass(frozen=True)
class ListPlan:
  """The list cut at line boundaries into chunks of chunk_lines non-blank
  lines (the last may hold fewer). offsets[i]..offsets[i+1] are chunk i's
  bytes in the (decompressed) list; counts[i] its non-blank lines."""
  chunk_lines: int
  offsets: Tuple[int, ...]
  counts: Tuple[int, ...]

  @property
  def chunks(self) -> int:
    return len(self.counts)

  @property
  def total(self) -> int:
    return sum(self.counts)

  def to_json(self) -> dict:
    return {'chunk_lines': self.chunk_lines, 'offsets': list(self.offsets),
            'counts': list(self.counts)}

  @classmethod
  def from_json(cls, obj: dict) -> 'ListPlan':
    plan = cls(int(obj['chunk_lines']), tuple(map(int, obj['offsets'])),
               tuple(map(int, obj['counts'])))
    if len(plan.offsets) != plan.chunks + 1:
      raise ValueError('offsets and counts do not match')
    return plan


def open_list(path: str):
  """The list as bytes, decompressed by its extension as Beam reads it."""
  return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def count_lines(path: str) -> int:
  """Non-blank lines of a list, streamed."""
  return sum(scan(path, chunk_lines=1 << 62).counts)


def scan(path: str, chunk_lines: int) -> ListPlan:
  """One streaming pass over the list: memory flat in its length."""
  offsets, counts = [0], []
  in_chunk = 0
  position = 0
  rest = b''
  with open_list(path) as f:
    while True:
      block = f.read(_BLOCK)
      if not block:
        break
      lines = (rest + block).split(b'\n')
      rest = lines.pop()
      for line in lines:
        position += len(line) + 1
        if line and not is_blank(line):
          in_chunk += 1
          if in_chunk == chunk_lines:
            offsets.append(position)
            counts.append(in_chunk)
            in_chunk = 0
  if rest:
    position += len(rest)
    if not is_blank(rest):
      in_chunk += 1
  if in_chunk or not counts:
    offsets.append(position)
    counts.append(in_chunk)
  elif offsets[-1] != position:
    # Blank lines after the last full chunk belong to it.
    offsets[-1] = position
  return ListPlan(chunk_lines, tuple(offsets), tuple(counts))


def read_chunk(path: str, plan: ListPlan, index: int) -> Iterator[bytes]:
  """Chunk index's non-blank lines (raw: parse_line strips them)."""
  start, end = plan.offsets[index], plan.offsets[index + 1]
  with open_list(path) as f:
    if _compressed(path):
      _skip(f, start)  # a compressed stream cannot seek
    else:
      f.seek(start)
    data = _read_exactly(f, end - start)
  for line in data.split(b'\n'):
    if line and not is_blank(line):
      yield line


def _compressed(path: str) -> bool:
  return CompressionTypes.detect_compression_type(path) != \
      CompressionTypes.UNCOMPRESSED


def _skip(f, n: int) -> None:
  while n > 0:
    got = f.read(min(n, _BLOCK))
    if not got:
      raise EOFError('the file list ended early: did it change?')
    n -= len(got)


def _read_exactly(f, n: int) -> bytes:
  parts, left = [], n
  while left > 0:
    got = f.read(left)
    if not got:
      raise EOFError('the file list ended early: did it change?')
    parts.append(got)
    left -= len(got)
  return b''.join(parts)


def chunk_lines_for(total: int, parallel: int, batch: int = 1) -> int:
  """Chunk size: small enough that an interruption redoes little (about
  0.5 % of the list per worker in flight), large enough that a chunk's
  three small files are few next to its fetches; a whole number of batches,
  since a chunk's last batch is padded to the batch size (BatchByChunk)."""
  lines = max(20, min(5000, -(-total // (200 * max(1, parallel)))))
  batch = max(1, batch)
  return -(-lines // batch) * batch


# ------------------------------------------------------------ the folder


def state_folder(result: str) -> str:
  return result + SUFFIX


def _join(folder: str, *names: str) -> str:
  if '://' in folder:
    return posixpath.join(folder, *names)
  return os.path.join(folder, *names)


@dataclasses.dataclass(frozen=True)
class StateFolder:
  root: str

  @property
  def manifest(self) -> str:
    return _join(self.root, 'manifest.json')

  @property
  def plan(self) -> str:
    return _join(self.root, 'plan.json')

  @property
  def owner(self) -> str:
    return _join(self.root, 'launcher.json')

  @property
  def chunks(self) -> str:
    return _join(self.root, 'chunks')

  @property
  def progress(self) -> str:
    return _join(self.root, 'progress')

  @property
  def table_list(self) -> str:
    return _join(self.root, 'table', 'list.jsonl')

  @property
  def table_lines(self) -> str:
    """Where a table job's result lines are staged (and its errors and
    summary beside them, as write.OutputPaths names them)."""
    return _join(self.root, 'table', 'lines')

  def journal(self, run_id: str) -> str:
    return _join(self.root, f'commit-{run_id}')

  def staging_marker(self, run_id: str) -> str:
    return _join(self.root, f'staging-{run_id}')

  def done_marker(self, index: int) -> str:
    return _join(self.chunks, f'c{index:08d}.done')

  def chunk_file(self, index: int, attempt: str, kind: str) -> str:
    return _join(self.chunks, f'c{index:08d}-{attempt}.{kind}')

  def is_done(self, index: int) -> bool:
    return FileSystems.exists(self.done_marker(index))


def new_attempt() -> str:
  return uuid.uuid4().hex[:12]


def write_json(path: str, obj) -> None:
  """Whole or not at all: a local file is renamed into place, a remote
  object is one PUT."""
  data = json.dumps(obj, sort_keys=True).encode('utf-8')
  if '://' in path:
    with FileSystems.create(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      f.write(data)
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp-{uuid.uuid4().hex[:8]}'
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: str):
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return json.loads(f.read().decode('utf-8'))


@dataclasses.dataclass(frozen=True)
class ChunkDone:
  """What a committed chunk holds (its .done marker)."""
  index: int
  attempt: str
  lines: int
  ok: int
  errors: int
  ok_bytes: int
  error_bytes: int
  outcomes: Dict[str, int]
  backends: Dict[str, int]

  def files(self, folder: StateFolder) -> Tuple[Optional[str], Optional[str]]:
    """(result file, error file); None where the chunk wrote no line."""
    return (folder.chunk_file(self.index, self.attempt, 'ok')
            if self.ok else None,
            folder.chunk_file(self.index, self.attempt, 'err')
            if self.errors else None)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, obj: dict) -> 'ChunkDone':
    return cls(**{f.name: obj[f.name] for f in dataclasses.fields(cls)})


def list_names(folder: str) -> Dict[str, int]:
  """{file name: size} directly inside folder (empty if it is missing)."""
  if '://' not in folder:
    try:
      return {e.name: e.stat().st_size for e in os.scandir(folder)
              if e.is_file()}
    except FileNotFoundError:
      return {}
  prefix = folder.rstrip('/') + '/'
  try:
    found = FileSystems.match([prefix + '*'])[0].metadata_list
  except Exception:  # pylint: disable=broad-except
    return {}
  return {m.path[len(prefix):]: m.size_in_bytes for m in found
          if '/' not in m.path[len(prefix):]}


def committed(folder: StateFolder, plan: ListPlan,
              threads: int = 16) -> Dict[int, ChunkDone]:
  """The chunks whose marker reads back whole and whose files are there
  with the sizes it names (a file cut short by a crash is redone)."""
  names = list_names(folder.chunks)
  markers = sorted(n for n in names if n.endswith('.done'))

  def load(name: str) -> Optional[ChunkDone]:
    try:
      done = ChunkDone.from_json(read_json(_join(folder.chunks, name)))
    except Exception:  # pylint: disable=broad-except
      return None
    if not 0 <= done.index < plan.chunks or \
        done.lines != plan.counts[done.index] or \
        done.ok + done.errors != done.lines:
      return None
    for path, size in zip(done.files(folder), (done.ok_bytes,
                                                done.error_bytes)):
      if path is not None and names.get(posixpath.basename(path)) != size:
        return None
    return done

  if not markers:
    return {}
  if threads <= 1:   # a signal handler's: no pool, no lock
    found = [load(name) for name in markers]
    return {d.index: d for d in found if d is not None}
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  with concurrent.futures.ThreadPoolExecutor(
      min(threads, len(markers))) as pool:
    found = list(pool.map(load, markers))
  return {d.index: d for d in found if d is not None}


def chunk_sources(folder: StateFolder, done: Sequence[ChunkDone]
                  ) -> Tuple[List[str], List[str]]:
  """The chunk files to concatenate, in chunk (= input) order."""
  results, errors = [], []
  for chunk in sorted(done, key=lambda d: d.index):
    ok, err = chunk.files(folder)
    if ok:
      results.append(ok)
    if err:
      errors.append(err)
  return results, errors
