"""Every ``-D`` parameter, declared once.

The table below is the only place a parameter's type, default, choices,
bounds and help live. From it come the option classes (EvPredictOptions, and
OssOptions that workers read), the checks of each value (``parse``; those
between parameters are pipeline/graph.py's check_parameters), ``ev-predict
--help`` and docs/parameters.md's table (``--write docs/parameters.md``, or
``make docs``). Tests keep that file and the templates' ``# empty:`` comments
in step with it (tests/test_parameters.py).

Adding a parameter is one ``Parameter(...)`` entry here, plus its use
(``job.values.<name>`` in the pipeline).

Standard library only (and transforms/record.py's error kinds, itself standard
library only): transforms/ (the OSS file system on workers) imports it.
Texts are written with `backticks` for literals: docs/ shows them as code,
--help and templates without them.
"""
import dataclasses
import difflib
import math
import re
import sys
import textwrap
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ev_predict.transforms.record import ERROR_KINDS

# Kinds of value, as written on a command line. CHOICES: one or more of the
# choices, comma-separated.
STR, INT, FLOAT, BOOL, CHOICE, SIZE, FLOATS, CHOICES = (
    'str', 'int', 'float', 'bool', 'choice', 'size', 'floats', 'choices')
KINDS = (STR, INT, FLOAT, BOOL, CHOICE, SIZE, FLOATS, CHOICES)

# In this order in --help and docs/parameters.md.
GROUPS = ('model', 'input', 'output', 'job', 'cluster', 'oss', 'inference',
          'fetch', 'decode')

_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


class ParameterError(ValueError):
  """One parameter's problem, as the one line a user sees."""


@dataclasses.dataclass(frozen=True)
class Parameter:
  name: str
  kind: str
  group: str
  help: str                     # one line: --help, argparse
  default: Any = None           # typed; None: unset (see `unset`)
  unset: str = ''               # what leaving it unset means
  required: bool = False
  # Required unless this other parameter is given (a list or a table).
  unless: str = ''
  choices: Tuple[str, ...] = ()
  minimum: Optional[float] = None
  above: Optional[float] = None  # exclusive minimum
  maximum: Optional[float] = None
  pai: bool = False             # PAI's own name (ev_predict_ext); else ours
  doc: str = ''                 # README's longer text (default: help)
  aliases: Tuple[str, ...] = ()  # more --flags for the same option
  refusal: str = ''             # message for a value outside `choices`
  # Whether its value can change a line's outcome: a resumed job must have
  # the same values of these as the run it continues (pipeline/resume.py).
  results: bool = True

  def parse(self, text: str) -> Any:
    """The typed value of a string as written; raises ParameterError."""
    text = str(text)
    if self.kind == INT or self.kind == FLOAT:
      noun = 'an integer' if self.kind == INT else 'a number'
      written = text.strip()
      try:
        # Python's own parsers take '1_0'; a command line means no such.
        if '_' in written or (self.kind == INT and
                              not re.fullmatch(r'[+-]?\d+', written)):
          raise ValueError(written)
        value = int(written) if self.kind == INT else float(written)
      except ValueError:
        raise ParameterError(
            f'-D{self.name} must be {noun}, not {text!r}') from None
      if self.kind == FLOAT and not math.isfinite(value):
        # NaN passes every bound (each comparison is false): refused here.
        raise ParameterError(
            f'-D{self.name} must be a finite number, not {text!r}')
      return value
    if self.kind == BOOL:
      lowered = text.strip().lower()
      if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
      raise ParameterError(f'-D{self.name} must be true or false, not '
                           f'{text!r}')
    if self.kind == SIZE:
      return _size(text, self.name)
    if self.kind == FLOATS:
      try:
        return tuple(float(v) for v in text.split(',')) if text else ()
      except ValueError:
        raise ParameterError(f'-D{self.name} must be comma-separated '
                             'numbers') from None
    if self.kind == CHOICES:
      items = tuple(dict.fromkeys(v.strip() for v in text.split(',')
                                  if v.strip()))
      if not items:
        raise ParameterError(f'-D{self.name} needs one or more of '
                             f'{", ".join(self.choices)}')
      return items
    return text

  def problem(self, value: Any, written: str) -> Optional[str]:
    """What is wrong with a parsed value (choices, bounds), if anything;
    written: the value as the user wrote it, for the message."""
    if self.kind == CHOICES:
      unknown = [v for v in value if v not in self.choices]
      return (f'-D{self.name} takes comma-separated values among '
              f'{", ".join(self.choices)}, not {", ".join(unknown)!r}'
              if unknown else None)
    if self.choices and value not in self.choices:
      template = self.refusal or '-D{name} must be one of {choices}, not ' \
          '{value!r}'
      return template.format(name=self.name, value=written,
                             choices=', '.join(self.choices))
    if self.minimum is not None and value < self.minimum:
      text = f'must be at least {_number(self.minimum)}'
    elif self.above is not None and value <= self.above:
      text = f'must be > {_number(self.above)}'
    elif self.maximum is not None and value > self.maximum:
      text = f'must be at most {_number(self.maximum)}'
    else:
      return None
    if self.minimum is not None and self.maximum is not None:
      text = (f'must be between {_number(self.minimum)} and '
              f'{_number(self.maximum)}')
    return f'-D{self.name} {text}, not {written!r}'

  def text(self, value: Any) -> str:
    """A value as it would be written on a command line."""
    if isinstance(value, bool):
      return 'true' if value else 'false'
    if isinstance(value, float):
      return _number(value)
    if isinstance(value, tuple):
      return ('x' if self.kind == SIZE else ',').join(
          _number(v) for v in value)
    return str(value)

  def add_to(self, parser) -> None:
    """Declares the option on an argparse parser (a PipelineOptions'). Only
    numbers are converted there (the launcher sizes runner options from
    them); the rest stay as written, so that a worker's options read back
    what the user gave. The typed view of them all is parse()'s."""
    numeric = {INT: int, FLOAT: float}.get(self.kind)
    default = self.default if numeric or self.default is None \
        else self.text(self.default)
    parser.add_argument(
        f'--{self.name}', *(f'--{a}' for a in self.aliases), dest=self.name,
        type=numeric or str, default=default, help=plain(self.help))

  @property
  def unset_value(self) -> Any:
    """The typed value when not given."""
    return () if self.kind == FLOATS and self.default is None else self.default

  @property
  def shown_default(self) -> str:
    if self.required:
      return 'required'
    return self.unset if self.default is None else f'`{self.text(self.default)}`'


def _number(value: float) -> str:
  """30.0 as 30, but never a rounded value."""
  if isinstance(value, float) and float(f'{value:g}') == value:
    return f'{value:g}'
  return repr(value) if isinstance(value, float) else str(value)


def _size(text: str, name: str) -> Optional[Tuple[int, int]]:
  if not text:
    return None
  message = f'-D{name} must be N or WIDTHxHEIGHT'
  try:
    nums = [int(p) for p in text.lower().replace(',', 'x').split('x')]
  except ValueError:
    raise ParameterError(message) from None
  if len(nums) == 1:
    nums = nums * 2
  if len(nums) != 2 or min(nums) <= 0:
    raise ParameterError(message)
  return nums[0], nums[1]


P = Parameter
TABLE: Tuple[Parameter, ...] = (
    P('model_path', STR, 'model', required=True, pai=True,
      help='SavedModel directory (local or any Beam file system path)'),
    P('model_type', CHOICE, 'model', default='classifier', pai=True,
      choices=('classifier', 'multilabel_classifier'),
      help='`classifier` (one class per image, PAI\'s line) or '
      '`multilabel_classifier` (independent scores, the labels above '
      '`threshold`); PAI\'s other types (`detector`, `segmentor`, '
      '`text_spotter`) are refused',
      refusal='-D{name}={value} is not supported; supported: {choices}'),
    P('threshold', FLOAT, 'model', default=0.5, minimum=0, maximum=1,
      help='`multilabel_classifier`: a class is predicted when its score is '
      'above this'),
    P('threshold_file', STR, 'model', unset='`threshold` for every class',
      help='`multilabel_classifier`: one threshold per class, a line each '
      '(`name value`, or only the value, in class order)'),
    P('label_map_path', STR, 'model', help='class names, one per line',
      unset='`assets/labels.txt` or `labels.txt` in the model, else `0`…`C-1`'),
    P('signature_name', STR, 'model', default='serving_default',
      help='SavedModel signature'),
    P('output_key', STR, 'model',
      help='signature output holding the class scores',
      unset='`probabilities`, `probs` or `class_probs`, else the only output'),
    P('image_size', SIZE, 'model',
      help='`WIDTHxHEIGHT` (or `N`) for pixel models whose input size is not '
      'fixed'),
    P('pixel_scale', CHOICE, 'model', default='0-255',
      choices=('0-255', '0-1', '-1-1', 'mean_std'),
      help='float32 models: pixels as `0-255`, `0-1`, `-1-1` or `mean_std`'),
    P('pixel_mean', FLOATS, 'model',
      help='`mean_std`: per-channel means, e.g. `123.68,116.78,103.94`'),
    P('pixel_std', FLOATS, 'model',
      help='`mean_std`: per-channel standard deviations (non-zero)'),
    P('input_oss_file', STR, 'input', pai=True, unless='input_table',
      unset='required, unless `input_table`',
      help='file list, one image per line (may be `.gz`)'),
    P('input_table', STR, 'input', pai=True,
      help='a table instead of a file list: a Parquet, CSV or JSON-lines '
      'file, or a glob of them (rows in path order); needs `output_table`',
      doc='a table instead of a file list: a `.parquet`, `.csv` or `.jsonl` '
      'file on any file system, or a glob of them (their rows in path '
      'order, one schema). Needs `output_table`; every row ends in exactly '
      'one row of the output or the error table. `odps://` (MaxCompute) '
      'tables are refused: export them to Parquet'),
    P('image_col', STR, 'input', default='image', pai=True,
      help='`input_table`: the column with each image: a URL or path '
      '(base64 text with `image_type=base64`), or the image\'s bytes'),
    P('reserved_columns', STR, 'input', pai=True, results=False,
      unset='none',
      help='`input_table`: comma-separated columns copied to the output and '
      'error tables, with their types'),
    P('image_type', CHOICE, 'input', default='url', pai=True,
      choices=('url', 'base64'),
      help='`url`: a line names an image; `base64`: a line is a '
      'base64-encoded image file'),
    P('output_oss_file', STR, 'output', results=False, pai=True,
      unless='output_table', unset='required, unless `output_table`',
      help='result file'),
    P('output_table', STR, 'output', results=False, pai=True,
      help='`input_table`: the output table (`.parquet`, `.csv` or `.jsonl`): '
      'the reserved columns and `result_column`, a row per image that '
      'succeeded, in input order'),
    P('result_column', STR, 'output', results=False, default='result',
      pai=True,
      help='`output_table`: the column holding each row\'s result line '
      '(the JSON after the path)'),
    P('error_table', STR, 'output', results=False,
      unset='`output_table` with `.errors` before its extension',
      help='`input_table`: the table of rows that failed: the reserved '
      'columns, `error` (the kind) and `message`'),
    P('top_k', INT, 'output', minimum=1, unset='every class, in class order',
      help='`class_probs` keeps the K highest scores, highest first '
      '(`class`, `class_name` unchanged)',
      doc='`class_probs` keeps only the K highest scores, highest first, '
      'still a dict; `class` and `class_name` are unchanged. A line\'s size: '
      'about 0.4 KB at 10 classes, 3.7 KB at 100, 37 KB at 1000 (370 GB for '
      '10 M images); `-Dtop_k=5` makes it about 0.3 KB whatever the classes'),
    P('report', BOOL, 'output', default=True, results=False,
      help='write `<output>.report.html` when the job ends (`ev-predict '
      'report` writes it for any finished job)',
      doc='write the run report, one self-contained HTML page, beside the '
      'result as `<output>.report.html` when the job ends: the summary, '
      'class and confidence histograms, failures by kind with examples, '
      'throughput over the run and thumbnails of the borderline images '
      '(fetched as the job fetched). `ev-predict report OUTPUT` writes it '
      'for any finished job'),
    P('error_oss_file', STR, 'output', results=False, help='error file',
      unset='`<output_oss_file>.errors`'),
    P('max_error_ratio', FLOAT, 'job', results=False, default=0.05, minimum=0, maximum=1,
      help='exit code 1 when more than this fraction of lines failed (the '
      'files are still complete)'),
    P('max_restarts', INT, 'job', results=False, default=2, minimum=0,
      help='local worker processes (num_worker > 1): rerun the job this many '
      'times when one dies; on a cluster its restart strategy applies'),
    P('resume', BOOL, 'job', default=True, results=False,
      help='continue an interrupted job with the same output: committed '
      'lines are not processed again; false starts fresh'),
    P('allow_empty', BOOL, 'job', default=True, results=False,
      help='an empty file list is a warning (exit 0, empty outputs); false '
      'makes it an error (exit 2)'),
    P('log_level', CHOICE, 'job', results=False, default='error',
      choices=('error', 'warning', 'info', 'debug'),
      help='what the libraries (TensorFlow, Beam, gRPC, Python warnings) '
      'print besides ev-predict\'s own lines; `-v` is `info`, `-vv` `debug`',
      doc='what the libraries print besides ev-predict\'s own lines '
      '(progress, the summary, one-line errors): `error` (nothing in a '
      'normal run), `warning`, `info` (`-v`) or `debug` (`-vv`, with '
      'tracebacks). It sets Python logging and warnings, '
      '`TF_CPP_MIN_LOG_LEVEL`, `GRPC_VERBOSITY` and the SDK workers\' '
      '`--default_sdk_harness_log_level`; a flag of that name given wins, '
      'and so do those variables set in the environment while the level '
      'is left at its default'),
    P('num_worker', INT, 'cluster', results=False, default=1, minimum=1, pai=True,
      help='workers; on DirectRunner, local worker processes'),
    P('cpuRequired', INT, 'cluster', results=False, minimum=1, pai=True,
      unset='the cores / num_worker',
      help='hundredths of a core per worker (800 = 8 cores): decode threads '
      'and TensorFlow/OpenVINO threads per worker'),
    P('gpuRequired', INT, 'cluster', results=False, default=0, minimum=0, pai=True,
      help='hundredths of a GPU per worker; 0 hides CUDA devices from '
      'TensorFlow',
      doc='hundredths of a GPU per worker: > 0 puts a Beam `accelerator` '
      'resource hint (`type:<gpu_type>;count:⌈gpuRequired/100⌉;'
      'install-nvidia-driver`) on the inference step and lets TensorFlow see '
      'the GPU; 0 hides CUDA devices from TensorFlow'),
    P('gpu_type', STR, 'cluster', results=False, default='nvidia-tesla-t4',
      help='accelerator type of the resource hint when gpuRequired > 0'),
    # --osshost: what a portable runner hands its SDK workers. Beam's Java
    # job server reads option names as snake case and writes them back, so
    # ossHost arrives as osshost (seen on Flink: '--gpurequired=0'), and
    # without the alias workers lost the endpoint.
    P('ossHost', STR, 'oss', results=False, pai=True, aliases=('osshost', 'oss_host'),
      unset='`$OSS_ENDPOINT` at run time',
      help='OSS endpoint, or per bucket `bucketA=hostA,bucketB=hostB,'
      'defaultHost`',
      doc='OSS endpoint (`oss-cn-hangzhou-internal.aliyuncs.com`, with or '
      'without `http(s)://`), or per bucket: `bucketA=hostA,bucketB=hostB,'
      'defaultHost`'),
    P('buckets', STR, 'oss', pai=True, unset='no limit',
      help='comma-separated `oss://bucket/prefix/` locations the job may '
      'touch'),
    P('arn', STR, 'oss', results=False, pai=True,
      help='RAM role ARN to assume through STS for OSS access'),
    P('batch_size', INT, 'inference', results=False, minimum=1, pai=True,
      unset='4 per core of a worker, 8 to 64', help='images per model call'),
    P('backend', CHOICE, 'inference', default='auto',
      choices=('auto', 'tensorflow', 'openvino'),
      help='`auto` (OpenVINO where it agrees with TensorFlow, else '
      'TensorFlow), `tensorflow` or `openvino`',
      doc='`auto`: OpenVINO reading the same SavedModel when it converts and '
      'its first-batch probabilities agree with TensorFlow\'s (max |Δprob| ≤ '
      '1e-4 and the same argmax in f32), else TensorFlow; `tensorflow`; '
      '`openvino`. A verdict reached on 8 or more different images is kept '
      'in the model cache (`~/.cache/ev-predict/models/verdicts`; delete it '
      'to judge again), keyed by every model file (name, size, times, '
      'inode), both versions, the CPU, the precision, the signature as read '
      'and the batch split; a later job of the same model loads one backend '
      'only (no TensorFlow import when OpenVINO agreed), and falls back to '
      'TensorFlow if OpenVINO fails on its first batch. The summary\'s '
      '`backends` says which ran, per image count'),
    P('precision', CHOICE, 'inference', default='f32', choices=('f32', 'bf16'),
      help='OpenVINO precision: `f32`, or `bf16` where it is measured to '
      'agree'),
    P('fetch_threads', INT, 'fetch', results=False, default=32, minimum=1,
      help='concurrent fetches per worker'),
    P('fetch_timeout', FLOAT, 'fetch', results=False, default=30.0, above=0,
      maximum=86400,
      help='seconds per fetch attempt, all of it (connect, headers, whole '
      'body) before a retry',
      doc='seconds per attempt at an image, all of it: for http(s) '
      'connecting, the headers, every redirect hop and the whole body; an OSS '
      '(or other file-system) image must arrive whole within it too, however '
      'slowly its bytes trickle in. Then the attempt is a `timeout` (retried '
      'per `fetch_retries`)'),
    P('fetch_retries', INT, 'fetch', results=False, default=3, minimum=0,
      help='retries of a transient fetch failure',
      doc='retries of transient failures (5xx, 408, 429, resets, timeouts, '
      'short bodies), exponential backoff from 0.5 s with jitter; never on '
      '404/403'),
    P('max_image_bytes', INT, 'fetch', default=64 << 20, minimum=1,
      help='larger images are `too_large` (checked from `Content-Length` and '
      'while reading)'),
    P('block_private_networks', BOOL, 'fetch', default=False,
      help='refuse http(s) images on loopback/private addresses (untrusted '
      'lists)',
      doc='for untrusted file lists: refuse http(s) URLs (and every redirect '
      'hop) whose host resolves to any loopback, private, link-local or '
      'otherwise non-public address (IPv4-mapped/6to4/NAT64 IPv6 forms judged '
      'by the IPv4 inside; numeric forms such as `127.1` or `0x7f.0.0.1` by '
      'what they resolve to); `forbidden` records, no request sent. The name '
      'is resolved once and the connection goes to an address that was '
      'checked (no DNS rebinding window). Off by default because local use '
      'often reads from intranet hosts. URLs with a backslash or user info '
      '(`user@host`) are refused whatever this says (`bad_line`; as a '
      'redirect target, `forbidden`)'),
    P('allow_local_files', BOOL, 'fetch', default=True,
      help='`false`: local paths and `file://` URLs in the list are refused '
      '(untrusted lists)',
      doc='`false` for untrusted file lists: local paths and `file://` URLs '
      'become `forbidden` records without touching the disk. `-Dbuckets` does '
      'not cover local files; this does'),
    P('max_image_pixels', INT, 'decode', default=89_478_485, minimum=1,
      help='larger images are `too_large`, checked from the header before '
      'decoding (decompression bombs)'),
    P('decode_threads', INT, 'decode', results=False, minimum=1,
      unset='cores per worker + 1',
      help='decode threads per worker'),
    P('decode_priority', CHOICE, 'decode', results=False, default='low',
      choices=('low', 'normal'),
      help='fetch and decode threads: `low` (they yield the cores to the '
      'model\'s threads) or `normal`',
      doc='`low`: fetch and decode threads run at the lowest scheduling '
      'priority (nice 19), so they seldom preempt the model\'s threads and '
      'decodes fill the time the model leaves idle (measured: '
      'docs/performance.md); `normal`: the process\'s own priority'),
    P('jpeg_draft', BOOL, 'decode', default=True,
      help='decode JPEGs at 1/2, 1/4 or 1/8 scale when still larger than the '
      'model input'),
    # Last in the table, shown with its group ('job').
    P('retry_errors', CHOICES, 'job', results=False, default=('timeout', 'fetch'),
      choices=ERROR_KINDS,
      help='`ev-predict retry OUTPUT`: the error kinds whose lines it runs '
      'again, comma-separated',
      doc='`ev-predict retry OUTPUT`: the error kinds (comma-separated) whose '
      'lines of OUTPUT\'s error file it runs again, merging the outcome into '
      'the result and error files in place (the transient ones by default). '
      'A job ignores it'),
)
del P

PARAMETERS: Dict[str, Parameter] = {p.name: p for p in TABLE}

# The parameters of one job, typed, defaults filled in: what plan() reads.
Values = dataclasses.make_dataclass(
    'Values', [(p.name, Any, dataclasses.field(default=p.unset_value))
               for p in TABLE], frozen=True)
Values.__module__ = __name__  # pickled with a JobPlan: found by name


def group(name: str) -> List[Parameter]:
  return [p for p in TABLE if p.group == name]


# What a pasted PAI command may carry that means nothing off PAI: parsed,
# then ignored with a one-line notice each (an unknown -D stays an error).
PAI_ONLY_PARAMETERS = {
    'lifecycle': 'the lifetime of a MaxCompute output table',
    'user_resource': 'PAI resources uploaded with the job',
    'memoryRequired': "a PAI worker's memory",
    'enableDynamicCluster': "PAI's cluster scheduling",
}


def unknown_parameter(name: str, where: str = '') -> str:
  close = difflib.get_close_matches(
      name, list(PARAMETERS) + list(PAI_ONLY_PARAMETERS), n=1)
  hint = f' (did you mean {close[0]}?)' if close else ''
  return f'unknown parameter -D{name}{where}{hint}'


def parse(params: Mapping[str, str]) -> Tuple[Any, Dict[str, str]]:
  """Strings as written -> (Values, {name: message}): each value parsed
  once, at most one message per parameter (a value that does not parse is
  not also checked against its bounds). Messages come required first, then
  types, then choices and bounds, so the first thing to fix leads."""
  problems = {p.name: f'-D{p.name} is required' for p in TABLE
              if p.required and not params.get(p.name)}
  problems.update({
      p.name: f'-D{p.name} (or -D{p.unless}) is required' for p in TABLE
      if p.unless and not params.get(p.name) and not params.get(p.unless)})
  typed = {}
  for name, text in params.items():
    p = PARAMETERS.get(name)
    if p is None:
      problems[name] = unknown_parameter(name)
      continue
    try:
      typed[name] = p.parse(text)
    except ParameterError as e:
      problems.setdefault(name, str(e))
  for p in TABLE:
    if p.name in typed and p.name not in problems:
      value = typed[p.name]
      problem = None if value in (None, ()) else \
          p.problem(value, params[p.name])
      if problem:
        problems[p.name] = problem
  good = {k: v for k, v in typed.items() if k not in problems}
  return Values(**good), problems


def plain(text: str) -> str:
  return text.replace('`', '')


def help_text(width: Optional[int] = None) -> str:
  """The parameters part of ``ev-predict --help``: a line per parameter, or
  wrapped at width columns under the column of the texts."""
  column = max(len(p.name) for p in TABLE) + 2
  lines = []
  for name in GROUPS:
    lines.append(f'  {name}:')
    for p in group(name):
      shown = plain(p.shown_default)
      extra = '' if p.required or p.unless else \
          f' [default: {shown}]' if shown else ''
      mark = '(required) ' if p.required or p.unless else ''
      if p.unless:
        extra = f' (or -D{p.unless})'
      line = f'    -D{p.name:<{column}}{mark}{plain(p.help)}{extra}'
      lines.extend(textwrap.wrap(
          line, width, subsequent_indent=' ' * (6 + column),
          break_long_words=False, break_on_hyphens=False) if width else
                   [line])
  return '\n'.join(lines)


BEGIN, END = '<!-- parameters:begin -->', '<!-- parameters:end -->'
# The generated file, and the command that regenerates it (named by the test
# that finds it stale).
DOCS = 'docs/parameters.md'
WRITE_COMMAND = f'make docs (python -m ev_predict.pipeline.parameters --write {DOCS})'


def markdown_table() -> str:
  """docs/parameters.md's table, between BEGIN and END (markers included)."""
  lines = [BEGIN,
           f'<!-- generated from pipeline/parameters.py: {WRITE_COMMAND} -->',
           '', '| group | parameter | default | meaning |', '|---|---|---|---|']
  for name in GROUPS:
    for i, p in enumerate(group(name)):
      shown = f'**`{p.name}`**' if p.pai else f'`{p.name}`'
      cells = (name if i == 0 else '', shown, p.shown_default,
               p.doc or p.help)
      lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) +
                   ' |')
  lines.append(END)
  return '\n'.join(lines)


def table_block(text: str) -> Optional[str]:
  """The generated block as it stands in a document (None: no block)."""
  match = re.search(re.escape(BEGIN) + r'.*?' + re.escape(END), text, re.S)
  return match.group(0) if match else None


def with_table(text: str) -> str:
  """A document's text with its block replaced by the generated one."""
  block = table_block(text)
  if block is None:
    raise ValueError(f'no {BEGIN} ... {END} block')
  return text.replace(block, markdown_table())


def main(argv: List[str]) -> int:
  if argv == ['--markdown']:
    print(markdown_table())
  elif argv == ['--help-text']:
    print(help_text())
  elif len(argv) == 2 and argv[0] == '--write':
    with open(argv[1], encoding='utf-8') as f:
      text = f.read()
    with open(argv[1], 'w', encoding='utf-8') as f:
      f.write(with_table(text))
  else:
    sys.stderr.write('usage: python -m ev_predict.pipeline.parameters '
                     f'--markdown | --help-text | --write {DOCS}\n')
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
