"""Write: records -> sharded text -> one result file and one error file.

Shards go to a private temporary folder beside the output; a final step, which
runs once after every shard is written, concatenates them into staging files
(``<target>.tmp-<run>``) and writes the run summary beside them, counting the
lines the staged files really hold. The launcher then commits the three files
together (commit()): all new or, on any failure, all old. A job only ever
deletes or replaces its own files: its three targets (by rename, never by a
recursive delete) and the staging, backup and shard names of its own run.
"""
import dataclasses
import glob
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

from ev_predict.transforms import storage
from ev_predict.transforms.format import Formatter
from ev_predict.transforms.metrics import OutcomeMetrics
from ev_predict.transforms.record import Record

_LOG = logging.getLogger(__name__)
_COPY_CHUNK = 8 << 20
# Inside a run's shard folder: who runs it (see launcher_identity()).
MARKER = 'launcher.json'
_RUN_ID = re.compile(r'^\d{8}-\d{6}-[0-9a-f]{8}$')


@dataclasses.dataclass(frozen=True)
class OutputPaths:
  result: str
  errors: str
  summary: str
  temp_dir: str      # shards live here until the final step
  run_id: str = ''

  @classmethod
  def for_run(cls, result: str, errors: Optional[str], run_id: str):
    return cls(result=result, errors=errors or result + '.errors',
               summary=result + '.summary.json',
               temp_dir=f'{result}.shards-{run_id}', run_id=run_id)

  @property
  def targets(self) -> Tuple[str, str, str]:
    return self.result, self.errors, self.summary

  def staging(self, target: str) -> str:
    return f'{target}.tmp-{self.run_id}'

  def backup(self, target: str) -> str:
    return f'{target}.bak-{self.run_id}'

  @property
  def marker(self) -> str:
    return f'{self.temp_dir}/{MARKER}'

  @property
  def journal(self) -> str:
    """Exists while a commit is under way: tells a later run that finds
    this run dead whether its targets may already have been swapped."""
    return f'{self.temp_dir}/commit'


def _create(path: str):
  return FileSystems.create(path,
                            compression_type=CompressionTypes.UNCOMPRESSED)


def _open(path: str):
  return FileSystems.open(path,
                          compression_type=CompressionTypes.UNCOMPRESSED)


def concatenate(shards: Sequence[str], target: str) -> None:
  """Concatenates shards (in name order) into target, a new file."""
  storage.for_path(target).concatenate(sorted(shards), target)


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


def write_marker(paths: OutputPaths, who: dict) -> None:
  if '://' not in paths.temp_dir:
    os.makedirs(paths.temp_dir, exist_ok=True)
  with _create(paths.marker) as f:
    f.write(json.dumps(dict(who, run_id=paths.run_id)).encode('utf-8'))


def remove_leftovers(paths: OutputPaths) -> None:
  """A run's shard folder and staged files; where it died inside a commit,
  its old targets are restored first."""
  try:
    roll_back(paths)
  except Exception:  # pylint: disable=broad-except
    _LOG.warning('ev-predict: could not roll back run %s', paths.run_id)
    return  # keep the journal and backups for a later run to finish
  # Workers of an interrupted run may still be closing a shard: retry.
  for _ in range(3):
    try:
      if '://' in paths.temp_dir or _exists(paths.temp_dir):
        FileSystems.delete([paths.temp_dir])
      return
    except Exception:  # pylint: disable=broad-except
      time.sleep(0.2)
  _LOG.warning('ev-predict: could not remove %s', paths.temp_dir)


def _shard_markers(result: str) -> List[str]:
  if '://' not in result:
    return glob.glob(glob.escape(result) + '.shards-*/' + MARKER)
  if glob.has_magic(result):
    return []  # a listing pattern could name other files
  try:
    found = FileSystems.match([f'{result}.shards-*/{MARKER}'])
  except Exception:  # pylint: disable=broad-except
    return []
  return [m.path for m in found[0].metadata_list]


def remove_stale_runs(paths: OutputPaths) -> List[str]:
  """Shard folders (and staged files) of earlier runs with the same result
  path whose launcher is dead; returns their run ids. A folder without our
  marker, or whose launcher lives or runs on another machine, is left."""
  removed = []
  for marker in _shard_markers(paths.result):
    folder = marker[:-len(MARKER) - 1]
    run_id = folder[len(paths.result) + len('.shards-'):]
    if not _RUN_ID.match(run_id) or run_id == paths.run_id:
      continue
    try:
      with _open(marker) as f:
        who = json.loads(f.read().decode('utf-8'))
    except Exception:  # pylint: disable=broad-except
      continue
    if who.get('run_id') != run_id or is_alive(who) is not False:
      continue
    stale = dataclasses.replace(paths, temp_dir=folder, run_id=run_id)
    remove_leftovers(stale)
    removed.append(run_id)
    _LOG.warning('ev-predict: removed leftovers of dead run %s', run_id)
  return removed


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
              written: Optional[Tuple[int, int]] = None) -> dict:
  """written: (result lines, error lines) as counted in the files."""
  succeeded = counts.get('ok', 0)
  failed_by_kind = {k: v for k, v in sorted(counts.items()) if k != 'ok'}
  failed = sum(failed_by_kind.values())
  records = succeeded + failed
  wall = max(finished_at - started_at, 1e-9)
  return {
      'lines_read': lines_read,
      'records': records,
      'succeeded': succeeded,
      'failed': failed,
      'failed_by_kind': failed_by_kind,
      'error_ratio': round(failed / records, 6) if records else 0.0,
      'accounting_ok': records == lines_read and (
          written is None or tuple(written) == (succeeded, failed)),
      'wall_seconds': round(wall, 3),
      'images_per_second': round(succeeded / wall, 2),
  }


class _FormatFn(beam.DoFn):
  """Formats each record and reports progress from the worker."""

  def __init__(self, labels, progress_every: float,
               launcher: Optional[dict] = None):
    self._labels = labels
    self._progress_every = progress_every
    self._launcher = launcher

  def setup(self):
    watch_launcher(self._launcher)
    self._format = Formatter(self._labels)
    self._metrics = OutcomeMetrics()
    self._seen = {'ok': 0, 'failed': 0}
    self._started = self._last = time.monotonic()

  def process(self, record: Record):
    outcome, line = self._format(record)
    self._metrics.outcome(outcome)
    self._seen['ok' if outcome == 'ok' else 'failed'] += 1
    now = time.monotonic()
    if self._progress_every and now - self._last >= self._progress_every:
      self._last = now
      done = self._seen['ok'] + self._seen['failed']
      sys.stderr.write(
          f'ev-predict: progress: {done} records in this worker '
          f'({self._seen["failed"]} failed), '
          f'{done / (now - self._started):.1f}/s\n')
    yield outcome, line


class WriteOutputs(beam.PTransform):
  """PCollection[Record] -> result, error and summary files.

  lines_read is a singleton PCollection with the count of non-blank input
  lines, checked against the records that reach the sink."""

  def __init__(self, paths: OutputPaths, labels: Optional[List[str]],
               lines_read, run_id: str, started_at: float,
               extra_summary: Optional[dict] = None,
               progress_every: float = 30.0,
               launcher: Optional[dict] = None):
    super().__init__()
    self._paths = paths
    self._labels = labels
    self._lines_read = lines_read
    self._run_id = run_id
    self._started_at = started_at
    self._extra = extra_summary or {}
    self._progress_every = progress_every
    self._launcher = launcher

  def expand(self, records):
    paths, run_id = self._paths, self._run_id
    lines = records | 'Format' >> beam.ParDo(
        _FormatFn(self._labels, self._progress_every, self._launcher))
    results = (lines
               | 'SelectResults' >> beam.Filter(lambda kv: kv[0] == 'ok')
               | 'ResultLines' >> beam.Values())
    errors = (lines
              | 'SelectErrors' >> beam.Filter(lambda kv: kv[0] != 'ok')
              | 'ErrorLines' >> beam.Values())
    result_shards = results | 'WriteResultShards' >> beam.io.WriteToText(
        f'{paths.temp_dir}/results')
    error_shards = errors | 'WriteErrorShards' >> beam.io.WriteToText(
        f'{paths.temp_dir}/errors')
    counts = (lines
              | 'Outcomes' >> beam.Keys()
              | 'CountOutcomes' >> beam.combiners.Count.PerElement()
              | 'OutcomeTable' >> beam.combiners.ToDict())
    # Which backend classified how many images ('auto' decides per worker):
    # only the model handler sets it, on the records it classified.
    backends = (records
                | 'Backends' >> beam.FlatMap(
                    lambda r: [r.backend] if r.backend else [])
                | 'CountBackends' >> beam.combiners.Count.PerElement()
                | 'BackendTable' >> beam.combiners.ToDict())
    return (
        records.pipeline
        | 'FinalizeTrigger' >> beam.Create([None])
        | 'Finalize' >> beam.Map(
            _finalize, paths, run_id, self._started_at, self._extra,
            beam.pvalue.AsList(result_shards),
            beam.pvalue.AsList(error_shards),
            beam.pvalue.AsSingleton(counts),
            beam.pvalue.AsSingleton(self._lines_read),
            beam.pvalue.AsSingleton(backends)))


def _finalize(_, paths: OutputPaths, run_id: str, started_at: float,
              extra: dict, result_shards: List[str], error_shards: List[str],
              counts: Dict[str, int], lines_read: int,
              backends: Dict[str, int]) -> dict:
  """Stages the three files; the launcher commits them (commit())."""
  del run_id  # in paths
  written = {}
  for shards, target in ((result_shards, paths.result),
                         (error_shards, paths.errors)):
    concatenate(shards, paths.staging(target))
    written[target] = count_lines(paths.staging(target))
  summary = summarize(counts, lines_read, started_at, time.time(),
                      (written[paths.result][0], written[paths.errors][0]))
  summary.update(extra)
  summary.update(result_file=paths.result, error_file=paths.errors,
                 result_lines=written[paths.result][0],
                 error_lines=written[paths.errors][0],
                 result_bytes=written[paths.result][1],
                 error_bytes=written[paths.errors][1],
                 backends=backends)
  if not summary['accounting_ok']:
    _LOG.error('ev-predict: %d input lines but %d records (%d result and %d '
               'error lines written)', lines_read, summary['records'],
               summary['result_lines'], summary['error_lines'])
  with _create(paths.staging(paths.summary)) as f:
    f.write(json.dumps(summary, indent=2, sort_keys=True).encode('utf-8'))
  # The shards are copied; the folder (with the marker) goes after commit.
  for shard in list(result_shards) + list(error_shards):
    _quietly('remove', _delete_file, shard)
  return summary
