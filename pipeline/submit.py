"""``ev-predict submit``: run a job from a template (templates/*.yaml).

    ev-predict submit --template NAME|FILE \\
        -Dmodel_path=... -Dinput_oss_file=... -Doutput_oss_file=... \\
        [--set NAME=value ...] [--beam_flag=value ...] [--dry-run]

A template (grammar, placeholders, bundled names and built-ins:
pipeline/template.py) has two sections, ``parameters`` (PAI's -D
parameters) and ``beam_options`` (Beam flags: runner and cluster settings).
In ``beam_options`` a parameter name stands for the parameter's resolved
value. A -D parameter always replaces the template's entry of that name; an
empty value leaves the parameter to ev-predict's default. A command-line
Beam flag replaces the template's flags of that name.

Everything that can be checked without touching a file is checked before
anything runs, and all problems are reported in one message (exit code 2):
unknown or secret-looking names, missing values, types, choices, ranges,
-Dbuckets, Beam flags. Whether the model, the file list and the output
folder exist is checked when the job starts (pipeline.graph.plan), so
``--dry-run`` works anywhere. A submission then runs exactly what
``ev-predict <resolved argv>`` runs (pipeline.launcher.launch).

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
from typing import Dict, List, Mapping, Optional, Sequence

from ev_predict.pipeline import launcher, logs, template
from ev_predict.pipeline.graph import check_parameters
from ev_predict.pipeline.commandline import UsageError, parse_command_line
from ev_predict.pipeline.options import check_beam_flags
from ev_predict.pipeline.parameters import PARAMETERS, unknown_parameter

USAGE = """\
usage: ev-predict submit --template NAME|FILE -Dkey=value ...
                         [--set NAME=value ...] [--beam_flag=value ...]
                         [--dry-run]

  --template NAME|FILE  job template: a bundled one ({bundled}) or a file
  -Dkey=value           a PAI parameter (replaces the template's entry)
  --set NAME=value      a value for the template's ${{NAME}} placeholders
  --beam_flag=value     a Beam flag (replaces the template's entry)
  --dry-run             print the resolved ev-predict command line and
                        options (secrets masked) and exit without running
  -v, -vv               the libraries' log lines too (-Dlog_level=info,
                        debug)

The parameters, their meaning and defaults: ev-predict --help.
"""

MASK = '****'
# Names whose values are credentials. output_key names a model output.
_SECRET_NAME = re.compile(
    r'key|secret|token|passw(or)?d|credential|connection_string', re.I)
_NOT_SECRET = frozenset({'output_key'})
# Environment variables whose values are masked wherever they appear.
SECRET_ENV = ('OSS_ACCESS_KEY_SECRET', 'OSS_SESSION_TOKEN')

_OWN_OPTIONS = ('dry-run', 'template', 'set')


def is_secret_name(name: str) -> bool:
  return name not in _NOT_SECRET and bool(_SECRET_NAME.search(name))


def _secret_placeholder(name: str) -> Optional[str]:
  if is_secret_name(name):
    return ('looks like a secret; credentials come from the environment of '
            'each process, never from a template')
  return None


# ------------------------------------------------------------ command line


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
  """Submit's own options; the rest as ev-predict's command line takes it
  (commandline.parse_command_line: -D/--key parameters, Beam flags). Problems
  are collected in .errors; values are checked by resolve()."""
  req = Request()
  rest = _own_options(list(argv), req)
  req.params, req.beam_args = parse_command_line(rest, errors=req.errors)
  if not req.help and not req.template:
    req.errors.append('--template NAME|FILE is required')
  return req


def _own_options(args: List[str], req: Request) -> List[str]:
  """Takes --template, --set, --dry-run and -h out of args (and near-misses
  of them, which would otherwise pass as Beam flags); returns the rest."""
  rest: List[str] = []
  i = 0
  while i < len(args):
    arg = args[i]
    i += 1
    option, sep, value = arg.partition('=')
    if arg in ('-h', '--help'):
      req.help = True
    elif arg == '--dry-run':
      req.dry_run = True
    elif option in ('--template', '--set'):
      if not sep and i < len(args):
        value, i = args[i], i + 1
      elif not sep:
        req.errors.append(f'{option} needs a value')
        continue
      if option == '--template':
        req.template = value
      else:
        _add_set(req, value)
    elif arg.startswith('--') and _near_own_option(option[2:]):
      close = _near_own_option(option[2:])
      req.errors.append(f'unknown option {option} (did you mean --{close}?)')
      if not sep and close != 'dry-run' and i < len(args) and \
          not args[i].startswith('-'):
        i += 1  # its value
    else:
      rest.append(arg)
  return rest


def _near_own_option(key: str) -> Optional[str]:
  close = difflib.get_close_matches(key.replace('_', '-'), _OWN_OPTIONS, n=1,
                                    cutoff=0.8)
  return close[0] if close else None


def _add_set(req: Request, item: str) -> None:
  name, sep, value = item.partition('=')
  if not sep or not template.NAME.fullmatch(name):
    req.errors.append(f'--set {item!r}: use --set NAME=value')
  else:
    req.sets[name] = value


# ------------------------------------------------------------ resolving


def resolve(req: Request, environ: Optional[Mapping[str, str]] = None
            ) -> Resolved:
  """Template + command line -> the ev-predict argv; raises one UsageError
  naming every problem found."""
  path = template.locate(req.template)
  doc = template.load(path, label=req.template)
  job = _Resolution(req, os.environ if environ is None else environ,
                    template.builtins(path))
  params = job.parameters(doc['parameters'])
  beam_args = job.beam_options(doc['beam_options'], params)
  job.check_sets(set(template.placeholder_names(doc)))
  job.raise_errors()
  return Resolved(req.template, params, beam_args)


class _Resolution:
  """One resolve(): the request, where placeholders get their values, and
  every problem found so far."""

  def __init__(self, req: Request, environ: Mapping[str, str],
               builtins: Mapping[str, str]):
    self.req, self.environ, self.builtins = req, environ, builtins
    self.label = req.template
    self.errors = list(req.errors)

  def render(self, raw, ctx: template.Context, where: str):
    value = template.scalar(template.render(raw, ctx, where, self.errors,
                                            refuse=_secret_placeholder))
    self._report_missing(ctx, where)
    return value

  def _report_missing(self, ctx: template.Context, where: str) -> None:
    for name, message in ctx.missing:
      hint = f' ({message})' if message else ''
      if name in PARAMETERS:
        self.errors.append(f'-D{name} is required{hint}')
      elif template.is_env_name(name):
        self.errors.append(f'{where}: ${{{name}}} is not set{hint}; '
                           f'--set {name}=... or export {name}')
      else:
        self.errors.append(f'{where}: ${{{name}}} is not set{hint}; '
                           f'--set {name}=...')
    ctx.missing.clear()

  def parameters(self, section: Mapping) -> Dict[str, str]:
    """The template's entries, each replaced by its -D if given, then the
    command line's others; checked as a job's parameters."""
    given = self.req.params
    params: Dict[str, str] = {}
    ctx = template.Context(self.req.sets, given, self.environ, self.builtins)
    for key, raw in section.items():
      key, where = str(key), f'parameters.{key}'
      if key not in PARAMETERS:
        self.errors.append(unknown_parameter(key, f' in {self.label}'))
      elif is_secret_name(key):  # not today; a guard for new parameters
        self.errors.append(f'{where} looks like a secret: never in a '
                           'template')
      elif key in given:
        params[key] = given[key]
      else:
        value = self._parameter_value(self.render(raw, ctx, where), where)
        if value not in (None, ''):
          params[key] = value
    params.update((k, v) for k, v in given.items() if k not in params)
    params = {k: v for k, v in params.items() if v != ''}
    # One problem per parameter: the template's (with its hint) first.
    said = {e.split(' ', 1)[0] for e in self.errors}
    self.errors.extend(e for e in check_parameters(params)
                       if e.split(' ', 1)[0] not in said)
    return params

  def _parameter_value(self, value, where: str) -> Optional[str]:
    if isinstance(value, bool):
      return 'true' if value else 'false'
    if isinstance(value, list):
      return ','.join(str(v) for v in value)
    if isinstance(value, dict):
      self.errors.append(f'{where} must be a single value')
      return None
    return value

  def beam_options(self, section: Mapping, params: Mapping[str, str]
                   ) -> List[str]:
    """The template's Beam flags, where parameter names stand for the
    resolved parameters, replaced by the command line's of the same name."""
    beam_args: List[str] = []
    ctx = template.Context(self.req.sets, params, self.environ, self.builtins)
    for key, raw in section.items():
      key, where = str(key), f'beam_options.{key}'
      if key in PARAMETERS:
        self.errors.append(f'{where}: {key} is a parameter; put it under '
                           'parameters')
      elif is_secret_name(key):
        self.errors.append(f'{where} looks like a secret: credentials never '
                           'belong in a template')
      else:
        beam_args.extend(_beam_flags(key, self.render(raw, ctx, where)))
    beam_args = _merge_flags(beam_args, self.req.beam_args)
    try:
      check_beam_flags(beam_args)
    except UsageError as e:
      self.errors.append(str(e))
    return beam_args

  def check_sets(self, used: set) -> None:
    for name in sorted(set(self.req.sets) - used):
      close = difflib.get_close_matches(name, used, n=1)
      hint = f' (did you mean {close[0]}?)' if close else ''
      self.errors.append(f'--set {name}: {self.label} has no ${{{name}}}'
                         f'{hint}')

  def raise_errors(self) -> None:
    errors = list(dict.fromkeys(self.errors))
    if errors:
      noun = 'problem' if len(errors) == 1 else 'problems'
      raise UsageError(f'{self.label}: {len(errors)} {noun}: ' +
                       '; '.join(errors))


def _flag_name(arg: str) -> Optional[str]:
  return arg[2:].partition('=')[0] if arg.startswith('--') else None


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


def _merge_flags(template_flags: List[str], extra: List[str]) -> List[str]:
  """Command-line Beam flags replace the template's flags of that name."""
  names = {_flag_name(a) for a in extra} - {None}
  return [a for a in template_flags if _flag_name(a) not in names] + \
      list(extra)


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
  masker = Masker()
  try:
    req = parse_args(argv)
    if req.help:
      sys.stdout.write(USAGE.format(bundled=', '.join(template.bundled())))
      return 0
    if not req.template:
      raise UsageError('; '.join(req.errors))
    resolved = resolve(req)
    if req.dry_run:
      # The same option handling as a run (no file is opened).
      argv = logs.with_harness_level(resolved.argv,
                                     logs.level_of(resolved.argv)[0])
      report = dry_run_report(resolved, launcher.make_options(argv), masker)
  except UsageError as e:
    sys.stderr.write(f'ev-predict: error: {masker.text(str(e))}\n')
    return 2
  if req.dry_run:
    sys.stdout.write(report)
    return 0
  sys.stderr.write(f'ev-predict: submitting {resolved.template}: '
                   f'{command_line(resolved, masker)}\n')
  # What `ev-predict` does first for its own argv, for the resolved one (a
  # template may ask for a GPU).
  launcher.quiet_runtime_logs(resolved.argv)
  return launcher.launch(resolved.argv)
