"""The pipeline graph. build_pipeline() reads like a table of contents; plan()
resolves and validates everything the graph needs before any work starts
(which chunks of the list are still to do is pipeline/resume.py's)."""
import dataclasses
import fnmatch
import functools
import os
import posixpath
import stat
import time
import urllib.parse
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import combiners

from ev_predict.pipeline import parameters
from ev_predict.pipeline.commandline import UsageError
from ev_predict.pipeline.options import EvPredictOptions, is_direct
from ev_predict.transforms import (access, backends, inference, modelcache,
                                   read, state, storage)
from ev_predict.transforms import table as table_lib
from ev_predict.transforms.oss.filesystem import OssOptions
from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import DecodeConfig, prepare_record
from ev_predict.transforms.fetch import FetchConfig, Fetcher, needs_fetch
from ev_predict.transforms.format import MULTILABEL
from ev_predict.transforms.parallel import BACKGROUND_NICE, ThreadedMap
from ev_predict.transforms.write import (CommitChunks, OutputPaths,
                                         launcher_identity)


@dataclasses.dataclass(frozen=True)
class JobPlan:
  """Everything resolved on the launcher, so workers do no guessing."""
  run_id: str
  started_at: float
  values: parameters.Values  # the parameters, typed; defaults filled in
  spec: inference.ModelSpec
  labels: Optional[List[str]]
  scaling: inference.PixelScaling
  batch_size: int
  paths: OutputPaths
  fetch: FetchConfig
  decode: DecodeConfig
  cores_per_worker: int
  decode_threads: int
  accelerator: Optional[str]
  pool_nice: int = 0
  # Who launched the job (write.launcher_identity()): local workers exit
  # when it is gone, a later run knows its leftovers from a live run's.
  launcher: Optional[dict] = None
  # A multi-label job's thresholds (one, or one per class); None: classifier.
  thresholds: Any = None
  # A table job's two ends (transforms/table.py); None: a file-list job.
  table: Optional[table_lib.TableJob] = None

  @property
  def list_path(self) -> str:
    """The list the job runs over: the user's, or a table's in the state
    folder."""
    return self.paths.folder.table_list if self.table else \
        self.values.input_oss_file

  @property
  def input_name(self) -> str:
    """The input as the user named it."""
    return self.values.input_table or self.values.input_oss_file

  @property
  def workers(self) -> int:
    return self.values.num_worker

  @property
  def max_error_ratio(self) -> float:
    return self.values.max_error_ratio


def _given(options) -> Dict[str, str]:
  """The job's parameters as strings, as a user would have written them."""
  o, oss = options.view_as(EvPredictOptions), options.view_as(OssOptions)
  params = {}
  for p in parameters.TABLE:
    value = getattr(oss if p.group == 'oss' else o, p.name)
    if value is not None:
      params[p.name] = str(value)
  return params


def check_parameters(params: Mapping[str, str]) -> List[str]:
  """Every check of a job's parameters that needs no file, model or
  network: the table's (required, types, choices, bounds), then those
  between parameters. One message per problem. plan() and `ev-predict
  submit` both use it."""
  return _validated(params)[1]


def _validated(params: Mapping[str, str]):
  values, problems = parameters.parse(params)
  return values, list(problems.values()) + _joint_problems(values, problems)


def _joint_problems(values, problems: Mapping[str, str]) -> List[str]:
  """Checks of one parameter against others; one already refused on its own
  is not judged again."""
  errors = []
  if values.pixel_scale == 'mean_std' and \
      'pixel_mean' not in problems and 'pixel_std' not in problems and (
          len(values.pixel_mean) not in (1, 3) or
          len(values.pixel_std) not in (1, 3) or 0 in values.pixel_std):
    errors.append('-Dpixel_scale=mean_std needs -Dpixel_mean and '
                  '-Dpixel_std with 1 or 3 values (std non-zero)')
  if values.threshold_file and values.model_type != MULTILABEL:
    errors.append('-Dthreshold_file is for -Dmodel_type=multilabel_classifier'
                  f' (this job is {values.model_type})')
  errors += _table_problems(values, problems)
  try:
    allow = access.parse_allow_list(values.buckets)
  except ValueError as e:
    return errors + [f'-Dbuckets: {e}']
  for name in ('model_path', 'input_oss_file', 'output_oss_file',
               'error_oss_file', 'label_map_path', 'input_table',
               'output_table', 'error_table'):
    path = getattr(values, name)
    try:
      inside = not path or access.allowed(path, allow,
                                          folder=name == 'model_path')
    except ValueError as e:
      errors.append(f'-D{name}: {e}')
      continue
    if not inside:
      errors.append(f'-D{name}={path} is outside -Dbuckets '
                    f'({", ".join(allow)})')
  return errors


def reserved_columns(values) -> List[str]:
  return [c.strip() for c in (values.reserved_columns or '').split(',')
          if c.strip()]


def _table_problems(values, problems: Mapping[str, str]) -> List[str]:
  """A table in, a table out; a list in, a file out."""
  if 'input_oss_file' in problems or 'output_oss_file' in problems:
    return []  # neither input (or output) given: said already
  errors = []
  if values.input_table:
    for name in ('input_oss_file', 'output_oss_file', 'error_oss_file'):
      if getattr(values, name):
        errors.append(f'-D{name} does not go with -Dinput_table (a table '
                      'job writes -Doutput_table and -Derror_table)')
    reserved = reserved_columns(values)
    twice = sorted({c for c in reserved if reserved.count(c) > 1})
    if twice:
      errors.append(f'-Dreserved_columns names {", ".join(twice)} twice')
    if not values.result_column or values.result_column in reserved:
      errors.append(f'-Dresult_column={values.result_column} must be a '
                    'name that is not a reserved column')
    clash = [c for c in ('error', 'message') if c in reserved]
    if clash:
      errors.append(f'-Dreserved_columns: {", ".join(clash)} is a column '
                    'of the error table; rename it in the input')
    return errors
  for name in ('output_table', 'error_table', 'reserved_columns'):
    if getattr(values, name):
      errors.append(f'-D{name} goes with -Dinput_table (a file list is '
                    'written to -Doutput_oss_file)')
  return errors


def plan(options: EvPredictOptions) -> JobPlan:
  # The launcher reads the model and file list before a Pipeline exists (and
  # sets them): file systems must see this job's options (OSS endpoint).
  FileSystems.set_options(options)
  v, errors = _validated(_given(options))
  if errors:
    raise UsageError('; '.join(errors))
  run_id = time.strftime('%Y%m%d-%H%M%S') + '-' + uuid.uuid4().hex[:8]
  table = _table_job(v) if v.input_table else None
  paths = _checked_paths(v, run_id, table)
  spec, labels = _inspect_model(v)
  thresholds = None
  if v.model_type == MULTILABEL:
    try:
      thresholds = inference.load_thresholds(v.threshold_file, labels,
                                             v.threshold)
    except inference.ModelError as e:
      raise UsageError(str(e)) from e
  cores = os.cpu_count() or 1
  per_worker = max(1, v.cpuRequired // 100) if v.cpuRequired else \
      max(1, cores // v.num_worker)
  return JobPlan(
      run_id=run_id, started_at=time.time(), values=v, spec=spec,
      labels=labels,
      scaling=inference.PixelScaling(v.pixel_scale, v.pixel_mean,
                                     v.pixel_std),
      # Measured here (bench/run.py, 2 cores, MobileNetV2): OpenVINO is as
      # fast or faster at batch 8 than 16-64, end to end too (smaller
      # batches interleave with decoding); TensorFlow is flat from 8 to 64.
      # Larger batches only add padding and latency. Scale with the cores.
      batch_size=v.batch_size or backends.default_batch_size(per_worker),
      paths=paths,
      fetch=FetchConfig(read_timeout=v.fetch_timeout, retries=v.fetch_retries,
                        max_bytes=v.max_image_bytes,
                        pool_size=v.fetch_threads,
                        allowed_prefixes=access.parse_allow_list(v.buckets),
                        block_private_networks=v.block_private_networks,
                        allow_local_files=v.allow_local_files),
      decode=DecodeConfig(size=spec.image_size if spec.width else (0, 0),
                          max_pixels=v.max_image_pixels, draft=v.jpeg_draft),
      cores_per_worker=per_worker,
      # One more than the cores: low-priority decodes run only in the gaps
      # the model leaves, and a spare keeps a gap filled while another waits
      # for the GIL (measured: docs/performance.md, "Levers").
      decode_threads=v.decode_threads or per_worker + 1,
      accelerator=(f'type:{v.gpu_type};count:{-(-v.gpuRequired // 100)};'
                   'install-nvidia-driver') if v.gpuRequired > 0 else None,
      pool_nice=BACKGROUND_NICE if v.decode_priority == 'low' else 0,
      launcher=launcher_identity(),
      thresholds=thresholds,
      table=table,
  )


def _table_job(v) -> table_lib.TableJob:
  """The input table's schema checked, its files found, before any work."""
  try:
    table_lib.table_format(v.input_table)   # odps:// says what to do
    _check_scheme(v.input_table, 'input_table')
    return table_lib.TableJob.plan(
        v.input_table, v.image_col, v.image_type, reserved_columns(v),
        v.result_column, local_spelling(v.output_table, 'output_table'),
        local_spelling(v.error_table, 'error_table'))
  except table_lib.TableError as e:
    raise UsageError(str(e)) from e


_TABLE_NAMES = ('-Doutput_table', '-Derror_table', 'the summary file')


def _checked_paths(v, run_id: str,
                   table: Optional[table_lib.TableJob] = None) -> OutputPaths:
  """The job's files, each checked before any work: the list readable,
  the model's scheme known, the outputs the job's own to replace."""
  _check_scheme(v.model_path, 'model_path')
  if table:
    paths = OutputPaths.for_run(table.output, table.errors, run_id)
    pattern = canonical_path(v.input_table)
    for name, path in zip(_TABLE_NAMES, paths.targets):
      if fnmatch.fnmatchcase(canonical_path(path), pattern):
        raise UsageError(f'{name}={path} matches -Dinput_table='
                         f'{v.input_table}: a rerun would read it as input; '
                         'write it elsewhere')
    for path in table.files:
      check_output_paths(path, v.model_path, paths, '-Dinput_table',
                         _TABLE_NAMES)
    _check_report_path(v, paths)
    for path in paths.targets:
      _check_writable(path)
    return paths
  _check_readable(v.input_oss_file, 'input_oss_file')
  paths = OutputPaths.for_run(
      local_spelling(v.output_oss_file, 'output_oss_file'),
      local_spelling(v.error_oss_file, 'error_oss_file'), run_id)
  check_output_paths(v.input_oss_file, v.model_path, paths)
  _check_report_path(v, paths)
  for path in paths.targets:
    _check_writable(path)
  return paths


def _check_report_path(v, paths: OutputPaths) -> None:
  """The report is written after the commit: a directory where it goes is
  refused now, not found then."""
  target = paths.result + '.report.html'
  if v.report and _is_directory(target):
    raise UsageError(f'{target} (the run report) is a directory; move it '
                     'away or give -Dreport=false')


def _inspect_model(v):
  """The model's signature and class names, as this job will use them."""
  try:
    spec = inference.inspect_saved_model(v.model_path, v.signature_name,
                                         v.image_size, v.output_key)
    labels = inference.load_labels(v.model_path, v.label_map_path,
                                   spec.num_classes)
  except inference.ModelError as e:
    raise UsageError(str(e)) from e
  if v.backend == backends.OPENVINO and spec.encoded_input:
    raise UsageError('-Dbackend=openvino cannot run a model that takes '
                     'encoded image bytes; use auto or tensorflow')
  return spec, labels


_OUTPUT_NAMES = ('-Doutput_oss_file', '-Derror_oss_file', 'the summary file')


def check_output_paths(input_path: str, model_path: str,
                       paths: OutputPaths, input_name: str = '-Dinput_oss_file',
                       output_names: Sequence[str] = _OUTPUT_NAMES) -> None:
  """A job may only replace its own files: refuses an output that is a
  directory, two of input/result/errors/summary that are one file, and an
  output inside the model."""
  for name, path in zip(output_names, paths.targets):
    _check_scheme(path, name.lstrip('-D'))
    if _is_directory(path):
      raise UsageError(f'{name}={path} is a directory (or a folder with '
                       'objects under it); give a file path')
    if '://' not in path and os.path.exists(path) and \
        not stat.S_ISREG(os.stat(path).st_mode):
      # A FIFO or a device (/dev/null) would be replaced by a regular file.
      raise UsageError(f'{name}={path} exists and is not a regular file')
  seen = {}
  for name, path in zip((input_name,) + tuple(output_names),
                        (input_path,) + paths.targets):
    key = canonical_path(path)
    if key in seen:
      raise UsageError(f'{seen[key]} and {name} are the same file ({path}); '
                       'each needs its own path')
    seen[key] = name
  model = canonical_path(model_path).rstrip('/') + '/'
  for name, path in zip(output_names, paths.targets):
    if canonical_path(path).startswith(model):
      raise UsageError(f'{name}={path} is inside the model directory '
                       f'{model_path}')


def local_spelling(path: Optional[str], name: str) -> Optional[str]:
  """A local output path with its folder resolved (links, '..'): every later
  step, Beam's included, then names the same file the kernel would, and the
  same-file checks compare what will really be written."""
  if not path or '://' in path:
    return path
  folder, base = os.path.split(path)
  if base in ('', '.', '..'):
    raise UsageError(f'-D{name}={path} is a directory; give a file path')
  return os.path.join(os.path.realpath(folder or '.'), base)


def _check_scheme(path: str, name: str) -> None:
  if '://' in path and not path.startswith('file://'):
    try:
      FileSystems.get_filesystem(path)
    except ValueError as e:
      raise UsageError(f'-D{name}={path}: no file system for the scheme '
                       f'{path.split("://", 1)[0]!r}') from e


def canonical_path(path: str) -> str:
  """One spelling per file: local paths absolute with links resolved
  (file:// URLs too), remote keys without '.', '..' or doubled slashes."""
  path = path.strip()
  if path.startswith('file://'):
    path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
  if '://' not in path:
    # realpath, not abspath first: 'link/..' is the link target's parent.
    return os.path.realpath(path)
  scheme, _, rest = path.partition('://')
  bucket, _, key = rest.partition('/')
  key = posixpath.normpath('/' + key).lstrip('/') if key else ''
  return f'{scheme}://{bucket}/{key}'


def _is_directory(path: str) -> bool:
  if '://' not in path:
    return path.endswith(('/', os.sep)) or os.path.isdir(path)
  if path.endswith('/') or not path.partition('://')[2].partition('/')[2]:
    return True
  try:
    return storage.for_path(path).has_children(path)
  except storage.Unsupported:
    return False  # plan() names the scheme that no file system serves
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f'cannot check output path {path} ({_reason(e)})') from e


def _check_readable(path: str, name: str) -> None:
  try:
    with FileSystems.open(path) as f:
      f.read(1)
  except storage.ConfigError as e:
    raise UsageError(str(e)) from e
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f'-D{name}: cannot read {path} ({_reason(e)})') from e
  _check_complete_stream(path, name)


# Beam's readers stop quietly at the end of a truncated compressed stream:
# the lines after the cut would be lost with accounting_ok true (the count is
# of what was read). Python's own decoders raise there.
_DECOMPRESSORS = {'.gz': 'gzip', '.gzip': 'gzip', '.bz2': 'bz2',
                  '.xz': 'lzma', '.lzma': 'lzma'}


def _check_complete_stream(path: str, name: str) -> None:
  """A compressed file list is read to its end once before any work: one
  streaming pass, memory flat."""
  ext = os.path.splitext(path.lower())[1]
  module = _DECOMPRESSORS.get(ext)
  if not module:
    return
  import importlib  # pylint: disable=import-outside-toplevel
  opener = importlib.import_module(module).open
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as raw, \
        opener(raw, 'rb') as f:
      while f.read(1 << 20):
        pass
  except (EOFError, OSError) as e:
    raise UsageError(f'-D{name}: {path} is not a complete {module} stream '
                     f'({type(e).__name__}: {e}); lines would be lost') from e


def _reason(e: BaseException) -> str:
  # The type, and the reason only of an OSError: another library's message
  # may quote a signed request.
  cause = storage.cause_of(e)
  return type(cause).__name__ + (f': {storage.reason_of(cause)}' if isinstance(
      cause, OSError) else '')


def _check_writable(path: str) -> None:
  if '://' in path:
    return  # remote stores are checked when the first shard is written
  parent = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise UsageError(f'cannot create output folder {parent}: {e.strerror}') \
        from e
  if not os.access(parent, os.W_OK):
    raise UsageError(f'output folder {parent} is not writable')


def _make_fetcher(config: FetchConfig, metrics):
  return Fetcher(config, attempts=metrics.attempts)


def _make_preparer(config: DecodeConfig, encoded_input: bool, metrics):
  del metrics  # a decode reports nothing the runner does not count
  return functools.partial(prepare_record, config=config,
                           encoded_input=encoded_input)


def build_pipeline(p: beam.Pipeline, options: EvPredictOptions,
                   job: Optional[JobPlan] = None,
                   chunks: Optional[state.ListPlan] = None,
                   todo: Optional[Sequence[int]] = None):
  """Adds the whole job to p: the chunks in todo are read, classified and
  committed to the job's state folder (transforms/state.py); the launcher
  then joins the committed chunks into the output files. Returns the
  PCollection holding how many chunks this run committed.

  Every record, failed or not, flows through every stage (each passes failed
  records through), so the job is one fused, streaming stage after the
  chunks are spread: no Partition/Flatten that a local runner would
  materialize in memory, and every record of a chunk reaches the sink in
  the bundle that read it.

  Without job, chunks and todo (a graph to inspect) the job is planned and
  every chunk of a fresh scan is to do."""
  job = job or plan(options)
  if chunks is None and job.table:
    chunks = state.ListPlan(1, (), ())  # no list made yet: an empty graph
  elif chunks is None:
    chunks = state.scan(job.list_path, state.chunk_lines_for(
        state.count_lines(job.list_path), job.workers, job.batch_size))
  todo = range(chunks.chunks) if todo is None else todo
  chunk_ids = p | 'Chunks' >> beam.Create(list(todo))
  if _needs_distribution(options, job):
    # Spread chunks over workers (a single local worker skips it).
    chunk_ids = chunk_ids | 'Distribute' >> beam.Reshuffle()
  handler = inference.SavedModelHandler(
      job.values.model_path, job.spec, job.scaling, job.batch_size,
      intra_op_threads=job.cores_per_worker if job.workers > 1 else None,
      local_model_path=modelcache.local_model_dir,
      backend=job.values.backend, precision=job.values.precision,
      accelerator=job.accelerator, progress_dir=job.paths.folder.progress,
      multilabel=job.values.model_type == MULTILABEL)
  return (
      chunk_ids
      | 'ReadChunks' >> beam.ParDo(read.ReadChunks(
          job.list_path, chunks, job.paths.state,
          job.values.image_type))
      | 'Fetch' >> beam.ParDo(ThreadedMap(
          functools.partial(_make_fetcher, job.fetch),
          threads=job.values.fetch_threads,
          in_flight=job.values.fetch_threads * 2,
          error_kind=rec.FETCH, nice=job.pool_nice, stage='fetch',
          needs=needs_fetch))
      # Enough decodes in flight to prepare the next batch while the model
      # runs on this one.
      | 'Decode' >> beam.ParDo(ThreadedMap(
          functools.partial(_make_preparer, job.decode,
                            job.spec.encoded_input),
          threads=job.decode_threads,
          in_flight=max(job.decode_threads * 2, job.batch_size * 2),
          error_kind=rec.DECODE, nice=job.pool_nice, stage='decode'))
      | 'BatchByChunk' >> beam.ParDo(inference.BatchByChunk(
          job.batch_size, chunks.counts))
      | 'Classify' >> RunInference(handler)
      | 'CommitChunks' >> beam.ParDo(CommitChunks(
          job.labels, chunks.counts, job.paths.state,
          # Only local worker processes share the launcher's machine.
          launcher=job.launcher if is_direct(options.view_as(
              StandardOptions).runner) else None,
          top_k=job.values.top_k, thresholds=job.thresholds))
      # A stage whose output nobody reads is awaited on its control channel
      # only: FnApiRunner then waits forever for a local worker process that
      # died. Read, its data channel closing fails the job (and the
      # launcher restarts it: launcher.worker_lost).
      | 'CountCommitted' >> combiners.Count.Globally())


def summary_fields(job: JobPlan, attempt: int,
                   list_identity: Optional[dict] = None) -> dict:
  """The summary's description of the job (beside its counts);
  list_identity: the list's size and mtime as the job found them (a retry
  refuses a list changed since)."""
  list_identity = list_identity or {}
  return {
      'input_size': list_identity.get('size'),
      'input_mtime': list_identity.get('mtime'),
      'run_id': job.run_id,
      'input_file': job.input_name,
      'model_path': job.values.model_path,
      'model_input': job.spec.input_kind,
      'batch_size': job.batch_size,
      'workers': job.workers,
      'backend_requested': job.values.backend,
      'attempts': attempt,
      # As given (a retry reruns the job from them); no secrets are
      # parameters (credentials come from the environment).
      'parameters': {p.name: p.text(getattr(job.values, p.name))
                     for p in parameters.TABLE
                     if getattr(job.values, p.name) is not None},
  }


def _needs_distribution(options, job: JobPlan) -> bool:
  runner = options.view_as(StandardOptions).runner
  return job.workers > 1 or not is_direct(runner)
