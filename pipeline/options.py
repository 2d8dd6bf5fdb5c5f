"""Options: PAI's ``-Dkey=value`` parameters as a PipelineOptions subclass.

PAI users paste commands such as
``pai -name ev_predict_ext -Dmodel_type=classifier -Dmodel_path="oss://…";``.
parse_command_line() turns that (or ``--key=value``) into Beam flags; every
other ``--flag`` is Beam's.
"""
import argparse
import difflib
import shlex
from typing import Dict, List, Optional, Tuple

from apache_beam.options.pipeline_options import PipelineOptions

from ev_predict.transforms.oss.filesystem import OssOptions


class UsageError(ValueError):
  """A one-line message telling the user what to fix (exit code 2)."""


# name -> (type, default, help). Names are PAI's, then ours.
PARAMETERS: Dict[str, Tuple[type, object, str]] = {
    'model_path': (str, None, 'SavedModel directory (local or any Beam path).'),
    'model_type': (str, 'classifier', 'Only "classifier" is supported.'),
    'input_oss_file': (str, None, 'File list: one image per line.'),
    'output_oss_file': (str, None, 'Result file.'),
    'image_type': (str, 'url', 'url: lines name images; base64: lines are '
                   'base64-encoded image files.'),
    'num_worker': (int, 1, 'Workers (local processes on DirectRunner).'),
    'cpuRequired': (int, None, 'Hundredths of a core per worker '
                    '(800 = 8 cores); default: the cores / num_worker.'),
    'gpuRequired': (int, 0, 'Hundredths of a GPU per worker.'),
    'gpu_type': (str, 'nvidia-tesla-t4', 'Accelerator type for the Beam '
                 'resource hint when gpuRequired > 0.'),
    'buckets': (str, None, 'Comma-separated oss:// locations the job may use.'),
    'arn': (str, None, 'RAM role ARN to assume for OSS access.'),
    'ossHost': (str, None, 'OSS endpoint.'),
    'batch_size': (int, None, 'Images per model call (default: 4 per core '
                   'of a worker, 8 to 64).'),
    'label_map_path': (str, None, 'Class names, one per line.'),
    'signature_name': (str, 'serving_default', 'SavedModel signature.'),
    'error_oss_file': (str, None, 'Error file (default <output>.errors).'),
    'max_error_ratio': (float, 0.05, 'Exit non-zero when more than this '
                        'fraction of lines fail.'),
    'backend': (str, 'auto', 'Inference backend: auto, tensorflow or '
                'openvino.'),
    'precision': (str, 'f32', 'OpenVINO precision: f32, or bf16 where it '
                  'is measured to agree.'),
    'output_key': (str, None, 'Signature output with the class scores.'),
    'image_size': (str, None, 'WIDTHxHEIGHT, for models whose input size '
                   'is not fixed.'),
    'pixel_scale': (str, '0-255', 'float32 inputs: 0-255, 0-1, -1-1 or '
                    'mean_std.'),
    'pixel_mean': (str, None, 'mean_std: per-channel means, e.g. '
                   '123.68,116.78,103.94.'),
    'pixel_std': (str, None, 'mean_std: per-channel standard deviations.'),
    'fetch_threads': (int, 32, 'Concurrent fetches per worker.'),
    'fetch_timeout': (float, 30.0, 'Seconds per fetch attempt, all of it '
                      '(connect, headers, whole body) before a retry.'),
    'fetch_retries': (int, 3, 'Retries of a transient fetch failure.'),
    'max_image_bytes': (int, 64 << 20, 'Larger images become too_large.'),
    'max_image_pixels': (int, 89_478_485, 'Larger images become too_large.'),
    'decode_threads': (int, None, 'Decode threads per worker (default: its '
                       'cores + 1).'),
    'decode_priority': (str, 'low', 'Fetch and decode threads: low (they '
                        'yield the cores to the model\'s threads) or normal.'),
    'block_private_networks': (str, 'false', 'Refuse http(s) images on '
                               'loopback/private addresses (untrusted lists).'),
    'allow_local_files': (str, 'true', 'false: local paths and file:// URLs '
                          'in the list are refused (untrusted lists).'),
    'jpeg_draft': (str, 'true', 'Decode JPEGs at reduced scale when larger '
                   'than the model input.'),
    'max_restarts': (int, 2, 'Local worker processes (num_worker > 1): '
                     'rerun the job this many times when one dies; on a '
                     'cluster its restart strategy applies.'),
}

_PAI_PROGRAM = 'ev_predict_ext'


# Declared by the OSS file system's own options class (its workers need them).
OSS_PARAMETERS = ('buckets', 'arn', 'ossHost')


class EvPredictOptions(PipelineOptions):

  @classmethod
  def _add_argparse_args(cls, parser):
    for name, (kind, default, text) in PARAMETERS.items():
      if name not in OSS_PARAMETERS:
        parser.add_argument(f'--{name}', type=kind, default=default, help=text)


def _unquote(value: str) -> str:
  value = value.strip()
  if value.endswith(';'):
    value = value[:-1].rstrip()
  if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
    value = value[1:-1]
  return value


def unknown_parameter(name: str, where: str = '') -> str:
  close = difflib.get_close_matches(name, PARAMETERS, n=1)
  hint = f' (did you mean {close[0]}?)' if close else ''
  return f'unknown parameter -D{name}{where}{hint}'


def _unknown(name: str) -> UsageError:
  return UsageError(unknown_parameter(name) + '; known: ' +
                    ', '.join(PARAMETERS))


def parse_command_line(argv: List[str]) -> Tuple[Dict[str, str], List[str]]:
  """argv -> (PAI parameters as strings, remaining Beam flags)."""
  args = list(argv)
  if len(args) == 1 and args[0].lstrip().startswith('pai '):
    args = shlex.split(args[0])  # a whole pasted command as one argument
  if args and args[0] == 'pai':
    args = args[1:]
  params: Dict[str, str] = {}
  beam_args: List[str] = []
  i = 0
  while i < len(args):
    arg = args[i].strip()
    i += 1
    if not arg or arg == ';':
      continue
    if arg == '-name':
      if i >= len(args) or _unquote(args[i]) != _PAI_PROGRAM:
        raise UsageError(f'-name must be {_PAI_PROGRAM}')
      i += 1
      continue
    if arg.startswith('-D'):
      key, sep, value = arg[2:].partition('=')
      if not sep or not key:
        raise UsageError(f'malformed parameter {arg!r}; use -Dkey=value')
      if key not in PARAMETERS:
        raise _unknown(key)
      params[key] = _checked(key, _unquote(value))
      continue
    if arg.startswith('--'):
      key, sep, value = arg[2:].partition('=')
      if key in PARAMETERS:
        if not sep:
          if i >= len(args):
            raise UsageError(f'--{key} needs a value')
          value = args[i]
          i += 1
        params[key] = _checked(key, _unquote(value))
      else:
        beam_args.append(arg)
        # A Beam flag's separate value ("--runner FlinkRunner").
        if not sep and i < len(args) and not args[i].startswith('-'):
          beam_args.append(args[i])
          i += 1
      continue
    raise UsageError(f'unexpected argument {arg!r}; parameters look like '
                     '-Dkey=value')
  return params, beam_args


def type_error(key: str, value: str) -> Optional[str]:
  """The message for a value that does not parse as the parameter's type."""
  kind = PARAMETERS[key][0]
  if kind is str:
    return None
  try:
    kind(value)
  except ValueError:
    noun = 'an integer' if kind is int else 'a number'
    return f'-D{key} must be {noun}, not {value!r}'
  return None


def _checked(key: str, value: str) -> str:
  problem = type_error(key, value)
  if problem:
    raise UsageError(problem)
  return value


def check_beam_flags(beam_args: List[str]) -> None:
  """Refuses flags that no registered PipelineOptions understands (Beam would
  only log and drop them)."""
  parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
  seen = set()

  def add_all(cls):
    for sub in cls.__subclasses__():
      if sub not in seen:
        seen.add(sub)
        try:
          sub._add_argparse_args(parser)  # pylint: disable=protected-access
        except argparse.ArgumentError:
          pass  # the same flag declared by two option classes
        add_all(sub)

  add_all(PipelineOptions)
  try:
    _, unknown = parser.parse_known_args(beam_args)
  except SystemExit as e:
    raise UsageError(f'invalid Beam flags {beam_args}') from e
  if unknown:
    raise UsageError(f'unknown option(s) {" ".join(unknown)}')


def to_flags(params: Dict[str, str]) -> List[str]:
  return [f'--{k}={v}' for k, v in params.items()]


def parse_bool(value: str, name: str) -> bool:
  lowered = str(value).strip().lower()
  if lowered in ('1', 'true', 'yes', 'on'):
    return True
  if lowered in ('0', 'false', 'no', 'off'):
    return False
  raise UsageError(f'-D{name} must be true or false, not {value!r}')


def parse_floats(value: Optional[str], name: str) -> Tuple[float, ...]:
  if not value:
    return ()
  try:
    return tuple(float(v) for v in value.split(','))
  except ValueError as e:
    raise UsageError(f'-D{name} must be comma-separated numbers') from e


def parse_size(value: Optional[str]) -> Optional[Tuple[int, int]]:
  if not value:
    return None
  parts = value.lower().replace(',', 'x').split('x')
  try:
    nums = [int(p) for p in parts]
  except ValueError as e:
    raise UsageError('-Dimage_size must be N or WIDTHxHEIGHT') from e
  if len(nums) == 1:
    nums = nums * 2
  if len(nums) != 2 or min(nums) <= 0:
    raise UsageError('-Dimage_size must be N or WIDTHxHEIGHT')
  return nums[0], nums[1]
