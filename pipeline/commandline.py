"""The ev-predict command line's tokenizer: PAI's ``-Dkey=value`` form.

PAI users paste commands such as
``pai -name ev_predict_ext -Dmodel_type=classifier -Dmodel_path="oss://…";``.
parse_command_line() turns that (or ``--key=value``) into parameters and
Beam flags; every other ``--flag`` is Beam's. ``-v`` and ``-vv`` are
``-Dlog_level=info`` and ``=debug``.

Only the standard library and the parameter table: ``ev-predict --help``
and the runtime environment (launcher.quiet_runtime_logs) need it before
anything imports Beam.
"""
import re
import shlex
from typing import Dict, List, Optional, Tuple

from ev_predict.pipeline.parameters import (FLOAT, INT, PAI_ONLY_PARAMETERS,
                                            PARAMETERS, ParameterError,
                                            unknown_parameter)


class UsageError(ValueError):
  """A one-line message telling the user what to fix (exit code 2)."""


_PAI_PROGRAM = 'ev_predict_ext'

# PAI's own flags before the -D parameters, each with one value.
PAI_ONLY_FLAGS = {
    '-project': 'the MaxCompute project PAI runs in',
    '-resource': 'PAI resources uploaded with the job',
    '-cluster': "PAI's cluster description",
}


# A command copied from a web page or a document: its quotes and spaces are
# typographic. As ASCII they mean what the writer meant; left as they were
# they would silently become part of a path.
_TYPOGRAPHIC = str.maketrans({'\u201c': '"', '\u201d': '"', '\u201e': '"',
                              '\u2018': "'", '\u2019': "'", '\u00a0': ' ',
                              '\u202f': ' ', '\u2007': ' '})
_DASHED = re.compile(r'(^|\s)[\u2010-\u2015\u2212](?=-?[A-Za-z])')


def _unquote(value: str) -> str:
  value = value.strip()
  if value.endswith(';'):
    value = value[:-1].rstrip()
  if len(value) >= 2 and value[0] + value[-1] in ('""', "''", '\u201c\u201d',
                                                  '\u2018\u2019'):
    value = value[1:-1]
  if re.search('[\u00a0\u202f][\u2010-\u2015\u2212-]+[A-Za-z]', value):
    raise UsageError(f'{value!r} holds a non-breaking space before another '
                     'flag (a command copied from a document?); type it as a '
                     'plain space')
  return value


def _unknown(name: str) -> UsageError:
  return UsageError(unknown_parameter(name) + '; known: ' +
                    ', '.join(PARAMETERS))


# -v and -vv: -Dlog_level=info and =debug (the more verbose of the two wins).
VERBOSE = {'-v': 1, '-vv': 2, '--verbose': 1}
_VERBOSITY = ('error', 'info', 'debug')


def split_command_line(argv: List[str]) -> List[str]:
  """argv as separate arguments: a whole pasted PAI command given as one
  argument is split as a shell would. Anything can be appended to the
  result (not to a pasted command)."""
  args = list(argv)
  if args and args[0].lstrip().startswith('pai '):
    pasted = _DASHED.sub(r'\1-', args[0].translate(_TYPOGRAPHIC))
    try:
      args = shlex.split(pasted) + args[1:]
    except ValueError as e:
      raise UsageError(f'cannot split the pasted command ({e}): a quote '
                       'is not closed, or it ends in a backslash') from None
  return args


def parse_command_line(argv: List[str], errors: Optional[List[str]] = None,
                       notices: Optional[List[str]] = None
                       ) -> Tuple[Dict[str, str], List[str]]:
  """argv -> (PAI parameters as strings, remaining Beam flags). A problem
  raises UsageError; given a list, errors collects every problem instead and
  values are left unchecked (submit checks them with the template's).
  Given a list, notices gets one line per PAI-only flag or parameter that
  was ignored."""
  args = split_command_line(argv)
  if args and args[0] == 'pai':
    args = args[1:]
  params: Dict[str, str] = {}
  beam_args: List[str] = []

  def problem(error: UsageError) -> None:
    if errors is None:
      raise error
    errors.append(str(error))

  def store(key: str, value: str) -> None:
    value = _unquote(value)
    params[key] = value if errors is not None else _checked(key, value)

  verbosity = 0
  i = 0
  while i < len(args):
    arg = args[i].strip()
    i += 1
    if not arg or arg == ';':
      continue
    if arg.rstrip(';') in VERBOSE:  # a pasted command's last may end in ;
      verbosity += VERBOSE[arg.rstrip(';')]
      continue
    if arg == '-name':
      if i >= len(args) or _unquote(args[i]) != _PAI_PROGRAM:
        problem(UsageError(f'-name must be {_PAI_PROGRAM}'))
      i += 1
      continue
    flag, eq, inline = arg.partition('=')
    if flag in PAI_ONLY_FLAGS:
      if not eq:
        if i >= len(args) or args[i].startswith('-'):
          problem(UsageError(f'{flag} needs a value'))
          continue
        inline = args[i]
        i += 1
      if notices is not None:
        notices.append(f'{flag} {_unquote(inline)} has no effect here '
                       f'({PAI_ONLY_FLAGS[flag]}); ignored')
      continue
    if arg.startswith('-D'):
      key, sep, value = arg[2:].partition('=')
      if not sep or not key:
        problem(UsageError(f'malformed parameter {arg!r}; use -Dkey=value'))
      elif key in PAI_ONLY_PARAMETERS and key not in PARAMETERS:
        if notices is not None:
          notices.append(f'-D{key} has no effect here '
                         f'({PAI_ONLY_PARAMETERS[key]}); ignored')
      elif key not in PARAMETERS:
        # Among other problems, the list of every parameter would bury them.
        problem(_unknown(key) if errors is None else
                UsageError(unknown_parameter(key)))
      else:
        store(key, value)
      continue
    if arg.startswith('--'):
      key, sep, value = arg[2:].partition('=')
      if key in PARAMETERS:
        if not sep:
          if i >= len(args):
            problem(UsageError(f'--{key} needs a value'))
            continue
          value = args[i]
          i += 1
        store(key, value)
      else:
        beam_args.append(arg)
        # A Beam flag's separate value ("--runner FlinkRunner").
        if not sep and i < len(args) and not args[i].startswith('-'):
          beam_args.append(args[i])
          i += 1
      continue
    problem(UsageError(f'unexpected argument {arg!r}; parameters look like '
                       '-Dkey=value'))
  if verbosity:
    _add_verbosity(params, _VERBOSITY[min(verbosity, 2)])
  return params, beam_args


def _add_verbosity(params: Dict[str, str], level: str) -> None:
  order = PARAMETERS['log_level'].choices
  given = params.get('log_level')
  # A value that is not a level stays, to be refused as written.
  if given is None or (given in order and
                       order.index(level) > order.index(given)):
    params['log_level'] = level


def type_error(key: str, value: str) -> Optional[str]:
  """The message for a value argparse could not convert (the numbers)."""
  parameter = PARAMETERS[key]
  if parameter.kind not in (INT, FLOAT):
    return None
  try:
    parameter.parse(value)
  except ParameterError as e:
    return str(e)
  return None


def _checked(key: str, value: str) -> str:
  problem = type_error(key, value)
  if problem:
    raise UsageError(problem)
  return value
