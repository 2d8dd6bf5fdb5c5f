"""``ev-predict retry OUTPUT``: runs again the lines of a finished job that
failed with some error kinds (``-Dretry_errors``, default the transient
ones: timeout, fetch) and merges their new records into the job's result and
error files, in place and all at once.

  1. OUTPUT.summary.json says what the job was: its parameters, its files,
     and its file list's identity (size, mtime). A summary that is not one
     of ours, output files changed since, or a list that changed: exit 2.
  2. The job's files must line up with its list (transforms/merge.py
     check()), or nothing runs (exit 2).
  3. The selected lines go to OUTPUT.retry/list.txt, a folder of our own (its
     marker names the retry's launcher, so a dead retry's folder is taken
     over and a live one's refused), and the job runs again over them with
     its own parameters (-D overrides may change how it runs, not what it
     computes), writing OUTPUT.retry/result.txt.
  4. merge() writes the merged files to staging names beside the targets,
     beside a new summary (the counts after the merge, plus retried and
     recovered); transforms/write.py's commit() swaps the three in together,
     and the folder is removed.

Nothing selected: "nothing to retry", exit 0, no file touched.
"""
import dataclasses
import json
import logging
import os
import posixpath
import sys
import time
import uuid
from typing import Dict, Iterable, List, Optional, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ev_predict.pipeline import graph, launcher
from ev_predict.pipeline.commandline import UsageError, parse_command_line
from ev_predict.pipeline.parameters import PARAMETERS, ParameterError
from ev_predict.transforms import merge, redact, storage, write
from ev_predict.transforms.merge import MergeError

USAGE = """\
usage: ev-predict retry OUTPUT [-Dretry_errors=KIND,...] [-Dkey=value ...]
                         [--beam_flag=value ...]

Runs again the lines of a finished job (OUTPUT: its -Doutput_oss_file) that
failed with the given error kinds (default: timeout,fetch) and merges their
new records into OUTPUT and its error file, in input order, replacing them
together with the summary. The job's own parameters are used; -D overrides
may change how it runs (-Dfetch_timeout, -Dnum_worker, ...), not the model,
the input or the outputs. exit codes: 0 ok (or nothing to retry), 1 too many
failed lines after the merge, 2 refused (nothing changed), 3 failed.
"""

_LOG = logging.getLogger('ev_predict')
TOOL = 'ev-predict retry'
MARKER = 'retry.json'
# What a retry may not change: what the job computes and where it is.
_FIXED_GROUPS = ('model', 'input', 'output')
# Keys a summary must have for a retry (the engine writes them).
_NEEDED = ('run_id', 'result_file', 'error_file', 'lines_read',
           'accounting_ok', 'result_bytes', 'error_bytes', 'parameters',
           'input_size', 'input_mtime')
_SUMMARY_CAP = 16 << 20


@dataclasses.dataclass(frozen=True)
class Request:
  output: str                    # the job's result file, as spelled locally
  kinds: Sequence[str]           # error kinds to run again
  overrides: Dict[str, str]      # -D parameters for the retry's job
  beam_args: List[str]
  errors: Optional[str] = None   # the job's error file, named by the user


def parse_args(argv: Sequence[str]) -> Request:
  args = list(argv)
  if not args or args[0].startswith('-'):
    raise UsageError('retry needs the job\'s output file first: '
                     'ev-predict retry OUTPUT [-Dretry_errors=KIND,...]')
  output, rest = args[0], args[1:]
  params, beam_args = parse_command_line(rest)
  problems = []
  # An error file not beside OUTPUT is replaced only when the user names
  # it: a summary's word (a file anyone with the folder can edit) is not
  # enough for ev-predict to replace a file elsewhere.
  errors = params.pop('error_oss_file', None)
  for name in params:
    if name in ('input_oss_file', 'output_oss_file'):
      problems.append(f'-D{name} cannot be given to a retry: it reads the '
                      'job\'s list and replaces the job\'s own files')
    elif PARAMETERS[name].group in _FIXED_GROUPS:
      problems.append(f'-D{name} cannot change in a retry (its records would '
                      'mix with the job\'s); rerun the whole job')
  if problems:
    raise UsageError('; '.join(problems))
  kinds = _kinds(params.pop('retry_errors', None))
  return Request(output=graph.local_spelling(output, 'output_oss_file'),
                 kinds=kinds, overrides=params, beam_args=beam_args,
                 errors=errors)


def _kinds(text: Optional[str]) -> Sequence[str]:
  p = PARAMETERS['retry_errors']
  if text is None:
    return p.default
  try:
    kinds = p.parse(text)
  except ParameterError as e:
    raise UsageError(str(e)) from None
  problem = p.problem(kinds, text)
  if problem:
    raise UsageError(problem)
  return kinds


# ------------------------------------------------------------ the job's files


def _folder(path: str) -> str:
  """The folder a file is in, the file itself not resolved."""
  if '://' in path:
    return posixpath.dirname(graph.canonical_path(path))
  return os.path.realpath(os.path.dirname(os.path.abspath(path)))


def read_summary(output: str, errors: Optional[str] = None) -> dict:
  """The job's summary, checked to be ours and of this output (and its
  error file beside it, or the one the user named)."""
  path = output + '.summary.json'
  if not FileSystems.exists(path):
    raise UsageError(f'{path} not found: OUTPUT must be the result file '
                     '(-Doutput_oss_file) of a finished ev-predict job')
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      data = json.loads(f.read(_SUMMARY_CAP).decode('utf-8'))
  except (ValueError, UnicodeDecodeError) as e:
    raise UsageError(f'{path} is not an ev-predict summary ({e})') from e
  if not isinstance(data, dict):
    raise UsageError(f'{path} is not an ev-predict summary')
  missing = [k for k in _NEEDED if k not in data]
  if missing:
    raise UsageError(f'{path} lacks what a retry needs ({", ".join(missing)};'
                     ' written by an older ev-predict?); rerun the whole job')
  params = data['parameters']
  if isinstance(params, dict) and params.get('input_table'):
    raise UsageError(f'{output} is a table job\'s output; `ev-predict '
                     'retry` reruns file-list jobs only: rerun the table '
                     'job (its failed rows are in -Derror_table)')
  if not isinstance(params, dict) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in params.items()) \
      or 'input_oss_file' not in params:
    raise UsageError(f'{path}: "parameters" is not a job\'s parameters')
  if graph.canonical_path(str(data['result_file'])) != \
      graph.canonical_path(output):
    raise UsageError(f'{path} is the summary of {data["result_file"]}, not '
                     f'of {output}')
  named = data['error_file']
  if not isinstance(named, str) or not named:
    raise UsageError(f'{path}: "error_file" is not a path')
  for own in (output, named):
    # A retry replaces both: a link would make it replace what it names.
    if '://' not in own and os.path.islink(own):
      raise UsageError(f'{own} is a link; a retry replaces only the job\'s '
                       'own files: give the file it names, or rerun the job')
  if errors is not None:
    if graph.canonical_path(errors) != graph.canonical_path(named):
      raise UsageError(f'-Derror_oss_file={errors}, but the job\'s error '
                       f'file is {named}')
  elif _folder(named) != _folder(output):
    raise UsageError(f'{path} names the error file {named}, which is not '
                     f'beside {output}; a retry replaces it: if it is the '
                     f'job\'s, confirm with -Derror_oss_file={named}')
  if graph.canonical_path(named) == graph.canonical_path(output):
    raise UsageError(f'{path} names the result file as its error file')
  # What the retry replaces is OUTPUT as the user spelt it (the same file,
  # checked above), never another path to it that the summary gives.
  data['result_file'] = output
  if data['accounting_ok'] is not True:
    raise UsageError(f'the job\'s files do not account for every line of '
                     f'its list ({path}: accounting_ok false); rerun the '
                     'whole job')
  return data


def check_files(summary: dict) -> None:
  """The result and error files are the ones the job wrote (their sizes),
  and the list is the one it read (size and mtime, as Beam's match gives
  them)."""
  for key, size_key in (('result_file', 'result_bytes'),
                        ('error_file', 'error_bytes')):
    path = summary[key]
    try:
      size = write.file_size(path)
    except Exception as e:  # pylint: disable=broad-except
      raise UsageError(f'cannot read {path} ({_reason(e)})') from e
    if size != summary[size_key]:
      raise UsageError(f'{path} holds {size} bytes, the job wrote '
                       f'{summary[size_key]}: it changed since the job; '
                       'rerun the whole job')
  listing = summary['parameters']['input_oss_file']
  try:
    matched = FileSystems.match([listing])[0].metadata_list
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f'cannot read the file list {listing} ({_reason(e)}); '
                     'rerun the whole job') from e
  found = [m for m in matched if m.path == listing] or matched
  if len(found) != 1 or found[0].size_in_bytes != summary['input_size'] or \
      float(found[0].last_updated_in_seconds) != float(
          summary['input_mtime']):
    raise UsageError(f'the file list changed since the job ({listing}); '
                     'rerun the whole job')


def _reason(e: BaseException) -> str:
  # The type, and the reason only of an OSError: another library's message
  # may quote a signed request.
  cause = storage.cause_of(e)
  return type(cause).__name__ + (
      f': {storage.reason_of(cause)}' if isinstance(cause, OSError) else '')


# ------------------------------------------------------------ our folder


class RetryFolder:
  """OUTPUT.retry/: the list, the retry job's outputs and a marker naming
  the retry's launcher. Only these files of ours are ever deleted."""

  def __init__(self, output: str):
    self.output = output
    self.path = output + '.retry'
    self.list = f'{self.path}/list.txt'
    self.result = f'{self.path}/result.txt'
    self.errors = self.result + '.errors'
    self.marker = f'{self.path}/{MARKER}'

  @property
  def _local(self) -> bool:
    return '://' not in self.path

  def _exists(self) -> bool:
    if self._local:
      return os.path.lexists(self.path)
    return FileSystems.exists(self.path) or \
        storage.for_path(self.path).has_children(self.path)

  def owner(self) -> Optional[dict]:
    """The marker of a retry of this output, else None."""
    try:
      with FileSystems.open(
          self.marker,
          compression_type=CompressionTypes.UNCOMPRESSED) as f:
        who = json.loads(f.read(1 << 16).decode('utf-8'))
    except Exception:  # pylint: disable=broad-except
      return None
    if not isinstance(who, dict) or who.get('tool') != TOOL or \
        graph.canonical_path(str(who.get('output', ''))) != \
        graph.canonical_path(self.output):
      return None
    return who

  def claim(self, who: dict) -> None:
    if self._exists():
      if self._local and (os.path.islink(self.path) or
                          not os.path.isdir(self.path)):
        raise UsageError(f'{self.path} exists and is not a folder; a retry '
                         'needs it for its own files')
      owner = self.owner()
      if owner is None:
        raise UsageError(f'{self.path} exists and is not an ev-predict retry '
                         'folder; a retry needs it for its own files')
      alive = write.is_alive(owner)
      if alive is not False:
        where = '' if alive else f' on {owner.get("host")}, which cannot be ' \
            'checked from here'
        raise UsageError(f'{self.path} belongs to a retry of {self.output} '
                         f'that may still run (pid {owner.get("pid")}{where})')
      _LOG.warning('ev-predict: taking over %s from a retry that is gone',
                   self.path)
    elif self._local:
      os.makedirs(self.path)
    with FileSystems.create(
        self.marker, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      f.write(json.dumps(dict(who, tool=TOOL, output=self.output)).encode())

  def write_list(self, lines: Iterable[bytes]) -> int:
    count = 0
    with FileSystems.create(
        self.list, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      for line in lines:
        f.write(line + b'\n')
        count += 1
    return count

  def remove(self) -> None:
    """Our files, then the marker and the folder, if nothing else is left
    (else the marker stays, so a later retry can take the folder over)."""
    for path in (self.list, self.result, self.errors,
                 self.result + '.summary.json'):
      try:
        if FileSystems.exists(path):
          storage.for_path(path).delete_object(path)
      except Exception:  # pylint: disable=broad-except
        _LOG.warning('ev-predict: could not remove %s', path)
    others = [p for p in self._children() if p != self.marker]
    if others:
      _LOG.warning('ev-predict: %s holds files of the retry job (%s); left '
                   'for a later retry to take over', self.path,
                   ', '.join(sorted(others)[:3]))
      return
    try:
      storage.for_path(self.marker).delete_object(self.marker)
      if self._local:
        os.rmdir(self.path)
    except Exception:  # pylint: disable=broad-except
      _LOG.warning('ev-predict: could not remove %s', self.path)

  def _children(self) -> List[str]:
    if self._local:
      try:
        return [f'{self.path}/{n}' for n in os.listdir(self.path)]
      except OSError:
        return []
    try:
      return [m.path for m in FileSystems.match(
          [f'{self.path}/**'])[0].metadata_list]
    except Exception:  # pylint: disable=broad-except
      return []


def inner_argv(summary: dict, req: Request, folder: RetryFolder) -> List[str]:
  """The job's own parameters, the overrides, and the retry's paths."""
  params = {k: v for k, v in summary['parameters'].items()
            if k not in ('input_oss_file', 'output_oss_file',
                         'error_oss_file', 'retry_errors')}
  params.update(req.overrides)
  params.update(input_oss_file=folder.list, output_oss_file=folder.result,
                error_oss_file=folder.errors,
                # The report is of the merged files, written after them.
                report='false')
  return [f'-D{k}={v}' for k, v in params.items()] + list(req.beam_args)


# ------------------------------------------------------------ the retry


def merged_summary(old: dict, counts: dict, inner: dict, run_id: str,
                   kinds: Sequence[str], seconds: float) -> dict:
  """The job's summary after the merge: its counts as a job's (the same
  keys), the files' sizes, and what this retry did."""
  outcomes = dict(counts['failed_by_kind'], ok=counts['succeeded'])
  wall = float(old.get('wall_seconds') or 0) + seconds
  summary = dict(old)
  summary.pop('max_error_ratio', None)
  summary.update(write.summarize(
      outcomes, counts['lines_read'], 0.0, wall,
      (counts['result_lines'], counts['error_lines'])))
  backends = dict(old.get('backends') or {})
  for name, n in (inner.get('backends') or {}).items():
    backends[name] = backends.get(name, 0) + n
  summary.update(
      result_lines=counts['result_lines'], error_lines=counts['error_lines'],
      result_bytes=counts['result_bytes'], error_bytes=counts['error_bytes'],
      backends=backends, retried=counts['retried'],
      recovered=counts['recovered'], retry_errors=list(kinds),
      retry_run_id=run_id)
  return summary


def run(req: Request) -> Optional[dict]:
  """The retry; returns the new summary, None when nothing was selected.
  Raises UsageError when it refuses (nothing changed)."""
  started = time.time()
  summary = read_summary(req.output, req.errors)
  check_files(summary)
  result, errors = summary['result_file'], summary['error_file']
  listing = summary['parameters']['input_oss_file']
  try:
    lined_up = merge.check(listing, result, errors)
  except MergeError as e:
    raise UsageError(f'the job\'s files do not line up with its list: {e}; '
                     'rerun the whole job') from e
  if lined_up['lines'] != summary['lines_read']:
    raise UsageError(f'{listing} has {lined_up["lines"]} lines, the job read '
                     f'{summary["lines_read"]}; rerun the whole job')
  if next(merge.select(errors, req.kinds), None) is None:
    return None
  folder = RetryFolder(req.output)
  argv = inner_argv(summary, req, folder)
  problems = graph.check_parameters(parse_command_line(argv)[0])
  if problems:
    raise UsageError('; '.join(problems))
  who = write.launcher_identity()
  folder.claim(who)
  try:
    selected = folder.write_list(merge.select(errors, req.kinds))
    _LOG.warning('ev-predict: retrying %d line(s) of %s (%s)', selected,
                 errors, ', '.join(req.kinds))
    launcher.quiet_runtime_logs(argv)
    inner = launcher.run(argv)
    if not inner.get('accounting_ok') or inner['lines_read'] != selected:
      raise RuntimeError(f'the retry job read {inner["lines_read"]} of '
                         f'{selected} lines, or its files do not add up')
    merged = _merge_and_commit(req, summary, folder, inner, who, started)
  finally:
    folder.remove()
  if PARAMETERS['report'].parse(req.overrides.get(
      'report', summary['parameters'].get('report', 'true'))):
    from ev_predict.pipeline import report  # pylint: disable=import-outside-toplevel
    merged['report_file'] = report.write_beside(req.output, merged)
  return merged


def _merge_and_commit(req, summary, folder, inner, who, started) -> dict:
  run_id = time.strftime('%Y%m%d-%H%M%S') + '-' + uuid.uuid4().hex[:8]
  paths = write.OutputPaths.for_run(summary['result_file'],
                                    summary['error_file'], run_id)
  # The commit's markers live in the job's state folder, where any later
  # run of this output finds them should this retry die mid-commit.
  write.finish_dead_commits(paths)
  del who  # the retry folder's marker names this launcher
  try:
    counts = merge.merge(
        summary['parameters']['input_oss_file'], paths.result, paths.errors,
        folder.result, folder.errors, paths.staging(paths.result),
        paths.staging(paths.errors), req.kinds)
    if counts['lines_read'] != summary['lines_read']:
      raise MergeError(f'{counts["lines_read"]} lines merged, the job read '
                       f'{summary["lines_read"]}')
    new = merged_summary(summary, counts, inner, run_id, req.kinds,
                         time.time() - started)
    with FileSystems.create(
        paths.staging(paths.summary),
        compression_type=CompressionTypes.UNCOMPRESSED) as f:
      f.write(json.dumps(new, indent=2, sort_keys=True).encode('utf-8'))
    # pylint: disable=protected-access
    with launcher._deferred_signals():  # a signal waits for the commit
      write.commit(paths)
  finally:
    write.remove_staged(paths)
    _remove_if_empty(paths.state)
  return new


def _remove_if_empty(folder: str) -> None:
  """The state folder the commit used, unless a job keeps state there."""
  if '://' not in folder:
    try:
      os.rmdir(folder)
    except OSError:
      pass


def _max_error_ratio(req: Request, summary: dict) -> float:
  text = req.overrides.get('max_error_ratio',
                           summary['parameters'].get('max_error_ratio'))
  p = PARAMETERS['max_error_ratio']
  return p.default if text is None else p.parse(text)


def main(argv: Sequence[str]) -> int:
  if list(argv[:1]) in (['-h'], ['--help'], ['help']):
    sys.stdout.write(USAGE)
    return 0
  redact.install()
  logging.basicConfig(level=logging.ERROR, stream=sys.stderr,
                      format='%(message)s')
  _LOG.setLevel(logging.INFO)
  try:
    req = parse_args(argv)
    # pylint: disable=protected-access
    with launcher._handling_signals():  # as a job: stop workers, clean up
      summary = run(req)
  except UsageError as e:
    sys.stderr.write(f'ev-predict: error: {e}\n')
    return 2
  except Exception as e:  # pylint: disable=broad-except
    _LOG.debug('ev-predict: retry failed', exc_info=True)
    sys.stderr.write(f'ev-predict: retry failed: {launcher.job_error(e)}; '
                     'the job\'s files are as they were\n')
    return 3
  if summary is None:
    kinds = list(req.kinds)
    said = ' or '.join(kinds) if len(kinds) < 3 else \
        ', '.join(kinds[:-1]) + ' or ' + kinds[-1]
    sys.stderr.write(f'ev-predict: nothing to retry: no {said} errors in '
                     f'the error file of {req.output}\n')
    return 0
  launcher.print_summary(summary)
  sys.stderr.write(f'ev-predict: retried {summary["retried"]} line(s) '
                   f'({", ".join(req.kinds)}): {summary["recovered"]} '
                   f'recovered, {summary["retried"] - summary["recovered"]} '
                   'failed again\n')
  if not summary['accounting_ok']:
    sys.stderr.write('ev-predict: error: records do not match input lines\n')
    return 1
  ratio = _max_error_ratio(req, summary)
  if summary['error_ratio'] > ratio:
    sys.stderr.write(f'ev-predict: error: {summary["error_ratio"]:.2%} of '
                     f'lines failed, above -Dmax_error_ratio={ratio}\n')
    return 1
  return 0
