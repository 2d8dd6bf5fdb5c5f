"""What a job prints: ev-predict's own lines (progress, the summary, one-line
errors) always; the libraries' (TensorFlow, OpenVINO, Beam, gRPC, Python
warnings) from -Dlog_level on (-v: info, -vv: debug; by default error, which
leaves nothing of theirs in a normal run).

Each source is quieted where it starts, since most of it comes before any
code of ours runs:

- Python logging and warnings in this process: configure(), before
  apache_beam is imported. Its import logs "apitools not found" on the root
  logger, which would install Python's default handler for good.
- C++ (TensorFlow's absl and tsl logging, gRPC): environment variables read
  when those libraries load (set_environment()). TensorFlow's import prints
  absl lines before absl::InitializeLog(), which obey no variable, so that
  one import runs with fd 2 captured and what is not that chatter is put
  back (quiet_import()).
- Local SDK worker processes (DirectRunner's multi_processing) inherit the
  environment only: set_environment() puts worker_site/ first on PYTHONPATH,
  whose sitecustomize calls start_worker() before Beam loads there. Their
  stderr is this process's. The logs they also send to the runner (Beam's
  local job service logs each again as "Worker: ...") are dropped here.

Standard library and the tokenizer only: pipeline/cli.py calls it before
Beam or TensorFlow loads.
"""
import contextlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from typing import List, MutableMapping, Optional, Tuple

from ev_predict.pipeline.commandline import (parse_command_line,
                                             split_command_line)
from ev_predict.pipeline.parameters import PARAMETERS

LEVELS: Tuple[str, ...] = PARAMETERS['log_level'].choices
DEFAULT: str = PARAMETERS['log_level'].default
# The level, for the worker processes of this launcher.
ENV = 'EV_PREDICT_LOG_LEVEL'
PREFIX = 'ev-predict:'
# Put first on worker processes' PYTHONPATH: its sitecustomize.py.
WORKER_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'worker_site')
HARNESS_FLAG = '--default_sdk_harness_log_level'

_PYTHON = {'error': logging.ERROR, 'warning': logging.WARNING,
           'info': logging.INFO, 'debug': logging.DEBUG}
# 'WARN', not 'WARNING': Beam's Java runners (Flink) read this option as their
# LogLevel enum; Python reads either.
_HARNESS = {'error': 'ERROR', 'warning': 'WARN', 'info': 'INFO',
            'debug': 'DEBUG'}
# TF_CPP_MIN_LOG_LEVEL hides severities below it (0 INFO .. 3 FATAL): at
# 'error' even its ERRORs go (a CPU job's "failed call to cuInit").
_TF_CPP = {'error': '3', 'warning': '1', 'info': '0', 'debug': '0'}
_GRPC = {'error': 'NONE', 'warning': 'ERROR', 'info': 'INFO',
         'debug': 'DEBUG'}
# Our own loggers: 'ev_predict' (the launcher's lines) at INFO, the stages'
# at WARNING unless asked for more.
_OURS = 'ev_predict'
_STAGES = 'ev_predict.transforms'
# Beam's local job service logs each worker log entry again, as text.
_RELAY = 'apache_beam.runners.portability.local_job_service'


def level_of(argv: List[str]) -> Tuple[str, bool]:
  """(the level argv asks for, whether it asks); a level that is not one
  reads as the default (the job refuses it: exit 2)."""
  params, _ = parse_command_line(argv, errors=[])
  given = params.get('log_level')
  return (given, True) if given in LEVELS else (DEFAULT, False)


def setup(argv: List[str]) -> str:
  """Everything for argv's level in this process, before Beam and
  TensorFlow are imported: the environment, then logging and warnings."""
  level, explicit = level_of(argv)
  set_environment(level, explicit)
  configure(level)
  return level


# ------------------------------------------------------------ environment


def set_environment(level: str, explicit: bool,
                    environ: Optional[MutableMapping[str, str]] = None
                    ) -> None:
  """What TensorFlow, gRPC and worker processes read from the environment.
  A level asked for sets it; the default leaves a variable the user set."""
  environ = os.environ if environ is None else environ
  environ[ENV] = level
  put = environ.__setitem__ if explicit else environ.setdefault
  put('TF_CPP_MIN_LOG_LEVEL', _TF_CPP[level])
  put('GRPC_VERBOSITY', _GRPC[level])
  # First, so that its sitecustomize is the one Python finds (it runs the
  # next one).
  paths = [p for p in environ.get('PYTHONPATH', '').split(os.pathsep)
           if p and p != WORKER_SITE]
  environ['PYTHONPATH'] = os.pathsep.join([WORKER_SITE] + paths)


def with_harness_level(argv: List[str], level: str) -> List[str]:
  """argv, with the SDK workers' log level unless it names one."""
  args = split_command_line(argv)
  _, beam_args = parse_command_line(args, errors=[])
  if any(a.split('=', 1)[0] == HARNESS_FLAG for a in beam_args):
    return list(argv)
  return args + [f'{HARNESS_FLAG}={_HARNESS[level]}']


# ------------------------------------------------------------ Python logging


class _Stderr(logging.StreamHandler):
  """Writes to whatever sys.stderr is at the time (a test's capture too)."""

  def __init__(self):
    super().__init__(sys.stderr)

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, _value):
    pass


def _is_ours(record: logging.LogRecord) -> bool:
  return record.name == _OURS or record.name.startswith(_OURS + '.')


class _Gate(logging.Filter):
  """Our records as their loggers' levels let them through; a library's from
  the library level on (worker processes: whatever Beam set the root to)."""

  def __init__(self, library_level: int):
    super().__init__()
    self.library_level = library_level

  def filter(self, record: logging.LogRecord) -> bool:
    if _is_ours(record):
      return True
    if record.name == _RELAY and record.msg == 'Worker: %s':
      return False  # the worker printed it itself
    return record.levelno >= self.library_level


class _Lines(logging.Formatter):
  """Our lines start with 'ev-predict:'; a library's as Python's default
  handler writes them (LEVEL:logger:message). Below debug a record is one
  line: a message that holds a traceback (Beam's worker errors do) or comes
  with one is cut to its first and last lines, the last naming the cause."""

  def __init__(self, tracebacks: bool):
    super().__init__()
    self.tracebacks = tracebacks

  def format(self, record: logging.LogRecord) -> str:
    message = record.getMessage()
    trace = record.exc_text  # set by transforms/redact.py when it cleaned one
    if record.exc_info and record.exc_info[0] is not None:
      trace = self.formatException(record.exc_info)
    if record.stack_info and self.tracebacks:
      trace = '\n'.join(filter(None, [trace,
                                      self.formatStack(record.stack_info)]))
    text = f'{message}\n{trace}' if trace else message
    if not self.tracebacks:
      text = one_line(text)
    if _is_ours(record):
      return text if text.startswith(PREFIX) else f'{PREFIX} {text}'
    return f'{record.levelname}:{record.name}:{text}'


def one_line(text: str) -> str:
  """A text of several lines as its first and its last (a traceback's last
  line names the exception)."""
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if len(lines) <= 1:
    return lines[0] if lines else ''
  return f'{lines[0]} ... {lines[-1]}'


def _install(level: str, library_level: int) -> None:
  """Our one handler on the root logger (the Python default handler a
  library installed by logging too early goes), and our loggers' levels."""
  root = logging.getLogger()
  for handler in list(root.handlers):
    if isinstance(handler, _Stderr) or (
        type(handler) is logging.StreamHandler and  # pylint: disable=unidiomatic-typecheck
        handler.stream in (sys.stderr, sys.__stderr__)):
      root.removeHandler(handler)
  handler = _Stderr()
  handler.addFilter(_Gate(library_level))
  handler.setFormatter(_Lines(tracebacks=level == 'debug'))
  root.addHandler(handler)
  logging.getLogger(_OURS).setLevel(
      logging.DEBUG if level == 'debug' else logging.INFO)
  logging.getLogger(_STAGES).setLevel(min(_PYTHON[level], logging.WARNING))


def _warnings(level: str) -> None:
  """Python warnings: none at 'error'; from 'warning' on, Python's defaults,
  through logging (py.warnings). A -W or PYTHONWARNINGS of the user's
  wins."""
  if sys.warnoptions:
    return
  if level == 'error':
    warnings.simplefilter('ignore')
  else:
    warnings.simplefilter('default')
    logging.captureWarnings(True)


def configure(level: str) -> None:
  """This process: logging, warnings and TensorFlow's import for level."""
  _install(level, _PYTHON[level])
  logging.getLogger().setLevel(_PYTHON[level])
  _warnings(level)
  quiet_import(level)


def start_worker(environ: MutableMapping[str, str]) -> None:
  """A local SDK worker process, before Beam is imported (worker_site/):
  as configure(), but libraries from the SDK harness's level on, which Beam
  sets on the root logger (an explicit --default_sdk_harness_log_level
  wins, as it does on a cluster)."""
  level = environ.get(ENV, DEFAULT)
  level = level if level in LEVELS else DEFAULT
  harness = _harness_level(environ)
  _install(level, _PYTHON[level] if harness is None else harness)
  _warnings(level)
  quiet_import(level)
  if level != 'debug' and not isinstance(sys.stderr, _NoTracebacks):
    sys.stderr = _NoTracebacks(sys.stderr)


class _NoTracebacks:
  """A worker process's sys.stderr below debug. Beam's SDK harness prints
  the traceback of each failed bundle there, besides logging it (as one
  line, here) and sending it to the runner, which fails the job: the
  launcher reports that in one line."""

  def __init__(self, stream):
    self._stream = stream
    self._skip_newline = False

  def write(self, text):
    skip, self._skip_newline = self._skip_newline, False
    if text.startswith('Traceback (most recent call last):'):
      self._skip_newline = True  # print()'s end, written next
      return len(text)
    if skip and text == '\n':
      return len(text)
    return self._stream.write(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)


def _harness_level(environ) -> Optional[int]:
  """default_sdk_harness_log_level from the options Beam hands a worker."""
  try:
    options = json.loads(environ.get('PIPELINE_OPTIONS') or '{}')
  except ValueError:
    return None
  options = options.get('options', options)
  value = options.get('default_sdk_harness_log_level', options.get(
      'beam:option:default_sdk_harness_log_level:v1'))
  if not isinstance(value, str):
    return None
  if value.isdecimal():
    return int(value)
  number = logging.getLevelName(value.upper())
  return number if isinstance(number, int) else None


# ------------------------------------------------------------ native output

# absl's (and glog's) line head: severity, MMDD, time (before absl's set-up
# "00:00:<epoch seconds>"), thread, file:line].
_ABSL = re.compile(rb'([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] ')
# tsl's older head: date, time, severity, file:line].
_TSL = re.compile(rb'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) \S+:\d+\] ')
_ABSL_EARLY = b'WARNING: All log messages before absl::InitializeLog() is ' \
    b'called are written to STDERR'
# Severities dropped from an import's output, per level.
_DROPPED = {'error': b'IWE', 'warning': b'I', 'info': b'', 'debug': b''}
# Imports that print C++ chatter before anything can configure it.
NATIVE = ('tensorflow',)


def is_chatter(line: bytes, level: str) -> bool:
  """Whether a line a library's C++ printed is below level."""
  dropped = _DROPPED[level]
  if not dropped:
    return False
  if line.startswith(_ABSL_EARLY):
    return True
  match = _ABSL.match(line) or _TSL.match(line)
  return bool(match) and match.group(1) in dropped


_capture_lock = threading.Lock()


@contextlib.contextmanager
def native_output(level: str):
  """Runs the block with fd 2 captured, then writes back what is not
  chatter below level (a traceback, a fatal line, other threads' lines)."""
  if not _DROPPED[level]:
    yield
    return
  with _capture_lock:
    with contextlib.suppress(Exception):
      sys.stderr.flush()
    try:
      saved = os.dup(2)
    except OSError:  # no stderr at all
      saved = None
    if saved is None:
      yield
      return
    with tempfile.TemporaryFile() as captured:
      os.dup2(captured.fileno(), 2)
      try:
        yield
      finally:
        with contextlib.suppress(Exception):
          sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        kept = b''.join(l for l in captured if not is_chatter(l, level))
        if kept:
          os.write(2, kept)


class _QuietImport(importlib.abc.MetaPathFinder):
  """Runs the import of NATIVE modules inside native_output(level)."""

  def __init__(self, level: str):
    self.level = level

  def find_spec(self, name, path=None, target=None):
    if name not in NATIVE or path is not None:
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path, target)
    if spec is None or spec.loader is None or \
        not hasattr(spec.loader, 'exec_module'):
      return None
    run = spec.loader.exec_module
    level = self.level

    def exec_module(module):
      with native_output(level):
        run(module)

    spec.loader.exec_module = exec_module
    return spec


def quiet_import(level: str) -> None:
  """From now on, TensorFlow's import in this process prints only what
  level shows (once per process; a later call changes the level)."""
  for finder in sys.meta_path:
    if isinstance(finder, _QuietImport):
      finder.level = level
      return
  # Just before the finder it stands in for: others put first keep their
  # turn.
  where = next((i for i, f in enumerate(sys.meta_path)
                if f is importlib.machinery.PathFinder), len(sys.meta_path))
  sys.meta_path.insert(where, _QuietImport(level))
