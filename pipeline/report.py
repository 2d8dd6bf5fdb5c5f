"""``ev-predict report OUTPUT [--out FILE] [--thumbnails N]``: a finished
job's run report, one self-contained HTML page (also written by every job
beside its result as ``<output>.report.html``, unless -Dreport=false).

OUTPUT is the job's -Doutput_oss_file (or -Doutput_table). The files are
read once, streamed (transforms/report.py); thumbnails are fetched through
the job's own access policy and caps; the page is drawn by
transforms/report_page.py and replaces FILE atomically, only ever a report
of ours.

A summary read from disk is not trusted: whoever could edit it could make
the page (written beside OUTPUT, perhaps in a shared bucket) echo files it
names. So the report command reads only OUTPUT's own siblings (another
error file must be named with --errors), and for a remote OUTPUT no local
file and no private address is fetched for a thumbnail. The job's own
report, from the summary it holds in memory, uses the job's policy.
"""
import json
import logging
import math
import os
import posixpath
import stat
import sys
import uuid
from typing import List, Mapping, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ev_predict.pipeline import graph
from ev_predict.pipeline.commandline import UsageError
from ev_predict.transforms import access, report, report_page, storage
from ev_predict.transforms.fetch import FetchConfig

_LOG = logging.getLogger('ev_predict')
SUFFIX = '.report.html'
THUMBNAILS = 24      # borderline images pictured; examples per class: 4
MAX_THUMBNAILS = 1000
_SUMMARY_CAP = 64 << 20

USAGE = """usage: ev-predict report OUTPUT [--out FILE] [--thumbnails N]
                          [--errors FILE] [--ossHost HOST]

A finished job's run report: one HTML page, self-contained (no network),
from OUTPUT (its -Doutput_oss_file or -Doutput_table), OUTPUT.errors and
OUTPUT.summary.json, on any file system ev-predict reads.
  --out FILE        where to write it (default OUTPUT.report.html)
  --thumbnails N    borderline images pictured (default 24, at most 1000;
                    0: no thumbnails, nothing fetched)
  --errors FILE     the job's error file (or table) when it is not beside
                    OUTPUT (-Derror_oss_file, -Derror_table elsewhere)
  --ossHost HOST    the OSS endpoint (else the environment's, as for a
                    job; never the summary's)
"""


def report_path(output: str) -> str:
  return output + SUFFIX


def read_summary(output: str) -> dict:
  path = output + '.summary.json'
  _check_input(path)
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      data = json.loads(f.read(_SUMMARY_CAP).decode('utf-8'))
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f'cannot read {path} ({type(e).__name__}): OUTPUT must '
                     'be the result file (or output table) of a finished '
                     'ev-predict job') from e
  if not isinstance(data, dict) or not isinstance(
      data.get('parameters'), dict) or 'lines_read' not in data:
    raise UsageError(f'{path} is not an ev-predict summary')
  problem = _shape_problem(data)
  if problem:
    raise UsageError(f'{path} is not an ev-predict summary ({problem})')
  return data


# The summary's fields the page uses, by the type the engine writes.
_COUNTS = ('lines_read', 'succeeded', 'failed', 'resumed_lines', 'workers',
           'attempts', 'batch_size', 'result_lines', 'error_lines',
           'result_rows', 'error_rows')
_NUMBERS = ('images_per_second', 'processing_images_per_second',
            'wall_seconds', 'processing_seconds', 'error_ratio')
_TEXTS = ('run_id', 'model_path', 'model_input', 'backend_requested',
          'input_file', 'result_file', 'error_file', 'error_table')


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) \
      and math.isfinite(value)


def _shape_problem(data: Mapping) -> Optional[str]:
  """What in a summary is not as the engine writes it (a hand edit)."""
  def bad(key, what):
    return f'"{key}" is {type(data[key]).__name__}, not {what}'
  for key in _COUNTS:
    if key in data and not (isinstance(data[key], int) and
                            not isinstance(data[key], bool)):
      return bad(key, 'an integer')
  for key in _NUMBERS:
    if key in data and not _is_number(data[key]):
      return bad(key, 'a finite number')
  for key in _TEXTS:
    if key in data and not isinstance(data[key], str):
      return bad(key, 'text')
  if 'accounting_ok' in data and not isinstance(data['accounting_ok'], bool):
    return bad('accounting_ok', 'true or false')
  if not all(isinstance(k, str) and isinstance(v, str)
             for k, v in data['parameters'].items()):
    return '"parameters" holds a value that is not text'
  if len(data['parameters']) > 1000:
    return '"parameters" holds more than 1000 parameters'
  for key in ('failed_by_kind', 'backends'):
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool)
        for n in value.values()):
      return f'"{key}" is not an object of counts'
    if len(value) > 100:
      return f'"{key}" holds more than 100 entries'
  timeline = data.get('timeline', {})
  if not isinstance(timeline, dict) or not isinstance(
      timeline.get('points', []), list) or not all(
          isinstance(p, list) and len(p) == 2 and all(map(_is_number, p))
          and 0 <= p[0] <= 1e8 and 0 <= p[1] <= 1e13
          for p in timeline.get('points', [])):
    return '"timeline" is not a list of [seconds, lines] points'
  return None


def _check_input(path: str) -> None:
  """A local file to read must be a regular file, not a link: a FIFO would
  hang the report, a device never end, and a link beside OUTPUT could name
  any file (the page would show its lines)."""
  if '://' in path:
    return
  try:
    mode = os.lstat(path).st_mode
  except FileNotFoundError:
    return  # the open says so, in its own words
  except OSError as e:
    raise UsageError(f'cannot read {path} ({e.strerror})') from e
  if stat.S_ISLNK(mode):
    raise UsageError(f'{path} is a link; the report reads only the job\'s '
                     'own files, not what a link names')
  if not stat.S_ISREG(mode):
    raise UsageError(f'{path} is not a regular file')


def _number(params: Mapping[str, str], name: str, kind, default):
  try:
    value = kind(params.get(name, default))
  except (TypeError, ValueError, OverflowError):
    return default
  return value if math.isfinite(value) and value >= 0 else default


def _fetch_config(params: Mapping[str, str], trusted: bool,
                  output: str) -> FetchConfig:
  local = '://' not in output
  return FetchConfig(
      read_timeout=min(60.0, _number(params, 'fetch_timeout', float, 30.0)),
      retries=min(1, _number(params, 'fetch_retries', int, 3)),
      max_bytes=min(256 << 20,
                    _number(params, 'max_image_bytes', int, 64 << 20)),
      allowed_prefixes=access.parse_allow_list(params.get('buckets') or ''),
      # An untrusted summary never widens what a remote OUTPUT's page may
      # picture: not this machine's files, not its private networks.
      block_private_networks=params.get('block_private_networks') == 'true'
      or not (trusted or local),
      allow_local_files=params.get('allow_local_files', 'true') == 'true'
      and (trusted or local))


def _folder(path: str) -> str:
  """The folder a file is in, the file itself not resolved (a link beside
  OUTPUT is beside it; what it names is another matter, _check_input's)."""
  if '://' in path:
    return posixpath.dirname(graph.canonical_path(path))
  return os.path.realpath(os.path.dirname(os.path.abspath(path)))


def error_path(output: str, summary: Mapping, trusted: bool,
               errors: Optional[str] = None) -> str:
  """The job's error file (or table). From a summary on disk it is read
  only when it is beside OUTPUT, unless the caller names it (errors)."""
  if errors:
    return errors
  params = summary['parameters']
  if params.get('input_table'):
    stem, ext = os.path.splitext(output)
    default = f'{stem}.errors{ext}'
    named = summary.get('error_table') or summary.get('error_file')
  else:
    default = output + '.errors'
    named = summary.get('error_file')
  if not named or trusted:
    return named or default
  if ('://' in named) != ('://' in output) or named.startswith('file:'):
    raise UsageError(f'the summary names its error file {named}, on another '
                     f'file system than {output}; name it: --errors PATH')
  if _folder(named) != _folder(output):
    raise UsageError(
        f'the summary names its error file {named}, which is not beside '
        f'{output}; the report reads only files beside OUTPUT: if it is '
        f'the job\'s, name it: --errors {named}')
  return named


def _items(output: str, errors: Optional[str], summary: Mapping):
  params = summary['parameters']
  if params.get('input_table'):
    reserved = [c.strip() for c in (params.get('reserved_columns') or '')
                .split(',') if c.strip()]
    image_col = params.get('image_col', 'image')
    image = image_col if image_col in reserved else None
    labels = [c for c in reserved if c != image_col][:3]
    column = params.get('result_column', 'result')
    yield from report.table_items(output, True, column, image, labels)
    if errors:
      yield from report.table_items(errors, False, column, image, labels)
    return
  yield from report.line_items(output, True)
  if errors:
    yield from report.line_items(errors, False)


def _exists(path: str) -> bool:
  try:
    return FileSystems.exists(path)
  except Exception:  # pylint: disable=broad-except
    return True      # the read says why


def write_report(output: str, out: Optional[str] = None,
                 thumbnails: int = THUMBNAILS,
                 summary: Optional[Mapping] = None,
                 errors: Optional[str] = None, trusted: bool = False) -> str:
  """Writes the report of the job whose result is output; returns where.
  trusted: summary is the job's own, from memory; else it was read from
  disk (or is read now, when None) and is not believed."""
  summary = summary if summary is not None else read_summary(output)
  params = summary['parameters']
  target = out or report_path(output)
  _check_target(target)
  errors = error_path(output, summary, trusted, errors)
  for path in (output, errors):
    _check_input(path)
  notes = []
  if not _exists(errors):
    notes.append(f'{errors} is missing: the failures are not counted here')
    _LOG.warning('ev-predict: warning: %s is missing: the report counts no '
                 'failures', errors)
  threshold = _number(params, 'threshold', float, 0.5)
  stats = report.gather(
      _items(output, None if notes else errors, summary), report.Stats(lowest=thumbnails or THUMBNAILS, threshold=threshold))
  thumbs = {}
  if thumbnails > 0:
    examples = [x for xs in report_page.page_examples(stats).values()
                for x in xs]
    config = _fetch_config(params, trusted, output)
    if not (trusted or '://' not in output):
      notes.append('thumbnails of this remote OUTPUT\'s report come from '
                   'neither local files nor private addresses (the report '
                   'command does not take a summary\'s word for them)')
    made = report.make_thumbnails(
        [x.image for x in examples], config,
        _number(params, 'max_image_pixels', int, 89_478_485),
        params.get('image_type', 'url'))
    thumbs = {id(x): t for x, t in zip(examples, made)}
    if params.get('input_table') and not any(x.image for x in examples):
      notes.append('no thumbnails: the image column is not among the '
                   'table\'s -Dreserved_columns')
  page = report_page.render(summary, stats, output, thumbs, notes)
  # 'replace': a lone surrogate a summary's JSON escapes carried is a '?'.
  _write_atomically(target, page.encode('utf-8', 'replace'))
  return target


_OURS = b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
_TITLE = b'<title>ev-predict report: '


def write_beside(output: str, summary: Mapping) -> Optional[str]:
  """The report of a committed job (or retry) beside its result: a report
  that cannot be written is a warning, never a failed job."""
  try:
    return write_report(output, summary=summary, trusted=True)
  except Exception as e:  # pylint: disable=broad-except
    _LOG.debug('ev-predict: report failed', exc_info=True)
    _LOG.warning('ev-predict: warning: the run report was not written '
                 '(%s: %s); ev-predict report %s tries again',
                 type(e).__name__, str(e).splitlines()[0] if str(e) else '',
                 output)
    return None


def _check_target(target: str) -> None:
  """Only a report of ours is ever replaced: a directory, a FIFO, a link or
  a file that is not an ev-predict report (the job's result, a list) is
  exit 2, untouched."""
  if not target or target.endswith('/'):
    raise UsageError(f'{target or "an empty name"} is not a file name; the '
                     'report is a file')
  if '://' not in target:
    _check_local_target(target)
    return
  if _exists(target):
    _check_ours(target)
  try:
    if storage.for_path(target).has_children(target):
      raise UsageError(f'{target} is a folder (objects under it); the '
                       'report is a file')
  except storage.Unsupported:
    pass


def _check_local_target(target: str) -> None:
  folder = os.path.dirname(os.path.abspath(target))
  parent = folder
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UsageError(f'{target}: {parent} is a file, not a folder')
  try:
    mode = os.lstat(target).st_mode
  except FileNotFoundError:
    return
  except OSError as e:
    raise UsageError(f'cannot look at {target} ({e.strerror})') from e
  if stat.S_ISDIR(mode):
    raise UsageError(f'{target} is a directory; the report is a file')
  if not stat.S_ISREG(mode):
    raise UsageError(f'{target} exists and is not a regular file (a link, '
                     'FIFO or device); ev-predict replaces only its own '
                     'files: give another --out')
  _check_ours(target)


def _check_ours(target: str) -> None:
  try:
    with FileSystems.open(
        target, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      head = f.read(4096)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f'{target} exists and cannot be read ({type(e).__name__})'
                     '; ev-predict replaces only its own files: give '
                     'another --out') from e
  if not (head.startswith(_OURS) and _TITLE in head):
    raise UsageError(f'{target} exists and is not an ev-predict report; '
                     'ev-predict replaces only its own files: give another '
                     '--out')


def _write_atomically(target: str, data: bytes) -> None:
  staging = f'{target}.tmp-{uuid.uuid4().hex[:8]}'
  if '://' not in target:
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
  with FileSystems.create(
      staging, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(data)
  try:
    FileSystems.rename([staging], [target])
  except Exception:
    try:
      FileSystems.delete([staging])
    finally:
      raise


def main(argv: List[str]) -> int:
  if not argv or argv[0] in ('-h', '--help'):
    (sys.stdout if argv else sys.stderr).write(USAGE)
    return 0 if argv else 2
  output, out, errors, thumbnails = None, None, None, THUMBNAILS
  oss_host = None
  args = list(argv)
  try:
    while args:
      arg = args.pop(0)
      name, eq, value = arg.partition('=')
      if name in ('--out', '--thumbnails', '--errors', '--ossHost'):
        if not eq:
          if not args:
            raise UsageError(f'{name} needs a value')
          value = args.pop(0)
        if not value:
          raise UsageError(f'{name} needs a value, not an empty one')
        if name == '--out':
          out = value
        elif name == '--errors':
          errors = value
        elif name == '--ossHost':
          oss_host = value
        else:
          try:
            thumbnails = int(value)
          except ValueError:
            raise UsageError(f'--thumbnails must be an integer, not '
                             f'{value!r}') from None
          if not 0 <= thumbnails <= MAX_THUMBNAILS:
            raise UsageError(f'--thumbnails must be 0 to {MAX_THUMBNAILS}')
      elif arg.startswith('-'):
        raise UsageError(f'unknown option {arg} (ev-predict report --help)')
      elif output is None:
        output = arg
      else:
        raise UsageError(f'one OUTPUT only, not also {arg}')
    if output is None:
      raise UsageError('OUTPUT is required (ev-predict report --help)')
    # The summary's own -DossHost is not used: a hand-edited one would send
    # every request, signed with this user's key, where it says.
    _set_file_system_options(oss_host)
    path = write_report(output, out, thumbnails, read_summary(output),
                        errors=errors)
  except UsageError as e:
    sys.stderr.write(f'ev-predict: error: {e}\n')
    return 2
  except ValueError as e:
    from ev_predict.transforms.table import TableError  # pylint: disable=import-outside-toplevel
    if not isinstance(e, TableError):
      raise
    sys.stderr.write(f'ev-predict: error: {e}\n')
    return 2
  except Exception as e:  # pylint: disable=broad-except
    _LOG.debug('ev-predict: report failed', exc_info=True)
    sys.stderr.write(f'ev-predict: report failed: {type(e).__name__}: '
                     f'{str(e).splitlines()[0] if str(e) else ""}\n')
    return 3
  sys.stderr.write(f'ev-predict: report {path}\n')
  return 0


def _set_file_system_options(oss_host: Optional[str]) -> None:
  """The OSS endpoint the user gives (--ossHost), else the usual defaults
  (the environment, ~/.ossutilconfig), as for a job."""
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  flags = [f'--ossHost={oss_host}'] if oss_host else []
  FileSystems.set_options(PipelineOptions(flags))
