"""``ev-predict submit``: run a job from a template (templates/*.yaml).

    ev-predict submit --template templates/flink.yaml \\
        -Dmodel_path=... -Dinput_oss_file=... -Doutput_oss_file=... \\
        [--set NAME=value ...] [--beam_flag=value ...] [--dry-run]

A template is YAML with two sections, ``parameters`` (PAI's -D parameters)
and ``beam_options`` (Beam flags: runner and cluster settings), whose string
values may hold placeholders:

    ${name}            required: an error when it has no value
    ${name:?message}   required, with a hint in the error
    ${name:-default}   the default when unset or empty (may nest ${...})
    $$                 a literal $

A placeholder's value comes from ``--set name=value``, else (lowercase or
camelCase names: job parameters) the -D parameter of that name, or
(UPPER_CASE names: cluster settings) the environment, else the built-ins
EV_PREDICT_ROOT (the repository root) and TEMPLATE_DIR. In ``beam_options``
a parameter name stands for the parameter's resolved value. A -D parameter
always replaces the template's entry of that name; an empty value leaves the
parameter to ev-predict's default.

Everything that can be checked without touching a file is checked before
anything runs, and all problems are reported in one message (exit code 2):
unknown or secret-looking names, missing values, types, choices, ranges,
-Dbuckets, Beam flags. Whether the model, the file list and the output
folder exist is checked when the job starts (pipeline.graph.plan), so
``--dry-run`` works anywhere. A submission then runs exactly what
``ev-predict <resolved argv>`` runs (pipeline.cli.main).

Credentials never belong in a template: each process reads them from its
environment (OSS_ACCESS_KEY_ID/SECRET, OSS_SESSION_TOKEN). Templates that name
a secret-looking option or placeholder are refused, and output masks any
secret-looking option and any value equal to one of those variables.
"""
import dataclasses
import difflib
import json
import os
import re
import shlex
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from ev_predict.pipeline.graph import check_parameters
from ev_predict.pipeline.options import (PARAMETERS, UsageError, check_beam_flags,
                              unknown_parameter)

USAGE = """\
usage: ev-predict submit --template FILE -Dkey=value ... [--set NAME=value ...]
                         [--beam_flag=value ...] [--dry-run]

  --template FILE    job template (templates/local.yaml, flink.yaml, ...)
  -Dkey=value        a PAI parameter (replaces the template's entry)
  --set NAME=value   a value for the template's ${NAME} placeholders
  --beam_flag=value  a Beam flag (replaces the template's entry)
  --dry-run          print the resolved ev-predict command line and options
                     (secrets masked) and exit without running
"""

MASK = '****'
# Names whose values are credentials. output_key names a model output.
_SECRET_NAME = re.compile(
    r'key|secret|token|passw(or)?d|credential|connection_string', re.I)
_NOT_SECRET = frozenset({'output_key'})
# Environment variables whose values are masked wherever they appear.
SECRET_ENV = ('OSS_ACCESS_KEY_SECRET', 'OSS_SESSION_TOKEN')

_OWN_OPTIONS = ('dry-run', 'template', 'set')
_SECTIONS = ('description', 'parameters', 'beam_options')
_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_secret_name(name: str) -> bool:
  return name not in _NOT_SECRET and bool(_SECRET_NAME.search(name))


def _is_env_name(name: str) -> bool:
  return name.upper() == name


# ------------------------------------------------------------ YAML loading


class _Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
  """SafeLoader that keeps numbers as written: a version "1.20" must not
  become the float 1.2. Booleans and nulls keep their meaning."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag.rsplit(':', 1)[-1] in ('bool', 'null', 'merge')]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_template(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      doc = yaml.load(f, Loader=_Loader)  # nosec: a SafeLoader
  except OSError as e:
    raise UsageError(f'cannot read template {path}: {e.strerror}') from e
  except yaml.YAMLError as e:
    raise UsageError(f'{path}: invalid YAML: '
                     f'{" ".join(str(e).split())}') from e
  if doc is None:
    doc = {}
  if not isinstance(doc, dict):
    raise UsageError(f'{path}: a template is a mapping with sections '
                     f'{", ".join(_SECTIONS)}')
  unknown = [str(k) for k in doc if k not in _SECTIONS]
  if unknown:
    raise UsageError(f'{path}: unknown section(s) {", ".join(unknown)}; '
                     f'sections: {", ".join(_SECTIONS)}')
  for section in ('parameters', 'beam_options'):
    value = doc.get(section)
    if value is None:
      doc[section] = {}
    elif not isinstance(value, dict):
      raise UsageError(f'{path}: {section} must be a mapping of name: value')
  return doc


# ------------------------------------------------------------ placeholders


@dataclasses.dataclass(frozen=True)
class _Placeholder:
  name: str
  op: str  # '' (required), '-' (default) or '?' (required, with a message)
  arg: tuple  # the default's nodes, or the message as one string


def _parse(text: str, pos: int = 0, nested: bool = False):
  """text -> (nodes, end): nodes are strings and _Placeholders. Nested: a
  default, which ends at its unbalanced '}'."""
  nodes: List[object] = []
  literal: List[str] = []
  depth = 0
  while pos < len(text):
    ch = text[pos]
    if ch == '$' and text.startswith('$$', pos):
      literal.append('$')
      pos += 2
      continue
    if ch == '$' and text.startswith('${', pos):
      if literal:
        nodes.append(''.join(literal))
        literal = []
      node, pos = _parse_placeholder(text, pos + 2)
      nodes.append(node)
      continue
    if nested and ch == '{':
      depth += 1
    elif nested and ch == '}':
      if depth == 0:
        break
      depth -= 1
    literal.append(ch)
    pos += 1
  else:
    if nested:
      raise ValueError(f'unterminated placeholder in {text!r}')
  if literal:
    nodes.append(''.join(literal))
  return tuple(nodes), pos


def _parse_placeholder(text: str, pos: int):
  match = _NAME.match(text, pos)
  if not match:
    raise ValueError(f'bad placeholder in {text!r}: ${{ must be followed by '
                     'a name')
  name, pos = match.group(), match.end()
  if text.startswith('}', pos):
    return _Placeholder(name, '', ()), pos + 1
  if text.startswith(':-', pos):
    default, pos = _parse(text, pos + 2, nested=True)
    return _Placeholder(name, '-', default), pos + 1
  if text.startswith(':?', pos):
    end = text.find('}', pos)
    if end < 0:
      raise ValueError(f'unterminated placeholder in {text!r}')
    return _Placeholder(name, '?', (text[pos + 2:end].strip(),)), end + 1
  raise ValueError(f'bad placeholder ${{{name}... in {text!r}: use '
                   f'${{{name}}}, ${{{name}:-default}} or ${{{name}:?message}}')


def _names(nodes) -> List[str]:
  out = []
  for node in nodes:
    if isinstance(node, _Placeholder):
      out.append(node.name)
      if node.op == '-':
        out.extend(_names(node.arg))
  return out


@dataclasses.dataclass
class _Context:
  sets: Mapping[str, str]
  params: Mapping[str, str]
  environ: Mapping[str, str]
  builtins: Mapping[str, str]
  missing: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

  def lookup(self, name: str) -> str:
    for source in (self.sets,
                   self.environ if _is_env_name(name) else self.params,
                   self.builtins):
      value = source.get(name)
      if value not in (None, ''):
        return value
    return ''


def _render_nodes(nodes, ctx: _Context) -> str:
  out = []
  for node in nodes:
    if not isinstance(node, _Placeholder):
      out.append(node)
      continue
    value = ctx.lookup(node.name)
    if not value and node.op == '-':
      value = _render_nodes(node.arg, ctx)
    elif not value:
      ctx.missing.append((node.name, node.arg[0] if node.arg else ''))
    out.append(value)
  return ''.join(out)


# ------------------------------------------------------------ checks


# ------------------------------------------------------------ resolving


@dataclasses.dataclass
class Resolved:
  template: str
  params: Dict[str, str]  # in template order, then the command line's
  beam_args: List[str]

  @property
  def argv(self) -> List[str]:
    return [f'-D{k}={v}' for k, v in self.params.items()] + self.beam_args


@dataclasses.dataclass
class Request:
  template: Optional[str] = None
  params: Dict[str, str] = dataclasses.field(default_factory=dict)
  sets: Dict[str, str] = dataclasses.field(default_factory=dict)
  beam_args: List[str] = dataclasses.field(default_factory=list)
  dry_run: bool = False
  help: bool = False
  errors: List[str] = dataclasses.field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Request:
  """Submit's own options; -D/--key parameters as ev-predict takes them;
  any other --flag is a Beam flag. Problems are collected in .errors."""
  # pylint: disable=import-outside-toplevel,protected-access
  from ev_predict.pipeline.options import _unquote
  req = Request()
  args = list(argv)
  i = 0

  def value_of(arg, key):
    nonlocal i
    _, sep, value = arg.partition('=')
    if sep:
      return value
    if i < len(args):
      i += 1
      return args[i - 1]
    req.errors.append(f'{key} needs a value')
    return None

  while i < len(args):
    arg = args[i]
    i += 1
    if arg in ('-h', '--help'):
      req.help = True
    elif arg == '--dry-run':
      req.dry_run = True
    elif arg == '--template' or arg.startswith('--template='):
      req.template = value_of(arg, '--template')
    elif arg == '--set' or arg.startswith('--set='):
      item = value_of(arg, '--set')
      if item is None:
        continue
      name, sep, value = item.partition('=')
      if not sep or not _NAME.fullmatch(name):
        req.errors.append(f'--set {item!r}: use --set NAME=value')
      else:
        req.sets[name] = value
    elif arg.startswith('-D'):
      key, sep, value = arg[2:].partition('=')
      if not sep or not key:
        req.errors.append(f'malformed parameter {arg!r}; use -Dkey=value')
      elif key not in PARAMETERS:
        req.errors.append(unknown_parameter(key))
      else:
        req.params[key] = _unquote(value)
    elif arg.startswith('--'):
      key, sep, value = arg[2:].partition('=')
      close = difflib.get_close_matches(key.replace('_', '-'),
                                        _OWN_OPTIONS, n=1, cutoff=0.8)
      if close:
        req.errors.append(f'unknown option --{key} (did you mean '
                          f'--{close[0]}?)')
        if not sep and close[0] != 'dry-run' and i < len(args) and \
            not args[i].startswith('-'):
          i += 1  # its value
      elif key in PARAMETERS:
        value = value_of(arg, f'--{key}')
        if value is not None:
          req.params[key] = _unquote(value)
      else:
        req.beam_args.append(arg)
        if not sep and i < len(args) and not args[i].startswith('-'):
          req.beam_args.append(args[i])
          i += 1
    else:
      req.errors.append(f'unexpected argument {arg!r}; parameters look like '
                        '-Dkey=value')
  if not req.help and not req.template:
    req.errors.append('--template FILE is required')
  return req


def _template_names(value) -> List[str]:
  """Every placeholder name in a template (parse errors are found later)."""
  if isinstance(value, dict):
    return [n for v in value.values() for n in _template_names(v)]
  if isinstance(value, list):
    return [n for v in value for n in _template_names(v)]
  if isinstance(value, str):
    try:
      return _names(_parse(value)[0])
    except ValueError:
      return []
  return []


def _flag_name(arg: str) -> Optional[str]:
  return arg[2:].partition('=')[0] if arg.startswith('--') else None


def _scalar(value):
  """YAML values -> strings, bools and None (lists lose empty items)."""
  if isinstance(value, list):
    items = [_scalar(v) for v in value]
    return [v for v in items if v not in (None, '')]
  if isinstance(value, dict):
    return {str(k): _scalar(v) for k, v in value.items()}
  if value is None or isinstance(value, (str, bool)):
    return value
  return str(value)


def resolve(req: Request, environ: Optional[Mapping[str, str]] = None
            ) -> Resolved:
  """Template + command line -> the ev-predict argv; raises one UsageError
  naming every problem found."""
  environ = os.environ if environ is None else environ
  path = req.template
  doc = load_template(path)
  errors = list(req.errors)
  builtins = {'EV_PREDICT_ROOT': _ROOT,
              'TEMPLATE_DIR': os.path.dirname(os.path.abspath(path))}
  used = set(_template_names(doc))

  def render(value, ctx, where):
    """A YAML value -> rendered value (strings, lists, dicts, bools)."""
    if isinstance(value, str):
      try:
        nodes, _ = _parse(value)
      except ValueError as e:
        errors.append(f'{where}: {e}')
        return ''
      for name in _names(nodes):
        if is_secret_name(name):
          errors.append(f'{where}: placeholder ${{{name}}} looks like a '
                        'secret; credentials come from the environment of '
                        'each process, never from a template')
          return ''
      return _render_nodes(nodes, ctx)
    if isinstance(value, list):
      return [render(v, ctx, where) for v in value]
    if isinstance(value, dict):
      return {str(k): render(v, ctx, where) for k, v in value.items()}
    return value

  def report_missing(ctx, where):
    for name, message in ctx.missing:
      hint = f' ({message})' if message else ''
      if name in PARAMETERS:
        errors.append(f'-D{name} is required{hint}')
      elif _is_env_name(name):
        errors.append(f'{where}: ${{{name}}} is not set{hint}; '
                      f'--set {name}=... or export {name}')
      else:
        errors.append(f'{where}: ${{{name}}} is not set{hint}; '
                      f'--set {name}=...')
    ctx.missing.clear()

  # Parameters: the template's entries, each replaced by its -D if given.
  params: Dict[str, str] = {}
  ctx = _Context(req.sets, req.params, environ, builtins)
  for key, raw in doc['parameters'].items():
    key = str(key)
    where = f'parameters.{key}'
    if key not in PARAMETERS:
      errors.append(unknown_parameter(key, f' in {path}'))
      continue
    if is_secret_name(key):  # not today; a guard for new parameters
      errors.append(f'{where} looks like a secret: never in a template')
      continue
    if key in req.params:
      params[key] = req.params[key]
      continue
    value = _scalar(render(raw, ctx, where))
    if isinstance(value, bool):
      value = 'true' if value else 'false'
    elif isinstance(value, list):
      value = ','.join(str(v) for v in value)
    elif isinstance(value, dict):
      errors.append(f'{where} must be a single value')
      continue
    if value not in (None, ''):
      params[key] = value
    report_missing(ctx, where)
  for key, value in req.params.items():
    if key not in params and value != '':
      params[key] = value
  params = {k: v for k, v in params.items() if v != ''}
  errors.extend(e for e in check_parameters(params)
                if not any(seen.startswith(e) for seen in errors))

  # Beam flags: parameter names stand for the resolved parameters.
  beam_args: List[str] = []
  ctx = _Context(req.sets, params, environ, builtins)
  for key, raw in doc['beam_options'].items():
    key = str(key)
    where = f'beam_options.{key}'
    if key in PARAMETERS:
      errors.append(f'{where}: {key} is a parameter; put it under '
                    'parameters')
      continue
    if is_secret_name(key):
      errors.append(f'{where} looks like a secret: credentials never belong '
                    'in a template')
      continue
    value = _scalar(render(raw, ctx, where))
    report_missing(ctx, where)
    beam_args.extend(_beam_flags(key, value))
  beam_args = _merge_flags(beam_args, req.beam_args)
  try:
    check_beam_flags(beam_args)
  except UsageError as e:
    errors.append(str(e))

  for name in sorted(set(req.sets) - used):
    close = difflib.get_close_matches(name, used, n=1)
    hint = f' (did you mean {close[0]}?)' if close else ''
    errors.append(f'--set {name}: {path} has no ${{{name}}}{hint}')

  errors = list(dict.fromkeys(errors))
  if errors:
    noun = 'problem' if len(errors) == 1 else 'problems'
    raise UsageError(f'{path}: {len(errors)} {noun}: ' + '; '.join(errors))
  return Resolved(path, params, beam_args)


def _beam_flags(key: str, value) -> List[str]:
  if value is True:
    return [f'--{key}']
  if value in (None, False, ''):
    return []
  if isinstance(value, list):
    return [f for v in value for f in _beam_flags(key, v)]
  if isinstance(value, dict):
    value = json.dumps(value, separators=(',', ':'))
  return [f'--{key}={value}']


def _merge_flags(template: List[str], extra: List[str]) -> List[str]:
  """Command-line Beam flags replace the template's flags of that name."""
  names = {_flag_name(a) for a in extra} - {None}
  return [a for a in template if _flag_name(a) not in names] + list(extra)


# ------------------------------------------------------------ output


class Masker:
  """Hides secret-looking options and the values of SECRET_ENV."""

  def __init__(self, environ: Optional[Mapping[str, str]] = None):
    environ = os.environ if environ is None else environ
    self.values = sorted({environ.get(n) for n in SECRET_ENV} - {None, ''},
                         key=len, reverse=True)

  def text(self, text: str) -> str:
    for value in self.values:
      text = text.replace(value, MASK)
    return text

  def arg(self, arg: str) -> str:
    if arg.startswith(('-D', '--')):
      name, sep, _ = arg[2:].partition('=')
      if sep and is_secret_name(name):
        return f'{arg[:2]}{name}={MASK}'
    return self.text(arg)

  def option(self, name: str, value) -> str:
    if value not in (None, '') and is_secret_name(name):
      return MASK
    if not isinstance(value, str):
      value = json.dumps(value)
    return self.text(value)


def command_line(resolved: Resolved, masker: Masker) -> str:
  return shlex.join(['ev-predict'] + [masker.arg(a) for a in resolved.argv])


def dry_run_report(resolved: Resolved, options, masker: Masker) -> str:
  """The resolved command line, then the options ev-predict would run with
  (explicit parameters, then every Beam option that is not a default)."""
  everything = options.get_all_options()
  lines = [command_line(resolved, masker), 'parameters:']
  for name in resolved.params:
    lines.append(f'  {name}: {masker.option(name, everything.get(name))}')
  lines.append('beam_options:')
  for name, value in options.get_all_options(drop_default=True).items():
    if name not in PARAMETERS:
      lines.append(f'  {name}: {masker.option(name, value)}')
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str]) -> int:
  from ev_predict.pipeline import cli  # pylint: disable=import-outside-toplevel
  masker = Masker()
  try:
    req = parse_args(argv)
    if req.help:
      sys.stdout.write(USAGE)
      return 0
    if not req.template:
      raise UsageError('; '.join(req.errors))
    resolved = resolve(req)
    if req.dry_run:
      # The same option handling as a run (no file is opened).
      report = dry_run_report(resolved, cli.make_options(resolved.argv),
                              masker)
  except UsageError as e:
    sys.stderr.write(f'ev-predict: error: {masker.text(str(e))}\n')
    return 2
  if req.dry_run:
    sys.stdout.write(report)
    return 0
  sys.stderr.write(f'ev-predict: submitting {resolved.template}: '
                   f'{command_line(resolved, masker)}\n')
  # What the CLI does at import for its own argv, for the resolved one (a
  # template may ask for a GPU).
  cli._quiet_runtime_logs(resolved.argv)  # pylint: disable=protected-access
  return cli.main(resolved.argv)
