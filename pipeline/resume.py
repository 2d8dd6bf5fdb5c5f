"""Whether a job continues where an earlier run of it stopped.

A job's state folder (transforms/state.py) holds its key: the file list's
identity (path, size, modification time), the model's (its files' names,
sizes and times) and every parameter that can change a line's outcome (the
parameter table's `results` column). A rerun with the same key continues: the
chunks already committed are not read, fetched or classified again. Any other
key starts fresh, and says why in one line. -Dresume=false starts fresh too.

Only a folder holding our manifest is ever removed, and only the names we
write in it; another live launcher's folder is refused (exit 2).
"""
import dataclasses
import logging
import os
import re
import threading
import time
from typing import Dict, List, Optional

from apache_beam.io.filesystems import FileSystems

from ev_predict.pipeline import parameters
from ev_predict.pipeline.commandline import UsageError
from ev_predict.transforms import state as state_lib
from ev_predict.transforms import write

_LOG = logging.getLogger('ev_predict')

# Names inside a state folder that are ours to delete (relative paths).
_OURS = re.compile(
    r'^(manifest\.json|plan\.json|launcher\.json|(commit|staging)-[\w-]+'
    r'|chunks/c\d{8}(\.done|-[0-9a-f]{12}\.(ok|err))'
    r'|progress/[^/]+|table/list\.jsonl'
    r'|table/lines(\.errors|\.summary\.json)?\.tmp-\d{8}-\d{6}-[0-9a-f]{8})'
    r'(\.tmp-[0-9a-f]{8})?$')
# A live launcher rewrites its launcher.json this often; one on another
# machine (which cannot be asked whether it lives) counts as live while its
# file is younger than _STALE.
HEARTBEAT = 60.0
_STALE = 5 * HEARTBEAT


@dataclasses.dataclass(frozen=True)
class Resumption:
  folder: state_lib.StateFolder
  plan: state_lib.ListPlan
  done: Dict[int, state_lib.ChunkDone]   # committed before this run
  fresh: Optional[str] = None            # why earlier state was dropped
  list_identity: Optional[dict] = None   # the list's size and mtime

  @property
  def todo(self) -> List[int]:
    return [i for i in range(self.plan.chunks)
            if i not in self.done and self.plan.counts[i]]

  @property
  def resumed_lines(self) -> int:
    return sum(d.lines for d in self.done.values())

  def resumed_counts(self) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for chunk in self.done.values():
      for k, v in chunk.outcomes.items():
        counts[k] = counts.get(k, 0) + v
    return counts


def job_key(values, batch: int, table=None, resolved=None) -> dict:
  """What a run's results depend on, as text (compared field by field).
  The batch size is in it though -Dbatch_size is not a results parameter:
  an image's last bits depend on the batch it is classified in, and the
  default batch follows the cores per worker. A table job's list is its
  table files (the list made from them lives in the state folder)."""
  return {
      'batch': batch,
      'format': state_lib.FORMAT,
      'list': {'files': [dict(_identity(f), path=f) for f in table.files]}
              if table else _identity(values.input_oss_file),
      'input_table': values.input_table,
      'model': _model_identity(values.model_path),
      'parameters': {p.name: p.text(getattr(values, p.name))
                     for p in parameters.TABLE if p.results and
                     p.name not in ('input_oss_file', 'input_table',
                                    'model_path')},
      'input_oss_file': values.input_oss_file,
      'model_path': values.model_path,
      # What the label map and threshold file said when read: an edited
      # file is another job though its name is the same.
      'resolved': resolved or {},
  }


def _identity(path: str) -> dict:
  meta = FileSystems.match([path])[0].metadata_list
  if not meta:
    return {'size': None, 'mtime': None}
  return {'size': meta[0].size_in_bytes,
          'mtime': meta[0].last_updated_in_seconds}


def _model_identity(path: str) -> List:
  base = path.rstrip('/')
  found = []
  for pattern in (f'{base}/saved_model.pb', f'{base}/variables/*',
                  f'{base}/labels.txt', f'{base}/assets/*'):
    try:
      found += FileSystems.match([pattern])[0].metadata_list
    except Exception:  # pylint: disable=broad-except
      continue
  return sorted([m.path[len(base):], m.size_in_bytes,
                 m.last_updated_in_seconds] for m in found)


def differences(old: dict, new: dict) -> List[str]:
  """What changed between two keys, in words."""
  said = []
  if old.get('format') != new['format']:
    return ['it was written by another version of ev-predict']
  for name, what in (('input_oss_file', 'the file list'),
                     ('input_table', 'the input table'),
                     ('model_path', 'the model path')):
    if old.get(name) != new.get(name):
      said.append(f'{what} changed ({old.get(name)} -> {new.get(name)})')
  if not said and old.get('list') != new['list']:
    o, n = old.get('list') or {}, new['list']
    if 'files' in n:
      said.append('the input table changed (its files, sizes or times)')
    else:
      said.append('the file list changed' + (
          f' (size {o.get("size")} -> {n["size"]} bytes)'
          if o.get('size') != n['size'] else ' (modified since)'))
  if not said and old.get('model') != new['model']:
    said.append('the model files changed')
  old_resolved = old.get('resolved') or {}
  for name, what in (('labels', 'the class names'),
                     ('thresholds', 'the thresholds')):
    if old_resolved.get(name) != (new.get('resolved') or {}).get(name):
      said.append(f'{what} changed (-Dlabel_map_path, the model\'s '
                  'labels.txt or -Dthreshold_file)' if name == 'labels' else
                  f'{what} changed (-Dthreshold_file)')
  if old.get('batch') != new['batch']:
    said.append(f'the batch size changed ({old.get("batch")} -> '
                f'{new["batch"]}; it changes the last bits of probabilities)')
  params = old.get('parameters') or {}
  for name, value in new['parameters'].items():
    if params.get(name) != value:
      said.append(f'-D{name} changed ({params.get(name)} -> {value})')
  return said


def prepare(values, paths: write.OutputPaths, parallel: int,
            launcher: dict, batch: int = 1, table=None,
            resolved=None) -> Resumption:
  """Takes the job's state folder for this run: the earlier run's to
  continue, or a new one (the list scanned once, streamed). table: a table
  job's (transforms/table.py TableJob), whose list is made here, once."""
  folder = paths.folder
  key = job_key(values, batch, table, resolved)
  listing = folder.table_list if table else values.input_oss_file
  reason = None
  _refuse_a_path_not_made_by_us(folder.root)
  names = _names(folder.root)
  if names:
    manifest = _manifest(folder, names)
    _refuse_if_owned(folder, names)
    write.finish_dead_commits(paths)
    if not values.resume:
      reason = '-Dresume=false'
    else:
      said = differences(manifest.get('key') or {}, key)
      reason = '; '.join(said) if said else None
    if reason is None:
      try:
        plan = state_lib.ListPlan.from_json(state_lib.read_json(folder.plan))
      except Exception:  # pylint: disable=broad-except
        reason = 'its chunk plan is missing (it was stopped while starting)'
    if reason is None and table and not FileSystems.exists(listing):
      reason = 'the list made from its table is missing'
    if reason is None:
      _own(folder, launcher)
      return Resumption(folder, plan, state_lib.committed(folder, plan),
                        list_identity=key['list'])
    remove_state(folder)
  state_lib.write_json(folder.manifest, {'format': state_lib.FORMAT,
                                         'key': key,
                                         'created': time.time()})
  _own(folder, launcher)
  if table:
    # Before the plan: a run killed while it is made finds no plan, and
    # starts fresh.
    table.export(listing)
  total = state_lib.count_lines(listing)
  plan = state_lib.scan(listing,
                        state_lib.chunk_lines_for(total, parallel, batch))
  state_lib.write_json(folder.plan, plan.to_json())
  return Resumption(folder, plan, {}, fresh=reason, list_identity=key['list'])


def _refuse_a_path_not_made_by_us(root: str) -> None:
  """A link there would put the state (and its deletion) somewhere else; an
  empty folder there is someone's (ours always holds a manifest once made,
  bar a kill in the instant between): either is exit 2, untouched."""
  if '://' in root:
    return
  if os.path.islink(root):
    raise UsageError(f'{root} is a symbolic link; ev-predict keeps its '
                     'state in a folder it makes: remove the link or give '
                     'another output')
  if os.path.isdir(root) and not os.listdir(root):
    raise UsageError(f'{root} is an empty folder ev-predict did not make; '
                     'remove it or give another output')


def _names(root: str) -> List[str]:
  """Every file under the folder, as a path relative to it."""
  if '://' not in root:
    if not os.path.isdir(root):
      if os.path.lexists(root):
        raise UsageError(f'{root} exists and is not a folder of '
                         'ev-predict; move it away or give another output')
      return []
    return [os.path.relpath(os.path.join(d, n), root)
            for d, _, files in os.walk(root) for n in files]
  prefix = root.rstrip('/') + '/'
  found = FileSystems.match([prefix + '**'])[0].metadata_list
  return [m.path[len(prefix):] for m in found]


def _manifest(folder: state_lib.StateFolder, names: List[str]) -> dict:
  foreign = [n for n in names if not _OURS.match(n)]
  try:
    manifest = state_lib.read_json(folder.manifest)
  except Exception:  # pylint: disable=broad-except
    manifest = None
  if not isinstance(manifest, dict) or \
      not str(manifest.get('format', '')).startswith('ev-predict-resume/') \
      or foreign:
    what = f' (it holds {foreign[0]})' if foreign else ''
    raise UsageError(f'{folder.root} exists and is not ev-predict\'s resume '
                     f'state{what}; move it away or give another output')
  return manifest


def _refuse_if_owned(folder: state_lib.StateFolder, names: List[str]) -> None:
  if 'launcher.json' not in names:
    return
  try:
    who = state_lib.read_json(folder.owner)
  except Exception:  # pylint: disable=broad-except
    return
  if who.get('pid') == os.getpid() and who.get('start') == \
      write.launcher_identity().get('start') and \
      who.get('host') == write.launcher_identity().get('host'):
    return  # an earlier run of this process (runs in one process are serial)
  alive = write.is_alive(who)
  if alive is None:
    alive = time.time() - float(who.get('updated', 0)) < _STALE
  if alive:
    raise UsageError(
        f'another ev-predict run (pid {who.get("pid")} on '
        f'{who.get("host")}) is writing this output; wait for it to end or '
        'stop it')


def _own(folder: state_lib.StateFolder, launcher: dict) -> None:
  state_lib.write_json(folder.owner, dict(launcher, updated=time.time()))


def release(folder: state_lib.StateFolder, launcher: dict) -> None:
  """Says this launcher no longer writes the folder (its run ended), so
  that a next run need not wait for it to be provably gone."""
  try:
    if state_lib.read_json(folder.owner).get('pid') == launcher.get('pid'):
      FileSystems.delete([folder.owner])
  except Exception:  # pylint: disable=broad-except
    pass


class Heartbeat:
  """Rewrites launcher.json while the job runs, so that a launcher on
  another machine can tell this one lives."""

  def __init__(self, folder: state_lib.StateFolder, launcher: dict,
               period: float = HEARTBEAT):
    self._folder, self._launcher, self._period = folder, launcher, period
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, daemon=True,
                                    name='ev-predict-heartbeat')

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()

  def _beat(self):
    while not self._stop.wait(self._period):
      try:
        _own(self._folder, self._launcher)
      except Exception:  # pylint: disable=broad-except
        pass


def remove_state(folder: state_lib.StateFolder) -> None:
  """Deletes the names of ours in the folder, then the folder where it is
  left empty; anything else stays (and is said)."""
  try:
    names = _names(folder.root)
  except UsageError:
    return
  ours = [n for n in names if _OURS.match(n)]
  paths = [(os.path.join(folder.root, n) if '://' not in folder.root else
            folder.root.rstrip('/') + '/' + n) for n in ours]
  for i in range(0, len(paths), 500):
    try:
      FileSystems.delete(paths[i:i + 500])
    except Exception:  # pylint: disable=broad-except
      for path in paths[i:i + 500]:
        try:
          FileSystems.delete([path])
        except Exception:  # pylint: disable=broad-except
          pass
  if '://' in folder.root:
    return  # an object store's folder is only its objects' names
  for sub in ('chunks', 'progress', 'table', ''):
    try:
      os.rmdir(os.path.join(folder.root, sub))
    except OSError:
      pass
  if os.path.exists(folder.root):
    _LOG.warning('ev-predict: left %s in place: it holds files that are not '
                 'ev-predict\'s', folder.root)
