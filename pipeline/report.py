"""``ev-predict report OUTPUT [--out FILE] [--thumbnails N]``: a finished
job's run report, one self-contained HTML page (also written by every job
beside its result as ``<output>.report.html``, unless -Dreport=false).

OUTPUT is the job's -Doutput_oss_file (or -Doutput_table); its summary says
where the rest is and how the job was allowed to fetch. The files are read
once, streamed (transforms/report.py); thumbnails are fetched through the
job's own access policy and caps; the page is drawn by
transforms/report_page.py and replaces FILE atomically (a directory there is
refused).
"""
import json
import logging
import os
import sys
import uuid
from typing import List, Mapping, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ev_predict.pipeline.commandline import UsageError
from ev_predict.transforms import access, report, report_page, storage
from ev_predict.transforms.fetch import FetchConfig

_LOG = logging.getLogger('ev_predict')
SUFFIX = '.report.html'
THUMBNAILS = 24      # borderline images pictured; examples per class: 4
_SUMMARY_CAP = 64 << 20

USAGE = """usage: ev-predict report OUTPUT [--out FILE] [--thumbnails N]

A finished job's run report: one HTML page, self-contained (no network),
from OUTPUT (its -Doutput_oss_file or -Doutput_table), OUTPUT.errors and
OUTPUT.summary.json, on any file system ev-predict reads.
  --out FILE        where to write it (default OUTPUT.report.html)
  --thumbnails N    borderline images pictured (default 24; 0: no
                    thumbnails, nothing fetched)
"""


def report_path(output: str) -> str:
  return output + SUFFIX


def read_summary(output: str) -> dict:
  path = output + '.summary.json'
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
  return data


def _fetch_config(params: Mapping[str, str]) -> FetchConfig:
  def number(name, kind, default):
    try:
      return kind(params.get(name, default))
    except (TypeError, ValueError):
      return default
  return FetchConfig(
      read_timeout=number('fetch_timeout', float, 30.0),
      retries=min(1, number('fetch_retries', int, 3)),
      max_bytes=number('max_image_bytes', int, 64 << 20),
      allowed_prefixes=access.parse_allow_list(params.get('buckets') or ''),
      block_private_networks=params.get('block_private_networks') == 'true',
      allow_local_files=params.get('allow_local_files', 'true') == 'true')


def _items(output: str, summary: Mapping):
  params = summary['parameters']
  if params.get('input_table'):
    reserved = [c.strip() for c in (params.get('reserved_columns') or '')
                .split(',') if c.strip()]
    image_col = params.get('image_col', 'image')
    image = image_col if image_col in reserved else None
    labels = [c for c in reserved if c != image_col][:3]
    column = params.get('result_column', 'result')
    errors = summary.get('error_table') or summary.get('error_file')
    yield from report.table_items(output, True, column, image, labels)
    yield from report.table_items(errors, False, column, image, labels)
    return
  yield from report.line_items(output, True)
  yield from report.line_items(summary.get('error_file') or
                               output + '.errors', False)


def write_report(output: str, out: Optional[str] = None,
                 thumbnails: int = THUMBNAILS,
                 summary: Optional[Mapping] = None) -> str:
  """Writes the report of the job whose result is output; returns where."""
  summary = summary or read_summary(output)
  params = summary['parameters']
  target = out or report_path(output)
  _refuse_a_directory(target)
  try:
    threshold = float(params.get('threshold', 0.5))
  except ValueError:
    threshold = 0.5
  stats = report.gather(_items(output, summary), report.Stats(
      lowest=thumbnails or THUMBNAILS, threshold=threshold))
  notes = []
  thumbs = {}
  if thumbnails > 0:
    examples = [x for xs in report_page.page_examples(stats).values()
                for x in xs]
    made = report.make_thumbnails(
        [x.image for x in examples], _fetch_config(params),
        int(params.get('max_image_pixels', 89_478_485)),
        params.get('image_type', 'url'))
    thumbs = {id(x): t for x, t in zip(examples, made)}
    if params.get('input_table') and not any(x.image for x in examples):
      notes.append('no thumbnails: the image column is not among the '
                   'table\'s -Dreserved_columns')
  page = report_page.render(summary, stats, output, thumbs, notes)
  _write_atomically(target, page.encode('utf-8'))
  return target


_OURS = b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
_TITLE = b'<title>ev-predict report: '


def write_beside(output: str, summary: Mapping) -> Optional[str]:
  """The report of a committed job (or retry) beside its result: a report
  that cannot be written is a warning, never a failed job."""
  try:
    return write_report(output, summary=summary)
  except Exception as e:  # pylint: disable=broad-except
    _LOG.debug('ev-predict: report failed', exc_info=True)
    _LOG.warning('ev-predict: warning: the run report was not written '
                 '(%s: %s); ev-predict report %s tries again',
                 type(e).__name__, str(e).splitlines()[0] if str(e) else '',
                 output)
    return None


def _refuse_a_directory(target: str) -> None:
  """Only a report of ours is ever replaced: a directory, or a file that
  is not an ev-predict report (the job's result, a list), is exit 2."""
  if ('://' not in target and os.path.isdir(target)) or target.endswith('/'):
    raise UsageError(f'{target} is a directory; the report is a file')
  try:
    exists = FileSystems.exists(target)
  except Exception:  # pylint: disable=broad-except
    exists = False
  if exists:
    with FileSystems.open(
        target, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      head = f.read(4096)
    if not (head.startswith(_OURS) and _TITLE in head):
      raise UsageError(f'{target} exists and is not an ev-predict report; '
                       'ev-predict replaces only its own files: give another '
                       '--out')
  if '://' in target:
    try:
      if storage.for_path(target).has_children(target):
        raise UsageError(f'{target} is a folder (objects under it); the '
                         'report is a file')
    except storage.Unsupported:
      pass


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
  output, out, thumbnails = None, None, THUMBNAILS
  args = list(argv)
  try:
    while args:
      arg = args.pop(0)
      name, eq, value = arg.partition('=')
      if name in ('--out', '--thumbnails'):
        if not eq:
          if not args:
            raise UsageError(f'{name} needs a value')
          value = args.pop(0)
        if name == '--out':
          out = value
        else:
          try:
            thumbnails = int(value)
          except ValueError:
            raise UsageError(f'--thumbnails must be an integer, not '
                             f'{value!r}') from None
          if thumbnails < 0:
            raise UsageError('--thumbnails must be at least 0')
      elif arg.startswith('-'):
        raise UsageError(f'unknown option {arg} (ev-predict report --help)')
      elif output is None:
        output = arg
      else:
        raise UsageError(f'one OUTPUT only, not also {arg}')
    if output is None:
      raise UsageError('OUTPUT is required (ev-predict report --help)')
    summary = read_summary(output)
    _set_file_system_options(summary['parameters'])
    path = write_report(output, out, thumbnails, summary)
  except UsageError as e:
    sys.stderr.write(f'ev-predict: error: {e}\n')
    return 2
  except Exception as e:  # pylint: disable=broad-except
    _LOG.debug('ev-predict: report failed', exc_info=True)
    sys.stderr.write(f'ev-predict: report failed: {type(e).__name__}: '
                     f'{str(e).splitlines()[0] if str(e) else ""}\n')
    return 3
  sys.stderr.write(f'ev-predict: report {path}\n')
  return 0


def _set_file_system_options(params: Mapping[str, str]) -> None:
  """The job's OSS endpoint, so that oss:// reads as the job did."""
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  flags = [f'--ossHost={params["ossHost"]}'] if params.get('ossHost') else []
  FileSystems.set_options(PipelineOptions(flags))
