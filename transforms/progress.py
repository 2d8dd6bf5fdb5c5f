"""A side channel for the launcher's live view: every worker process writes
what it has done to one small file, <folder>/<worker>.json, and the launcher
sums them (read_all).

Beam's own metrics reach the launcher only when the job ends on some runners
(and a portable runner's in-flight metrics need its job service), while every
worker of every runner can write under the job's state folder. So each worker
process keeps its counts in memory and rewrites its whole file at most once a
period: a file holds totals, never increments, so a lost or late write costs
nothing but freshness, and a reader never needs more than the last version.

A file is replaced whole: locally a temporary file and os.replace, remotely
(a path with '://') one FileSystems.create, whose object appears on close in
one PUT. A reader never sees half a file; read_all still skips any file it
cannot parse (another tool's, a truncated copy).

Worker side: add() is called once per record on the bundle thread, so it
is a dict update in a dict of the calling thread's own (no lock); it writes
only when the period has passed, and never waits for another thread's write. Nothing here imports Beam until a
remote path is written or read.

  {"worker": "host-123-a1b2c3", "host": "host", "pid": 123,
   "phase": "processing", "counts": {"ok": 812, "not_found": 3},
   "first_at": 1700000000.5, "updated_at": 1700000012.1}
"""
import atexit
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import Dict, List, Optional

_log = logging.getLogger(__name__)

SUFFIX = '.json'
# A worker file is a few hundred bytes; anything much larger is not one.
_MAX_FILE = 64 << 10
_REMOTE_TIMEOUT = 10.0


@dataclasses.dataclass
class Snapshot:
  """Every worker file of a folder, summed."""
  counts: Dict[str, int] = dataclasses.field(default_factory=dict)
  done: int = 0
  phases: Dict[str, str] = dataclasses.field(default_factory=dict)
  first_at: Optional[float] = None
  workers: int = 0


def _is_remote(path: str) -> bool:
  return '://' in path


def _join(folder: str, name: str) -> str:
  if _is_remote(folder):
    return folder.rstrip('/') + '/' + name
  return os.path.join(folder, name)


def file_name(worker: str) -> str:
  """A worker's file name: its id with anything odd for a path made '_'."""
  return re.sub(r'[^A-Za-z0-9._-]', '_', worker).lstrip('.') + SUFFIX


class Reporter:
  """One worker process's counts by outcome and its phase, written to
  <folder>/<worker>.json. Thread-safe."""

  def __init__(self, folder: str, period: float = 2.0,
               worker: Optional[str] = None):
    self.folder = folder
    self.period = period
    self.host = socket.gethostname()
    self.pid = os.getpid()
    self.worker = worker or f'{self.host}-{self.pid}-{uuid.uuid4().hex[:6]}'
    self.path = _join(folder, file_name(self.worker))
    self._phase: Optional[str] = None
    self._first_at: Optional[float] = None
    self._due = time.monotonic() + period
    # Each thread counts into a dict of its own, so add() takes no lock (a
    # shared lock makes a convoy of the bundle threads of one process): only
    # its thread writes a dict, and the GIL makes a writer's copy() of it
    # whole. _lock guards the list of those dicts, the phase and first_at;
    # _write_lock orders the writes, so an older state never overwrites a
    # newer one.
    self._local = threading.local()
    self._threads: List[tuple] = []          # (thread, its counts)
    self._ended: Dict[str, int] = {}         # those of threads that ended
    self._lock = threading.Lock()
    self._write_lock = threading.Lock()
    self._written: Optional[tuple] = None   # what the last write held
    self._warned = False
    self._made_folder = False

  def phase(self, text: str) -> None:
    """What the worker is doing ('loading model', 'processing'); written at
    once, since a phase is what the launcher shows while nothing is done."""
    with self._lock:
      self._phase = text
    self.flush()

  def add(self, outcome: str, n: int = 1) -> None:
    """n records ended as outcome ('ok' or an error kind)."""
    try:
      counts = self._local.counts
    except AttributeError:
      counts = self._thread_counts()
    counts[outcome] = counts.get(outcome, 0) + n
    if self._first_at is None:
      self._started()
    if time.monotonic() >= self._due:
      # Another thread writing now will be followed by this state soon
      # enough: a record never waits for a write that is not its own.
      if self._write_lock.acquire(blocking=False):
        try:
          self._write()
        finally:
          self._write_lock.release()

  def _thread_counts(self) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    with self._lock:
      self._threads.append((threading.current_thread(), counts))
    self._local.counts = counts
    return counts

  def _started(self) -> None:
    with self._lock:
      if self._first_at is None:
        self._first_at = time.time()

  def flush(self) -> None:
    """Writes the file now (if anything changed since the last write)."""
    with self._write_lock:
      self._write()

  def close(self) -> None:
    """The final write. The reporter stays usable: another stage of the
    same process may still be adding."""
    self.flush()

  def state(self) -> dict:
    """The file's content as of now."""
    with self._lock:
      return self._state()

  def _state(self) -> dict:
    """Under _lock."""
    # A pool's threads come and go: an ended one's counts are folded in
    # once, so the list stays as long as the live threads.
    live = []
    for thread, own in self._threads:
      if thread.is_alive():
        live.append((thread, own))
      else:
        _fold(self._ended, own)
    self._threads = live
    counts = dict(self._ended)
    for _, own in live:
      _fold(counts, own.copy())
    return {'worker': self.worker, 'host': self.host, 'pid': self.pid,
            'phase': self._phase, 'counts': counts,
            'first_at': self._first_at, 'updated_at': time.time()}

  def _write(self) -> None:
    """Under _write_lock."""
    with self._lock:
      self._due = time.monotonic() + self.period
      state = self._state()
    held = (state['phase'], state['first_at'], sorted(state['counts'].items()))
    if held == self._written:
      return
    data = json.dumps(state, separators=(',', ':')).encode()
    try:
      if _is_remote(self.path):
        _write_remote(self.path, data)
      else:
        self._write_local(data)
    except Exception as e:  # pylint: disable=broad-except
      # Progress is a view: a failed write must never fail a record. The
      # next period tries again with the newer totals.
      if not self._warned:
        self._warned = True
        _log.warning('Could not write progress to %s: %s', self.path, e)
      return
    self._written = held

  def _write_local(self, data: bytes) -> None:
    if not self._made_folder:
      os.makedirs(self.folder, exist_ok=True)
      self._made_folder = True
    # A dot name without the suffix: read_all never takes it for a worker.
    tmp = _join(self.folder, '.' + file_name(self.worker) + '.tmp')
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, self.path)


def _fold(into: Dict[str, int], counts: Dict[str, int]) -> None:
  for outcome, n in counts.items():
    into[outcome] = into.get(outcome, 0) + n


def _write_remote(path: str, data: bytes) -> None:
  from apache_beam.io.filesystem import CompressionTypes
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.create(path, mime_type='application/json',
                          compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(data)


_registry: Dict[str, Reporter] = {}
_registry_lock = threading.Lock()


def reporter(folder: str) -> Reporter:
  """The process's one Reporter for folder: every DoFn of a worker process
  and its model handler add to the same file."""
  with _registry_lock:
    found = _registry.get(folder)
    if found is None or found.pid != os.getpid():
      found = _registry[folder] = Reporter(folder)
    return found


def _after_fork() -> None:
  # A forked child is another worker: its own ids, and no lock a parent's
  # thread might have held at the fork.
  global _registry_lock  # pylint: disable=global-statement
  _registry_lock = threading.Lock()
  _registry.clear()


def _close_all() -> None:
  # The counts since the last period would otherwise be lost when a worker
  # process ends without its DoFns' teardown.
  for rep in list(_registry.values()):
    if rep.pid == os.getpid():
      rep.close()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_close_all)


def _parse(data: bytes) -> Optional[dict]:
  """A worker file's content, or None when it is not one."""
  try:
    state = json.loads(data)
  except ValueError:
    return None
  if not isinstance(state, dict) or not isinstance(state.get('worker'), str):
    return None
  counts = state.get('counts')
  if not isinstance(counts, dict) or not all(
      isinstance(k, str) and type(v) is int and v >= 0   # pylint: disable=unidiomatic-typecheck
      for k, v in counts.items()):
    return None
  first_at = state.get('first_at')
  if first_at is not None and not isinstance(first_at, (int, float)):
    return None
  phase = state.get('phase')
  if phase is not None and not isinstance(phase, str):
    return None
  return state


def _names(folder: str) -> List[str]:
  """The paths of the folder's candidate worker files."""
  if _is_remote(folder):
    from apache_beam.io.filesystems import FileSystems
    match = FileSystems.match([_join(folder, '*' + SUFFIX)])[0]
    return sorted(m.path for m in match.metadata_list)
  try:
    names = os.listdir(folder)
  except FileNotFoundError:
    return []
  return [os.path.join(folder, n) for n in sorted(names)
          if n.endswith(SUFFIX) and not n.startswith('.')]


def _read(path: str) -> Optional[bytes]:
  try:
    if _is_remote(path):
      from ev_predict.transforms import storage
      return storage.for_path(path).read_object(path, _MAX_FILE,
                                                timeout=_REMOTE_TIMEOUT)
    with open(path, 'rb') as f:
      return f.read(_MAX_FILE + 1)
  except Exception:  # pylint: disable=broad-except
    # Gone between the listing and the read, too large, unreadable: the
    # next read sees it again or never.
    return None


def _states(folder: str) -> List[dict]:
  states = []
  for path in _names(folder):
    data = _read(path)
    state = _parse(data) if data is not None and len(data) <= _MAX_FILE \
        else None
    if state is not None:
      states.append((path, state))
  return states


def read_all(folder: str) -> Snapshot:
  """Every readable worker file under folder, summed. A folder that does not
  exist (no worker wrote yet) is an empty Snapshot; a failed listing of a
  remote folder raises (the caller keeps its last snapshot)."""
  snap = Snapshot()
  for _, state in _states(folder):
    snap.workers += 1
    for outcome, n in state['counts'].items():
      snap.counts[outcome] = snap.counts.get(outcome, 0) + n
      snap.done += n
    if state.get('phase') is not None:
      snap.phases[state['worker']] = state['phase']
    first = state.get('first_at')
    if first is not None and (snap.first_at is None or first < snap.first_at):
      snap.first_at = float(first)
  return snap


def clear(folder: str) -> int:
  """Deletes the worker files of an earlier run under folder (only files that
  parse as worker files: anything else there is left alone); returns how
  many. For the launcher, before a run's workers start: a resumed run's
  counts must not include the last run's."""
  removed = 0
  for path, _ in _states(folder):
    if _is_remote(path):
      from ev_predict.transforms import storage
      storage.for_path(path).delete_object(path)
    else:
      os.remove(path)
    removed += 1
  return removed
