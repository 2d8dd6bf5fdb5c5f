"""The pipeline graph. build_pipeline() reads like a table of contents; plan()
resolves and validates everything the graph needs before any work starts."""
import dataclasses
import functools
import os
import posixpath
import stat
import time
import urllib.parse
import uuid
from typing import List, Mapping, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import combiners

from ev_predict.pipeline.options import (OSS_PARAMETERS, PARAMETERS, EvPredictOptions,
                              UsageError,
                              parse_bool, parse_floats, parse_size,
                              type_error)
from ev_predict.transforms import backends, inference, modelcache, ossio, read
from ev_predict.transforms.ossfs import OssOptions
from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import DecodeConfig, prepare_record
from ev_predict.transforms.fetch import FetchConfig, Fetcher, needs_fetch
from ev_predict.transforms.parallel import BACKGROUND_NICE, ThreadedMap
from ev_predict.transforms.write import OutputPaths, WriteOutputs, launcher_identity

SUPPORTED_MODEL_TYPES = ('classifier',)
DECODE_PRIORITIES = ('low', 'normal')
REQUIRED = ('model_path', 'input_oss_file', 'output_oss_file')


@dataclasses.dataclass(frozen=True)
class JobPlan:
  """Everything resolved on the launcher, so workers do no guessing."""
  run_id: str
  started_at: float
  input_path: str
  image_type: str
  model_path: str
  spec: inference.ModelSpec
  labels: Optional[List[str]]
  scaling: inference.PixelScaling
  batch_size: int
  paths: OutputPaths
  fetch: FetchConfig
  decode: DecodeConfig
  workers: int
  cores_per_worker: int
  fetch_threads: int
  decode_threads: int
  max_error_ratio: float
  backend: str
  precision: str
  accelerator: Optional[str]
  pool_nice: int = 0
  # Who launched the job (write.launcher_identity()): local workers exit
  # when it is gone, a later run knows its leftovers from a live run's.
  launcher: Optional[dict] = None


def _given(o: EvPredictOptions, oss: OssOptions):
  """The job's parameters as strings, as a user would have written them."""
  params = {}
  for name in PARAMETERS:
    value = getattr(oss if name in OSS_PARAMETERS else o, name)
    if value is not None:
      params[name] = str(value)
  return params


def check_parameters(params: Mapping[str, str]) -> List[str]:
  """Every check of a job's parameters that needs no file, model or
  network: required, types, choices, ranges, -Dbuckets. One message per
  problem. plan() and `ev-predict submit` both use it."""
  errors = [f'-D{name} is required' for name in REQUIRED
            if not params.get(name)]
  typed = {}
  for name, value in params.items():
    problem = type_error(name, value)
    if problem:
      errors.append(problem)
    else:
      typed[name] = PARAMETERS[name][0](value)

  def choice(name, allowed):
    value = params.get(name)
    if value is not None and value not in allowed:
      errors.append(f'-D{name} must be one of {", ".join(allowed)}, '
                    f'not {value!r}')

  if params.get('model_type', 'classifier') not in SUPPORTED_MODEL_TYPES:
    errors.append(f'-Dmodel_type={params["model_type"]} is not supported; '
                  f'supported: {", ".join(SUPPORTED_MODEL_TYPES)}')
  choice('image_type', read.IMAGE_TYPES)
  choice('backend', backends.BACKENDS)
  choice('precision', backends.PRECISIONS)
  choice('pixel_scale', inference.PIXEL_SCALES)
  choice('decode_priority', DECODE_PRIORITIES)

  def at_least(name, low, text):
    if name in typed and typed[name] < low:
      errors.append(f'-D{name} {text}, not {params[name]!r}')

  for name in ('num_worker', 'batch_size', 'fetch_threads', 'max_image_bytes',
               'max_image_pixels', 'cpuRequired'):
    at_least(name, 1, 'must be at least 1')
  at_least('fetch_retries', 0, 'must be >= 0')
  at_least('max_restarts', 0, 'must be >= 0')
  if typed.get('fetch_timeout', 1) <= 0:
    errors.append(f'-Dfetch_timeout must be > 0, not '
                  f'{params["fetch_timeout"]!r}')
  if not 0 <= typed.get('max_error_ratio', 0) <= 1:
    errors.append(f'-Dmax_error_ratio must be between 0 and 1, not '
                  f'{params["max_error_ratio"]!r}')

  def parsed(func, *args):
    try:
      return func(*args)
    except UsageError as e:
      errors.append(str(e))
      return None

  for name in ('block_private_networks', 'allow_local_files', 'jpeg_draft'):
    if name in params:
      parsed(parse_bool, params[name], name)
  if 'image_size' in params:
    parsed(parse_size, params['image_size'])
  mean = parsed(parse_floats, params.get('pixel_mean'), 'pixel_mean')
  std = parsed(parse_floats, params.get('pixel_std'), 'pixel_std')
  if params.get('pixel_scale') == 'mean_std' and mean is not None and \
      std is not None and (len(mean) not in (1, 3) or len(std) not in (1, 3)
                           or 0 in std):
    errors.append('-Dpixel_scale=mean_std needs -Dpixel_mean and '
                  '-Dpixel_std with 1 or 3 values (std non-zero)')

  try:
    allow = ossio.parse_allow_list(params.get('buckets'))
  except ValueError as e:
    errors.append(f'-Dbuckets: {e}')
    allow = ()
  for name in ('model_path', 'input_oss_file', 'output_oss_file',
               'error_oss_file', 'label_map_path'):
    path = params.get(name)
    try:
      inside = not path or ossio.allowed(path, allow,
                                         folder=name == 'model_path')
    except ValueError as e:
      errors.append(f'-D{name}: {e}')
      continue
    if not inside:
      errors.append(f'-D{name}={path} is outside -Dbuckets '
                    f'({", ".join(allow)})')
  return errors


def plan(options: EvPredictOptions) -> JobPlan:
  # The launcher reads the model and file list before a Pipeline exists (and
  # sets them): file systems must see this job's options (OSS endpoint).
  FileSystems.set_options(options)
  o = options.view_as(EvPredictOptions)
  oss = options.view_as(OssOptions)
  errors = check_parameters(_given(o, oss))
  if errors:
    raise UsageError('; '.join(errors))
  input_path, output_path, model_path = (
      o.input_oss_file, o.output_oss_file, o.model_path)
  allow = ossio.parse_allow_list(oss.buckets)

  _check_readable(input_path, 'input_oss_file')
  run_id = time.strftime('%Y%m%d-%H%M%S') + '-' + uuid.uuid4().hex[:8]
  _check_scheme(model_path, 'model_path')
  paths = OutputPaths.for_run(local_spelling(output_path, 'output_oss_file'),
                              local_spelling(o.error_oss_file,
                                             'error_oss_file'), run_id)
  check_output_paths(input_path, model_path, paths)
  for path in paths.targets:
    _check_writable(path)

  mean = parse_floats(o.pixel_mean, 'pixel_mean')
  std = parse_floats(o.pixel_std, 'pixel_std')
  try:
    spec = inference.inspect_saved_model(
        model_path, o.signature_name, parse_size(o.image_size), o.output_key)
    labels = inference.load_labels(model_path, o.label_map_path,
                                   spec.num_classes)
  except inference.ModelError as e:
    raise UsageError(str(e)) from e

  if o.backend == backends.OPENVINO and spec.encoded_input:
    raise UsageError('-Dbackend=openvino cannot run a model that takes '
                     'encoded image bytes; use auto or tensorflow')

  cores = os.cpu_count() or 1
  workers = o.num_worker
  per_worker = max(1, o.cpuRequired // 100) if o.cpuRequired else \
      max(1, cores // workers)
  return JobPlan(
      run_id=run_id,
      started_at=time.time(),
      input_path=input_path,
      image_type=o.image_type,
      model_path=model_path,
      spec=spec,
      labels=labels,
      scaling=inference.PixelScaling(o.pixel_scale, mean, std),
      # Measured here (bench/run.py, 2 cores, MobileNetV2): OpenVINO is as
      # fast or faster at batch 8 than 16-64, end to end too (smaller
      # batches interleave with decoding); TensorFlow is flat from 8 to 64.
      # Larger batches only add padding and latency. Scale with the cores.
      batch_size=o.batch_size or backends.default_batch_size(per_worker),
      paths=paths,
      fetch=FetchConfig(read_timeout=o.fetch_timeout, retries=o.fetch_retries,
                        max_bytes=o.max_image_bytes,
                        pool_size=o.fetch_threads, allowed_prefixes=allow,
                        block_private_networks=parse_bool(
                            o.block_private_networks,
                            'block_private_networks'),
                        allow_local_files=parse_bool(
                            o.allow_local_files, 'allow_local_files')),
      decode=DecodeConfig(size=spec.image_size if spec.width else (0, 0),
                          max_pixels=o.max_image_pixels,
                          draft=parse_bool(o.jpeg_draft, 'jpeg_draft')),
      workers=workers,
      cores_per_worker=per_worker,
      fetch_threads=o.fetch_threads,
      # One more than the cores: low-priority decodes run only in the gaps
      # the model leaves, and a spare keeps a gap filled while another waits
      # for the GIL (measured: README, "Levers").
      decode_threads=o.decode_threads or per_worker + 1,
      max_error_ratio=o.max_error_ratio,
      backend=o.backend,
      precision=o.precision,
      accelerator=(f'type:{o.gpu_type};count:{-(-o.gpuRequired // 100)};'
                   'install-nvidia-driver') if o.gpuRequired > 0 else None,
      pool_nice=BACKGROUND_NICE if o.decode_priority == 'low' else 0,
      launcher=launcher_identity(),
  )


_OUTPUT_NAMES = ('-Doutput_oss_file', '-Derror_oss_file', 'the summary file')


def check_output_paths(input_path: str, model_path: str,
                       paths: OutputPaths) -> None:
  """A job may only replace its own files: refuses an output that is a
  directory, two of input/result/errors/summary that are one file, and an
  output inside the model."""
  for name, path in zip(_OUTPUT_NAMES, paths.targets):
    _check_scheme(path, name.lstrip('-D'))
    if _is_directory(path):
      raise UsageError(f'{name}={path} is a directory (or a folder with '
                       'objects under it); give a file path')
    if '://' not in path and os.path.exists(path) and \
        not stat.S_ISREG(os.stat(path).st_mode):
      # A FIFO or a device (/dev/null) would be replaced by a regular file.
      raise UsageError(f'{name}={path} exists and is not a regular file')
  seen = {}
  for name, path in zip(('-Dinput_oss_file',) + _OUTPUT_NAMES,
                        (input_path,) + paths.targets):
    key = canonical_path(path)
    if key in seen:
      raise UsageError(f'{seen[key]} and {name} are the same file ({path}); '
                       'each needs its own path')
    seen[key] = name
  model = canonical_path(model_path).rstrip('/') + '/'
  for name, path in zip(_OUTPUT_NAMES, paths.targets):
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
    fs = FileSystems.get_filesystem(path)
  except ValueError:
    return False
  has_children = getattr(fs, 'has_children', None)
  try:
    return bool(has_children and has_children(path))
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f'cannot check output path {path} ({_reason(e)})') from e


def _check_readable(path: str, name: str) -> None:
  try:
    with FileSystems.open(path) as f:
      f.read(1)
  except ossio.OssConfigError as e:
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
  # BeamIOError wraps the per-path cause; show that, without any secret.
  causes = getattr(e, 'exception_details', None) or {}
  cause = next(iter(causes.values()), None) if isinstance(causes, dict) \
      else None
  return type(cause or e).__name__ + (f': {cause}' if isinstance(
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
                   job: Optional[JobPlan] = None, attempt: int = 1):
  """Adds the whole job to p; returns the PCollection holding the summary.

  Every record, failed or not, flows through every stage (each passes failed
  records through), so the job is one fused, streaming stage after the read:
  no Partition/Flatten that a local runner would materialize in memory."""
  job = job or plan(options)
  records = (p
             | 'ReadFileList' >> read.ReadFileList(job.input_path,
                                                   job.image_type))
  lines_read = records | 'CountLines' >> combiners.Count.Globally()
  if _needs_distribution(options, job):
    # Spread lines over workers: the list itself is one small file. (A
    # single local worker skips it: a shuffle holds every line in memory.)
    records = records | 'Distribute' >> beam.Reshuffle()
  handler = inference.SavedModelHandler(
      job.model_path, job.spec, job.scaling, job.batch_size,
      intra_op_threads=job.cores_per_worker if job.workers > 1 else None,
      local_model_path=modelcache.local_model_dir, backend=job.backend,
      precision=job.precision, accelerator=job.accelerator)
  return (
      records
      | 'Fetch' >> beam.ParDo(ThreadedMap(
          functools.partial(_make_fetcher, job.fetch),
          threads=job.fetch_threads, in_flight=job.fetch_threads * 2,
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
      | 'Classify' >> RunInference(handler)
      | 'WriteOutputs' >> WriteOutputs(
          job.paths, job.labels, lines_read, job.run_id, job.started_at,
          extra_summary={
              'run_id': job.run_id,
              'input_file': job.input_path,
              'model_path': job.model_path,
              'model_input': job.spec.input_kind,
              'batch_size': job.batch_size,
              'workers': job.workers,
              'backend_requested': job.backend,
              'attempts': attempt,
          },
          # Only local worker processes share the launcher's machine.
          launcher=job.launcher if options.view_as(
              StandardOptions).runner in _DIRECT else None))


_DIRECT = (None, 'DirectRunner', 'directrunner')


def _needs_distribution(options, job: JobPlan) -> bool:
  runner = options.view_as(StandardOptions).runner
  return job.workers > 1 or runner not in _DIRECT
