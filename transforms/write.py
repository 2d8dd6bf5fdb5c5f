"""Write: records -> sharded text -> one result file and one error file.

Shards go to a private temporary folder beside the output; a final step, which
runs once after every shard is written, concatenates them into a temporary file
and renames it over the target, so a result file appears complete or not at all.
The same step writes the run summary and checks that every input line is
accounted for.
"""
import dataclasses
import json
import logging
import sys
import time
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.format import Formatter
from transforms.record import Record

_LOG = logging.getLogger(__name__)
_COPY_CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class OutputPaths:
  result: str
  errors: str
  summary: str
  temp_dir: str      # shards live here until the final step

  @classmethod
  def for_run(cls, result: str, errors: Optional[str], run_id: str):
    return cls(result=result, errors=errors or result + '.errors',
               summary=result + '.summary.json',
               temp_dir=f'{result}.shards-{run_id}')


def concatenate(shards: Sequence[str], target: str, run_id: str) -> None:
  """Concatenates shards (in name order) into target atomically."""
  fs = FileSystems.get_filesystem(target)
  if shards and hasattr(fs, 'concatenate') and fs.concatenate(shards, target):
    return  # composed server-side; a multipart completion is atomic
  staging = f'{target}.tmp-{run_id}'
  with FileSystems.create(
      staging, compression_type=CompressionTypes.UNCOMPRESSED) as out:
    for shard in sorted(shards):
      with FileSystems.open(
          shard, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while True:
          chunk = f.read(_COPY_CHUNK)
          if not chunk:
            break
          out.write(chunk)
  if FileSystems.exists(target):
    FileSystems.delete([target])
  FileSystems.rename([staging], [target])


def summarize(counts: Dict[str, int], lines_read: int, started_at: float,
              finished_at: float) -> dict:
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
      'accounting_ok': records == lines_read,
      'wall_seconds': round(wall, 3),
      'images_per_second': round(succeeded / wall, 2),
  }


class _FormatFn(beam.DoFn):
  """Formats each record and reports progress from the worker."""

  def __init__(self, labels, progress_every: float):
    self._labels = labels
    self._progress_every = progress_every

  def setup(self):
    self._format = Formatter(self._labels)
    self._ok = Metrics.counter('ev_predict', 'succeeded')
    self._failed = Metrics.counter('ev_predict', 'failed')
    self._seen = {'ok': 0, 'failed': 0}
    self._started = self._last = time.monotonic()

  def process(self, record: Record):
    outcome, line = self._format(record)
    if outcome == 'ok':
      self._ok.inc()
      self._seen['ok'] += 1
    else:
      self._failed.inc()
      self._seen['failed'] += 1
      Metrics.counter('ev_predict', f'failed_{outcome}').inc()
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
               progress_every: float = 30.0):
    super().__init__()
    self._paths = paths
    self._labels = labels
    self._lines_read = lines_read
    self._run_id = run_id
    self._started_at = started_at
    self._extra = extra_summary or {}
    self._progress_every = progress_every

  def expand(self, records):
    paths, run_id = self._paths, self._run_id
    lines = records | 'Format' >> beam.ParDo(
        _FormatFn(self._labels, self._progress_every))
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
    # Which backend classified how many images ('auto' decides per worker).
    backends = (records
                | 'Backends' >> beam.FlatMap(
                    lambda r: [r.backend] if r.ok and r.backend else [])
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
  concatenate(result_shards, paths.result, run_id)
  concatenate(error_shards, paths.errors, run_id)
  summary = summarize(counts, lines_read, started_at, time.time())
  summary.update(extra)
  summary.update(result_file=paths.result, error_file=paths.errors,
                 backends=backends)
  if not summary['accounting_ok']:
    _LOG.error('ev-predict: %d input lines but %d records written',
               lines_read, summary['records'])
  with FileSystems.create(
      paths.summary, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(json.dumps(summary, indent=2, sort_keys=True).encode('utf-8'))
  try:
    FileSystems.delete([paths.temp_dir])
  except Exception:  # pylint: disable=broad-except
    _LOG.warning('could not remove %s', paths.temp_dir)
  return summary
