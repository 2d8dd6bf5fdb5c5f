"""Launching a job: the one path from an ev-predict argv to a committed
result, shared by the command line (pipeline/cli.py) and by template
submission (pipeline/submit.py).

    quiet_runtime_logs(argv)   the process environment; call it before
                               anything imports TensorFlow
    make_options(argv)         -D parameters and Beam flags -> PipelineOptions
    make_runner(options)       the runner object (None: Beam resolves it)
    run(argv)                  plan, run (restarting on a lost local worker),
                               commit; returns the job's summary
    launch(argv)               run() as a command: one-line errors, signals,
                               the summary line and the exit code

Importing this module sets nothing and imports Beam but not TensorFlow
(TensorFlow is imported when a job reads its model).
"""
import _thread
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Dict, List, Mapping, MutableMapping, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (DirectOptions,
                                                  FlinkRunnerOptions,
                                                  PipelineOptions,
                                                  PortableOptions,
                                                  StandardOptions,
                                                  WorkerOptions)

from ev_predict.pipeline import graph, logs, parameters, resume, status
from ev_predict.pipeline.commandline import UsageError, parse_command_line
from ev_predict.pipeline.options import (EvPredictOptions, check_beam_flags,
                                         is_direct, runner_kind, to_flags)
from ev_predict.transforms import progress, redact, state, table, write

__all__ = ['OSS_FILESYSTEM', 'UsageError', 'job_error', 'launch',
           'make_options', 'make_runner', 'print_summary', 'process_table',
           'quiet_runtime_logs', 'run', 'stop_workers', 'worker_lost']

# The OSS file system's class, which Beam imports in every worker process
# before it reads a path (--beam_plugins).
OSS_FILESYSTEM = 'ev_predict.transforms.oss.filesystem.OssFileSystem'

_LOG = logging.getLogger('ev_predict')
# Runners that take --parallelism (FlinkRunnerOptions): -Dnum_worker sets it.
_PARALLEL = ('flinkrunner', 'portablerunner')


# ------------------------------------------------------------ environment


def quiet_runtime_logs(argv: List[str],
                       environ: Optional[MutableMapping[str, str]] = None
                       ) -> None:
  """TensorFlow's and gRPC's C++ chatter (and a CUDA probe when no GPU was
  asked for) would bury the lines a user needs: the environment for argv's
  -Dlog_level (pipeline/logs.py). Must run before TensorFlow is imported;
  local worker processes inherit it. A user's own settings win, unless argv
  asks for a level."""
  environ = os.environ if environ is None else environ
  logs.set_environment(*logs.level_of(argv), environ)
  if not _asks_for_gpu(argv):
    environ.setdefault('CUDA_VISIBLE_DEVICES', '')


def _asks_for_gpu(argv: List[str]) -> bool:
  """Whether argv's -DgpuRequired, read as the job reads it, is above 0. A
  command line with problems is read as far as it goes; a value that does
  not parse counts as 0 (the job is refused with exit code 2 anyway)."""
  params, _ = parse_command_line(argv, errors=[])
  try:
    return parameters.PARAMETERS['gpuRequired'].parse(
        params.get('gpuRequired', '0')) > 0
  except parameters.ParameterError:
    return False


# ------------------------------------------------------------ options, runner


def make_options(argv: List[str]) -> PipelineOptions:
  notices: List[str] = []
  params, beam_args = parse_command_line(argv, notices=notices)
  for notice in notices:
    _LOG.warning('ev-predict: notice: %s', notice)
  check_beam_flags(beam_args)
  options = PipelineOptions(to_flags(params) + beam_args +
                            [f'--beam_plugins={OSS_FILESYSTEM}'])
  o = options.view_as(EvPredictOptions)
  runner = options.view_as(StandardOptions).runner
  if is_direct(runner) and o.num_worker > 1:
    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = o.num_worker
    direct.direct_running_mode = 'multi_processing'
  elif runner_kind(runner) in _PARALLEL:
    flink = options.view_as(FlinkRunnerOptions)
    if flink.parallelism < 1:  # an explicit --parallelism wins
      flink.parallelism = o.num_worker
  elif runner_kind(runner) == 'sparkrunner':
    portable = options.view_as(PortableOptions)
    if not portable.environment_cache_millis:
      # Beam's default (0) gives every Spark task a fresh SDK worker that
      # imports TensorFlow and loads the model again (measured: 149 s vs 48 s
      # for the demo list); keep one per executor for the job.
      portable.environment_cache_millis = 60000
  harness = options.view_as(WorkerOptions)
  if not harness.default_sdk_harness_log_level:
    # Worker processes otherwise log every gRPC channel at INFO. 'WARN', not
    # 'WARNING': Beam's Java runners (Flink) parse this option as their
    # LogLevel enum, which has no WARNING; Python reads either.
    harness.default_sdk_harness_log_level = 'WARN'
  return options


def make_runner(options: PipelineOptions):
  """Beam's DirectRunner first tries Prism, which it downloads: on an offline
  machine that stalls. Use the FnApiRunner it would fall back to, directly."""
  name = options.view_as(StandardOptions).runner
  if not is_direct(name):
    return None  # Beam resolves the named runner
  # pylint: disable=import-outside-toplevel
  from apache_beam.portability.api import beam_provision_api_pb2
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  from apache_beam.runners.portability.portable_runner import JobServiceHandle
  encoded = JobServiceHandle.encode_pipeline_options(
      options.get_all_options())
  return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
      beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


# ------------------------------------------------------------ running


def run(argv: List[str], started_at: Optional[float] = None) -> dict:
  """Runs a job to completion and returns its summary (raises on failure).

  The job continues what an earlier run of it committed (pipeline/
  resume.py); once every chunk is committed the three output files are
  staged from them and swapped in together, and the state is removed.
  started_at: when the user started it (the command: its process's start;
  default: now)."""
  redact.install()   # before any library logs a signed request
  started_at = started_at or time.time()
  options = make_options(argv)
  job = graph.plan(options)
  _state.job, _state.committed, _state.resumption = job, False, None
  _LOG.info('ev-predict: run %s, model input %s %sx%s, %d worker(s) x %d '
            'core(s)', job.run_id, job.spec.input_kind, job.spec.width,
            job.spec.height, job.workers, job.cores_per_worker)
  try:
    resumption = resume.prepare(
        job.values, job.paths, job.workers, job.launcher,
        batch=job.batch_size, table=job.table,
        resolved={'labels': list(job.labels or []),
                  'thresholds': _jsonable(job.thresholds)
                                if job.values.threshold_file else None})
  except table.TableError as e:
    raise UsageError(str(e)) from e
  _state.resumption = resumption
  # Counts of an earlier run's workers would be counted again.
  progress.clear(resumption.folder.progress)
  _say_what_resumes(job, resumption)
  try:
    with resume.Heartbeat(resumption.folder, job.launcher), status.Monitor(
        resumption.folder.progress, resumption.plan.total,
        resumption.resumed_lines) as monitor:
      attempt = _run_attempts(options, job, resumption)
    done = state.committed(resumption.folder, resumption.plan)
    missing = [i for i in range(resumption.plan.chunks)
               if resumption.plan.counts[i] and i not in done]
    if missing:
      raise RuntimeError(f'{len(missing)} of {resumption.plan.chunks} chunks '
                         f'were not committed (first: chunk {missing[0]})')
    fields = graph.summary_fields(job, attempt, resumption.list_identity)
    fields['timeline'] = monitor.timeline()
    if job.table:
      _stage_tables(job, resumption, done, started_at,
                    monitor.snapshot().first_at, fields)
    else:
      write.stage_outputs(job.paths, resumption.plan, done, started_at,
                          monitor.snapshot().first_at,
                          resumption.resumed_counts(), fields)
    with _deferred_signals():
      write.commit(job.paths)
      _state.committed = True
      resume.remove_state(resumption.folder)
  finally:
    with _deferred_signals():
      write.remove_staged(job.paths)
      if not _state.committed:
        resume.release(resumption.folder, job.launcher)
  summary = _read_summary(job)
  if job.values.report:
    from ev_predict.pipeline import report  # pylint: disable=import-outside-toplevel
    summary['report_file'] = report.write_beside(job.paths.result, summary)
  return summary


def _jsonable(value):
  if value is None or isinstance(value, (int, float)):
    return value
  return [float(v) for v in value]


def _stage_tables(job, resumption, done, started_at: float,
                  first_at: Optional[float], fields: dict) -> None:
  """A table job's staged files: its lines staged in the state folder as
  a list job's, then the two tables made from them and the input beside,
  and the summary saying what the tables hold."""
  lines = dataclasses.replace(
      job.paths, result=resumption.folder.table_lines,
      errors=resumption.folder.table_lines + '.errors',
      summary=resumption.folder.table_lines + '.summary.json')
  summary = write.stage_outputs(lines, resumption.plan, done, started_at,
                                first_at, resumption.resumed_counts(), fields)
  paths = job.paths
  # A table that changed during the job fails here (exit 3); the state
  # stays for a rerun, which sees the change and starts fresh.
  rows = job.table.write(lines.staging(lines.result),
                         lines.staging(lines.errors),
                         paths.staging(paths.result),
                         paths.staging(paths.errors))
  for staged in (lines.staging(lines.result), lines.staging(lines.errors),
                 lines.staging(lines.summary)):
    write.delete_file(staged)
  sizes = (write.file_size(paths.staging(paths.result)),
           write.file_size(paths.staging(paths.errors)))
  summary.update(
      result_file=paths.result, error_file=paths.errors,
      output_table=paths.result, error_table=paths.errors,
      result_rows=rows[0], error_rows=rows[1],
      result_bytes=sizes[0], error_bytes=sizes[1],
      accounting_ok=summary['accounting_ok'] and
      sum(rows) == resumption.plan.total)
  for key in ('result_lines', 'error_lines'):
    summary.pop(key, None)
  write.write_summary(paths.staging(paths.summary), summary)


def _say_what_resumes(job, resumption) -> None:
  """One line each: why earlier state was dropped, what is resumed, an
  empty list."""
  total = resumption.plan.total
  what, lines = ('table', 'rows') if job.table else ('file list', 'lines')
  if resumption.fresh:
    _LOG.warning('ev-predict: starting fresh: %s', resumption.fresh)
  if not total:
    if not job.values.allow_empty:
      resume.remove_state(resumption.folder)
      raise UsageError(f'the {what} {job.input_name} has no {lines} '
                       '(-Dallow_empty=false)')
    _LOG.warning('ev-predict: warning: the %s %s has no %s; writing empty '
                 'outputs', what, job.input_name, lines)
  elif resumption.done:
    _LOG.warning('ev-predict: resuming: %d of %d lines were committed by an '
                 'earlier run; processing the other %d',
                 resumption.resumed_lines, total,
                 total - resumption.resumed_lines)


def process_started_at() -> float:
  """When this process started (wall clock), so that a job's wall time is
  what its user waited, interpreter start-up and imports included."""
  try:
    with open('/proc/self/stat', 'rb') as f:
      ticks = int(f.read().rsplit(b')', 1)[1].split()[19])
    with open('/proc/stat', 'rb') as f:
      boot = next(int(l.split()[1]) for l in f if l.startswith(b'btime'))
    return boot + ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, StopIteration, IndexError):
    return time.time()


def _run_attempts(options: PipelineOptions, job, resumption) -> int:
  """Runs the pipeline over the chunks still to do; returns the attempt
  that finished it."""
  attempts = 1 + _restarts(options)
  todo = resumption.todo
  for attempt in range(1, attempts + 1):
    if attempt > 1:
      done = state.committed(resumption.folder, resumption.plan)
      todo = [i for i in todo if i not in done]
    if not todo:
      return attempt
    try:
      with beam.Pipeline(runner=make_runner(options), options=options) as p:
        graph.build_pipeline(p, options, job, resumption.plan, todo)
      return attempt
    except Exception as err:  # pylint: disable=broad-except
      if attempt == attempts or not worker_lost(err):
        raise
      # What that attempt committed stays committed: the next one does
      # the rest, and every line still ends exactly once.
      _LOG.warning('ev-predict: attempt %d of %d lost a worker process '
                   '(%s); restarting the job', attempt, attempts, err)
  return attempts


def worker_lost(err: BaseException) -> bool:
  """Whether a job failed because a local worker process died: FnApiRunner
  then sees the worker's data channel close (a real error inside a worker
  comes back as that worker's traceback instead). The text is all there is
  to test: Beam raises a bare RuntimeError('Channel closed prematurely.'),
  no type or attribute of its own (apache_beam/runners/worker/
  data_plane.py, _GrpcDataChannel.input_elements)."""
  while err is not None:
    if isinstance(err, RuntimeError) and \
        'Channel closed prematurely' in str(err):
      return True
    err = err.__cause__ or err.__context__
  return False


def _restarts(options: PipelineOptions) -> int:
  """Job restarts we own: only local worker processes can die on their own
  while the launcher lives (one process dies whole; a cluster restarts its
  own tasks)."""
  direct = options.view_as(DirectOptions)
  if (is_direct(options.view_as(StandardOptions).runner) and
      direct.direct_running_mode == 'multi_processing'):
    return max(0, options.view_as(EvPredictOptions).max_restarts)
  return 0


def _read_summary(job) -> dict:
  with FileSystems.open(job.paths.summary) as f:
    summary = json.loads(f.read().decode('utf-8'))
  summary['max_error_ratio'] = job.max_error_ratio
  # The files in place are the ones counted: the same sizes.
  for path, key in ((job.paths.result, 'result_bytes'),
                    (job.paths.errors, 'error_bytes')):
    size = write.file_size(path)
    if size != summary.get(key):
      _LOG.error('ev-predict: %s holds %d bytes, %s were written', path, size,
                 summary.get(key))
      summary['accounting_ok'] = False
  return summary


# ------------------------------------------------------------ signals, cleanup


class _State:
  """What a signal handler needs: the running job and whether a commit (or
  clean-up) must finish before the process may go."""
  job = None
  resumption = None
  committed = False
  critical = 0
  pending: Optional[int] = None
  dying = False      # an interrupt's clean-up runs (on its own thread)


_state = _State()


@contextlib.contextmanager
def _deferred_signals():
  _wait_if_dying()
  _state.critical += 1
  try:
    yield
  finally:
    _state.critical -= 1
  if not _state.critical and _state.pending:
    _ignore_signals()
    _interrupted(_state.pending)


@contextlib.contextmanager
def _handling_signals():
  previous = {sig: signal.signal(sig, _on_signal)
              for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def _on_signal(signum, _frame) -> None:
  if _state.critical:
    _state.pending = signum
    return
  # Nothing here may take a lock: a signal lands between any two bytecodes
  # of the main thread, which may hold one (seen: inside
  # ThreadPoolExecutor.submit, whose module lock the clean-up's own pool
  # then waited for forever). The clean-up runs on a thread of its own
  # (started without threading's locks) while this one goes on and lets go
  # of what it holds; it stops before any commit (_wait_if_dying).
  _ignore_signals()
  _state.dying = True
  _thread.start_new_thread(_interrupted, (signum,))


def _ignore_signals() -> None:
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)


def _wait_if_dying() -> None:
  """The main thread, once an interrupt's clean-up runs: it must neither
  commit nor report the job's end; the clean-up exits the process."""
  while _state.dying:
    time.sleep(1)


def _interrupted(signum: int) -> None:
  """Stops the workers, removes this run's shards and staged files, says
  so in one line and exits 128 + signum, without Beam's tracebacks."""
  # Beam's threads report the workers we stop with tracebacks: not news.
  threading.excepthook = lambda _args: None
  logging.disable(logging.CRITICAL)
  stop_workers()
  if _state.job is not None:
    write.remove_staged(_state.job.paths)
  name = signal.Signals(signum).name
  if _state.committed:
    said = 'results were committed before it'
  else:
    said = ('earlier output files left as they were; rerun the same command '
            'to continue' + _committed_so_far() +
            ' (-Dresume=false starts over)')
  sys.stderr.write(f'ev-predict: interrupted by {name}; {said}\n')
  sys.stderr.flush()
  os._exit(128 + signum)  # pylint: disable=protected-access


def _committed_so_far() -> str:
  r = _state.resumption
  if r is None or '://' in r.folder.root:
    return ''  # no remote listing inside a signal handler
  try:
    lines = sum(d.lines for d in state.committed(r.folder, r.plan,
                                                 threads=1).values())
  except Exception:  # pylint: disable=broad-except
    return ''
  return f' ({lines} of {r.plan.total} lines are committed)'


def process_table() -> Dict[int, Tuple[int, bytes]]:
  """{pid: (ppid, cmdline bytes)} of every process that can be read."""
  table = {}
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/stat', 'rb') as f:
        ppid = int(f.read().rsplit(b')', 1)[1].split()[1])
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        cmd = f.read()
    except (OSError, ValueError, IndexError):
      continue
    table[int(pid)] = (ppid, cmd)
  return table


def stop_workers() -> List[int]:
  """SIGKILLs this process's local SDK worker processes (and their shell)."""
  table = process_table()
  ours, frontier = set(), {os.getpid()}
  while frontier:
    frontier = {p for p, (pp, _) in table.items()
                if pp in frontier and p not in ours}
    ours |= frontier
  killed = [p for p in ours if b'sdk_worker_main' in table[p][1]]
  for pid in killed:
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass
  return killed


# ------------------------------------------------------------ the command


def launch(argv: List[str]) -> int:
  """Runs a job as a command: exit code 0, 1 (records do not add up, or too
  many failed), 2 (usage: nothing ran), 3 (the job failed), 128 + signal."""
  redact.install()
  level, _ = logs.level_of(argv)
  logs.configure(level)
  argv = logs.with_harness_level(argv, level)
  try:
    with _handling_signals():
      summary = run(argv, started_at=process_started_at())
  except UsageError as e:
    _wait_if_dying()
    sys.stderr.write(f'ev-predict: error: {e}\n')
    return 2
  except Exception as e:  # pylint: disable=broad-except
    # An interrupt's stopped workers fail the job here: not the news.
    _wait_if_dying()
    # The one line below is the report; the traceback is for -v/debugging.
    _LOG.debug('ev-predict: job failed', exc_info=True)
    sys.stderr.write(f'ev-predict: job failed: {job_error(e)}\n')
    return 3
  _wait_if_dying()
  print_summary(summary)
  if not summary['accounting_ok']:
    sys.stderr.write('ev-predict: error: records do not match input lines\n')
    return 1
  if summary['error_ratio'] > summary['max_error_ratio']:
    sys.stderr.write(
        f'ev-predict: error: {summary["error_ratio"]:.2%} of lines failed, '
        f'above -Dmax_error_ratio={summary["max_error_ratio"]}\n')
    return 1
  return 0


def job_error(e: BaseException) -> str:
  """One line for an error: a worker's error arrives as a RuntimeError
  holding its whole traceback, whose last line names the cause."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  if len(lines) > 1:
    return lines[-1]
  return f'{type(e).__name__}: {lines[0] if lines else ""}'.rstrip(': ')


def print_summary(summary: Mapping, stream=None) -> None:
  stream = sys.stderr if stream is None else stream
  kinds = ', '.join(f'{k} {v}' for k, v in summary['failed_by_kind'].items())
  attempts = summary.get('attempts', 1)
  restarted = (f'; {attempts} attempts (a worker process was lost)'
               if attempts > 1 else '')
  resumed = summary.get('resumed_lines', 0)
  lines = (f'{summary["lines_read"]} lines ({resumed} resumed, '
           f'{summary.get("processed_lines", 0)} processed now)'
           if resumed else f'{summary["lines_read"]} lines read')
  timing = (f'{summary.get("processing_images_per_second", 0)} images/s '
            f'over {summary.get("processing_seconds", 0)} s of processing, '
            f'{summary["images_per_second"]} images/s over '
            f'{summary["wall_seconds"]} s wall (start-up included)')
  stream.write(
      f'ev-predict: {lines}, '
      f'{summary["succeeded"]} succeeded, {summary["failed"]} failed'
      f'{" (" + kinds + ")" if kinds else ""}; {timing}; backend '
      f'{", ".join(summary.get("backends") or {}) or "none"}'
      f'{restarted}\n'
      f'ev-predict: results {summary["result_file"]}, '
      f'errors {summary["error_file"]}'
      f'{", report " + summary["report_file"] if summary.get("report_file") else ""}'
      '\n')
