"""Write: records -> committed chunks -> one result file and one error file.

Each chunk's records (transforms/state.py) are formatted and written, in input
order, to files of their own in the job's state folder; once the chunk is
whole its .done marker commits it (CommitChunks, on the workers). The launcher
then concatenates the chunks' files in chunk order into staging files
(``<target>.tmp-<run>``) beside the targets, with the run summary
(stage_outputs()), and commits the three files together (commit()): all new
or, on any failure, all old. A job only ever deletes or replaces its own
files: its three targets (by rename, never by a recursive delete), the
staging and backup names of its own run, and its state folder's files.
"""
import dataclasses
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ev_predict.transforms import progress, storage
from ev_predict.transforms import state as state_lib
from ev_predict.transforms.format import Formatter
from ev_predict.transforms.metrics import OutcomeMetrics
from ev_predict.transforms.record import Record

_LOG = logging.getLogger(__name__)
_COPY_CHUNK = 8 << 20
_RUN_ID = re.compile(r'^\d{8}-\d{6}-[0-9a-f]{8}$')


@dataclasses.dataclass(frozen=True)
class OutputPaths:
  result: str
  errors: str
  summary: str
  state: str         # the resume state folder (transforms/state.py)
  run_id: str = ''

  @classmethod
  def for_run(cls, result: str, errors: Optional[str], run_id: str):
    return cls(result=result, errors=errors or result + '.errors',
               summary=result + '.summary.json',
               state=state_lib.state_folder(result), run_id=run_id)

  @property
  def targets(self) -> Tuple[str, str, str]:
    return self.result, self.errors, self.summary

  def staging(self, target: str) -> str:
    return f'{target}.tmp-{self.run_id}'

  def backup(self, target: str) -> str:
    return f'{target}.bak-{self.run_id}'

  @property
  def folder(self) -> state_lib.StateFolder:
    return state_lib.StateFolder(self.state)

  @property
  def journal(self) -> str:
    """Exists while a commit is under way: tells a later run that finds
    this run dead whether its targets may already have been swapped."""
    return self.folder.journal(self.run_id)

  @property
  def staging_marker(self) -> str:
    """Exists while this run writes its staging files: a later run that
    finds it removes them (they are this run's, by name)."""
    return self.folder.staging_marker(self.run_id)


def _create(path: str):
  return FileSystems.create(path,
                            compression_type=CompressionTypes.UNCOMPRESSED)


def _open(path: str):
  return FileSystems.open(path,
                          compression_type=CompressionTypes.UNCOMPRESSED)


def count_lines(path: str) -> Tuple[int, int]:
  """(lines, bytes) of a file, streamed."""
  lines = size = 0
  last = b'\n'
  with _open(path) as f:
    while True:
      chunk = f.read(_COPY_CHUNK)
      if not chunk:
        break
      lines += chunk.count(b'\n')
      size += len(chunk)
      last = chunk[-1:]
  return lines + (last != b'\n'), size


def file_size(path: str) -> int:
  return FileSystems.get_filesystem(path).size(path)


def _exists(path: str) -> bool:
  return FileSystems.exists(path)


def _move(src: str, dest: str) -> None:
  """A plain rename that replaces a file (os.rename; OSS: copy_object
  overwrites, then the source object is deleted). Never a delete of dest:
  were dest a directory, the rename fails instead."""
  FileSystems.rename([src], [dest])


def _delete_file(path: str) -> None:
  """Deletes one file of ours; never a directory or a prefix."""
  storage.for_path(path).delete_object(path)


def _quietly(what: str, fn, *args) -> bool:
  try:
    fn(*args)
    return True
  except Exception:  # pylint: disable=broad-except
    _LOG.warning('ev-predict: could not %s %s', what, args[0])
    return False


def commit(paths: OutputPaths) -> None:
  """Moves the three staged files over the targets together.

  The old files are first moved aside to backups, then the new ones in, then
  the backups deleted. Any failure on the way restores the old files (and
  removes the staged ones) before it is raised."""
  for target in paths.targets:
    if not _exists(paths.staging(target)):
      raise IOError(f'staged file {paths.staging(target)} is missing')
  with _create(paths.journal) as f:
    f.write(b'committing\n')
  try:
    for target in paths.targets:
      if _exists(target):
        _move(target, paths.backup(target))
    for target in paths.targets:
      _move(paths.staging(target), target)
  except BaseException:
    roll_back(paths)
    raise
  for target in paths.targets:
    if _exists(paths.backup(target)):
      _quietly('remove backup', _delete_file, paths.backup(target))
  _quietly('remove', _delete_file, paths.journal)
  if _exists(paths.staging_marker):
    _quietly('remove', _delete_file, paths.staging_marker)


def roll_back(paths: OutputPaths) -> None:
  """Undoes whatever a run of these paths left half done: its staged files
  are removed and, if it died inside commit(), the old targets restored
  (or, where the commit had finished, only its backups removed)."""
  committing = _exists(paths.journal)
  staged = [t for t in paths.targets if _exists(paths.staging(t))]
  if committing and not staged:
    for target in paths.targets:  # every new file is in: finish the commit
      if _exists(paths.backup(target)):
        _quietly('remove backup', _delete_file, paths.backup(target))
    return
  for target in paths.targets:
    if committing and _exists(paths.backup(target)):
      _move(paths.backup(target), target)
    elif committing and target not in staged and _exists(target):
      # Moved in by this run where no old file was (old ones were all
      # backed up before the first new one moved in).
      _delete_file(target)
    if target in staged:
      _quietly('remove', _delete_file, paths.staging(target))


def _start_time(pid: int) -> Optional[int]:
  """A process's start time (clock ticks since boot), None if it is gone."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      fields = f.read().rsplit(b')', 1)[1].split()
  except OSError:
    return None
  # A zombie has finished; its pid is not a live launcher.
  return None if fields[0] == b'Z' else int(fields[19])


def _boot_id() -> str:
  try:
    with open('/proc/sys/kernel/random/boot_id') as f:
      return f.read().strip()
  except OSError:
    return ''


def launcher_identity() -> dict:
  """Names this process so that others can tell whether it still runs:
  a pid alone may have been reused."""
  return {'host': socket.gethostname(), 'boot_id': _boot_id(),
          'pid': os.getpid(), 'start': _start_time(os.getpid())}


def is_alive(who: dict) -> Optional[bool]:
  """True/False for a launcher on this machine; None when it is elsewhere
  (nothing can be said about it from here)."""
  if who.get('host') != socket.gethostname():
    return None
  if who.get('boot_id') != _boot_id():
    return False
  start = _start_time(int(who.get('pid', 0)))
  return start is not None and start == who.get('start')


def remove_staged(paths: OutputPaths) -> None:
  """This run's staged files; where it died inside a commit, its old
  targets restored first. The state folder stays: it is what a rerun
  resumes from."""
  try:
    roll_back(paths)
    if _exists(paths.staging_marker):
      _delete_file(paths.staging_marker)
  except Exception:  # pylint: disable=broad-except
    _LOG.warning('ev-predict: could not roll back run %s', paths.run_id)


def finish_dead_commits(paths: OutputPaths) -> List[str]:
  """Runs of this output that died while staging or committing (their
  marker is in the state folder): staged files removed, a half-done swap
  rolled back (or finished, where every new file was in). Returns their
  run ids."""
  found = []
  for name in sorted(state_lib.list_names(paths.state)):
    kind, _, run_id = name.partition('-')
    if kind not in ('commit', 'staging') or not _RUN_ID.match(run_id) or \
        run_id == paths.run_id:
      continue
    dead = dataclasses.replace(paths, run_id=run_id)
    try:
      if kind == 'commit':
        roll_back(dead)
        _delete_file(dead.journal)
      else:
        for target in dead.targets:
          if not _exists(dead.journal) and _exists(dead.staging(target)):
            _delete_file(dead.staging(target))
        _delete_file(dead.staging_marker)
    except Exception:  # pylint: disable=broad-except
      _LOG.warning('ev-predict: could not clean up after run %s', run_id)
      continue
    if run_id not in found:
      found.append(run_id)
  return found


_watching = set()
_watch_lock = threading.Lock()


def watch_launcher(who: Optional[dict], period: float = 1.0) -> None:
  """In a local worker process: exit soon after the launcher is gone (a
  SIGKILLed launcher cannot stop its workers itself)."""
  if not who or who.get('pid') == os.getpid() or is_alive(who) is None:
    return
  key = (who.get('pid'), who.get('start'))
  with _watch_lock:
    if key in _watching:
      return
    _watching.add(key)

  def watch():
    while is_alive(who):
      time.sleep(period)
    sys.stderr.write(f'ev-predict: launcher {who.get("pid")} is gone; '
                     'worker exiting\n')
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name='ev-predict-launcher-watch',
                   daemon=True).start()


def summarize(counts: Dict[str, int], lines_read: int, started_at: float,
              finished_at: float,
              written: Optional[Tuple[int, int]] = None,
              processing_started_at: Optional[float] = None,
              resumed: Optional[Dict[str, int]] = None) -> dict:
  """written: (result lines, error lines) the staged files hold; started_at:
  when the user started the command; resumed: the counts (of counts)
  committed by earlier runs, which this run did not process."""
  succeeded = counts.get('ok', 0)
  failed_by_kind = {k: v for k, v in sorted(counts.items()) if k != 'ok'}
  failed = sum(failed_by_kind.values())
  records = succeeded + failed
  resumed = resumed or {}
  resumed_lines = sum(resumed.values())
  succeeded_now = succeeded - resumed.get('ok', 0)
  wall = max(finished_at - started_at, 1e-9)
  processing = max(finished_at - (processing_started_at or started_at), 1e-9)
  return {
      'lines_read': lines_read,
      'records': records,
      'succeeded': succeeded,
      'failed': failed,
      'failed_by_kind': failed_by_kind,
      'error_ratio': round(failed / records, 6) if records else 0.0,
      'accounting_ok': records == lines_read and (
          written is None or tuple(written) == (succeeded, failed)),
      'resumed_lines': resumed_lines,
      'processed_lines': records - resumed_lines,
      # The whole job as its user waited for it (start-up included), and
      # the part spent on images; this run's images over each.
      'wall_seconds': round(wall, 3),
      'processing_seconds': round(min(processing, wall), 3),
      'images_per_second': round(succeeded_now / wall, 2),
      'processing_images_per_second': round(
          succeeded_now / min(processing, wall), 2),
  }


class _OpenChunk:
  """A chunk being written: lines go to its files in input order as soon as
  every earlier one of the chunk is written; later ones wait in pending (a
  failed record overtakes the good ones in flight, a few at most)."""

  def __init__(self, folder: state_lib.StateFolder, index: int, lines: int):
    self.folder = folder
    self.index = index
    self.lines = lines
    self.attempt = state_lib.new_attempt()
    self.next = 0
    self.pending: Dict[int, Tuple[str, bytes, Optional[str]]] = {}
    self.files = {}
    self.sizes = {'ok': 0, 'err': 0}
    self.written = {'ok': 0, 'err': 0}
    self.outcomes: Dict[str, int] = {}
    self.backends: Dict[str, int] = {}

  def add(self, index: int, outcome: str, line: bytes,
          backend: Optional[str]) -> bool:
    """True once every line of the chunk is written."""
    if not self.next <= index < self.lines or index in self.pending:
      raise RuntimeError(f'chunk {self.index}: record {index} arrived twice '
                         f'or out of range ({self.lines} lines)')
    self.pending[index] = (outcome, line, backend)
    while self.next in self.pending:
      self._write(*self.pending.pop(self.next))
      self.next += 1
    return self.next == self.lines

  def _write(self, outcome: str, line: bytes, backend: Optional[str]):
    kind = 'ok' if outcome == 'ok' else 'err'
    f = self.files.get(kind)
    if f is None:
      f = self.files[kind] = _create_new(
          self.folder.chunk_file(self.index, self.attempt, kind))
    f.write(line + b'\n')
    self.sizes[kind] += len(line) + 1
    self.written[kind] += 1
    self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
    if backend:
      self.backends[backend] = self.backends.get(backend, 0) + 1

  def commit(self) -> state_lib.ChunkDone:
    """Closes the files (durably), then writes the marker that commits
    them: a crash before it leaves the chunk to be redone whole."""
    for f in self.files.values():
      _close_durably(f)
    done = state_lib.ChunkDone(
        index=self.index, attempt=self.attempt, lines=self.lines,
        ok=self.written['ok'], errors=self.written['err'],
        ok_bytes=self.sizes['ok'], error_bytes=self.sizes['err'],
        outcomes=self.outcomes, backends=self.backends)
    state_lib.write_json(self.folder.done_marker(self.index), done.to_json())
    return done

  def abandon(self) -> None:
    for f in self.files.values():
      _quietly('close', lambda f: f.close(), f)


def _create_new(path: str):
  if '://' in path:
    return _create(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return open(path, 'wb')  # pylint: disable=consider-using-with


def _close_durably(f) -> None:
  """A local file reaches the disk before its marker does (a machine that
  loses power keeps no marker for a file it lost); a remote one is whole
  once closed."""
  if isinstance(f, io.BufferedWriter):
    f.flush()
    os.fsync(f.fileno())
  f.close()


class CommitChunks(beam.DoFn):
  """Formats each record and commits each chunk once all its lines are in.

  Every record of a chunk reaches this DoFn in the bundle that read the
  chunk (the stages between are fused and flush at the bundle's end), so a
  chunk still open when the bundle finishes lost records: the bundle fails
  (and is retried by the runner) rather than commit it short."""

  def __init__(self, labels, counts: Sequence[int], folder: str,
               launcher: Optional[dict] = None, top_k: Optional[int] = None,
               thresholds=None):
    self._labels = labels
    self._top_k = top_k
    self._thresholds = thresholds
    self._counts = tuple(counts)
    self._folder = folder
    self._launcher = launcher

  def setup(self):
    watch_launcher(self._launcher)
    self._format = Formatter(self._labels, self._top_k, self._thresholds)
    self._metrics = OutcomeMetrics()
    self._state = state_lib.StateFolder(self._folder)
    self._progress = progress.reporter(self._state.progress)
    self._open: Dict[int, _OpenChunk] = {}

  def start_bundle(self):
    self._drop_open()

  def process(self, record: Record):
    outcome, line = self._format(record)
    self._metrics.outcome(outcome)
    # Counted when formatted, not when its chunk commits: the live status
    # moves with every image (a resumed run recounts what it redoes).
    self._progress.add(outcome)
    chunk = self._open.get(record.chunk)
    if chunk is None:
      chunk = self._open[record.chunk] = _OpenChunk(
          self._state, record.chunk, self._counts[record.chunk])
    backend = record.backend if outcome == 'ok' else None
    if chunk.add(record.index, outcome, line, backend):
      del self._open[record.chunk]
      yield chunk.commit().index

  def finish_bundle(self):
    if self._open:
      short = {i: c.next + len(c.pending) for i, c in self._open.items()}
      self._drop_open()
      raise RuntimeError(
          'records were lost before the sink: ' + ', '.join(
              f'chunk {i} got {n} of {self._counts[i]}'
              for i, n in sorted(short.items())))
    self._progress.flush()

  def teardown(self):
    self._drop_open()
    progress_ = getattr(self, '_progress', None)
    if progress_ is not None:
      progress_.close()

  def _drop_open(self):
    for chunk in getattr(self, '_open', {}).values():
      chunk.abandon()
    self._open = {}


def stage_outputs(paths: OutputPaths, plan: state_lib.ListPlan,
                  done: Dict[int, state_lib.ChunkDone], started_at: float,
                  processing_started_at: Optional[float],
                  resumed: Dict[str, int], extra: dict) -> dict:
  """Concatenates the committed chunks in input order into the staging
  files and writes the summary beside them; the launcher commits the three
  (commit()). Returns the summary."""
  results, errors = state_lib.chunk_sources(paths.folder, done.values())
  with _create(paths.staging_marker) as f:
    f.write(b'staging\n')
  concatenate_in_order(results, paths.staging(paths.result))
  concatenate_in_order(errors, paths.staging(paths.errors))
  chunks = list(done.values())
  counts: Dict[str, int] = {}
  backends: Dict[str, int] = {}
  for chunk in chunks:
    for table, add in ((counts, chunk.outcomes), (backends, chunk.backends)):
      for k, v in add.items():
        table[k] = table.get(k, 0) + v
  lines = (sum(c.ok for c in chunks), sum(c.errors for c in chunks))
  sizes = (sum(c.ok_bytes for c in chunks), sum(c.error_bytes for c in chunks))
  staged = (file_size(paths.staging(paths.result)),
            file_size(paths.staging(paths.errors)))
  summary = summarize(counts, plan.total, started_at, time.time(),
                      lines if staged == sizes else (-1, -1),
                      processing_started_at, resumed)
  summary.update(extra)
  summary.update(result_file=paths.result, error_file=paths.errors,
                 result_lines=lines[0], error_lines=lines[1],
                 result_bytes=staged[0], error_bytes=staged[1],
                 backends=dict(sorted(backends.items())))
  if not summary['accounting_ok']:
    _LOG.error('ev-predict: %d input lines but %d records (%d result and %d '
               'error lines; %s bytes staged, %s committed)', plan.total,
               summary['records'], lines[0], lines[1], staged, sizes)
  write_summary(paths.staging(paths.summary), summary)
  return summary


def write_summary(path: str, summary: dict) -> None:
  with _create(path) as f:
    f.write(json.dumps(summary, indent=2, sort_keys=True).encode('utf-8'))


def delete_file(path: str) -> None:
  """Deletes one file of ours (a staged one); never a directory."""
  _delete_file(path)


def concatenate_in_order(sources: Sequence[str], target: str) -> None:
  """target (a new file) = sources in the order given."""
  storage.for_path(target).concatenate(list(sources), target)
