"""Job templates: finding, loading and rendering them (``ev-predict submit``;
what the values mean is pipeline/submit.py's business).

A template is YAML with the sections ``description``, ``parameters`` and
``beam_options``, whose string values may hold placeholders:

    ${name}            required: an error when it has no value
    ${name:?message}   required, with a hint in the error
    ${name:-default}   the default when unset or empty (may nest ${...})
    $$                 a literal $

A placeholder's value comes from ``--set name=value``, else (lowercase or
camelCase names) the -D parameter of that name or (UPPER_CASE names) the
environment, else the built-ins:

    EV_PREDICT_ROOT    the repository root when ev-predict runs from a
                       checkout (templates/flink.yaml and spark.yaml find the
                       cluster scripts' build/ there), else the current
                       directory (an installed wheel has no repository)
    TEMPLATE_DIR       the folder of the template file

``--template`` takes a file path or the name of a template shipped in the
package ev_predict.templates (local, flink, spark, dataflow); a file that
exists wins. Installed packages are plain folders (pip installs them so), so
a bundled template has a path and a TEMPLATE_DIR like any other.
"""
import dataclasses
import difflib
import importlib.resources
import os
import re
from typing import Callable, List, Mapping, Optional, Tuple

import yaml

from ev_predict.pipeline.commandline import UsageError

PACKAGE = 'ev_predict.templates'
SECTIONS = ('description', 'parameters', 'beam_options')
NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_env_name(name: str) -> bool:
  return name.upper() == name


# ------------------------------------------------------------ finding


def bundled() -> List[str]:
  """The names of the templates shipped with ev-predict."""
  return sorted(entry.name[:-len('.yaml')]
                for entry in importlib.resources.files(PACKAGE).iterdir()
                if entry.name.endswith('.yaml'))


def locate(name: str) -> str:
  """--template's value -> the template's path: the file given, else the
  bundled template of that name (else the name: load() says it is missing)."""
  if os.path.exists(name) or name not in bundled():
    return name
  return str(importlib.resources.files(PACKAGE).joinpath(f'{name}.yaml'))


def _bundled_hint(name: str) -> str:
  names = bundled()
  close = difflib.get_close_matches(name, names, n=1)
  guess = f'did you mean {close[0]}? ' if close else ''
  return f' ({guess}bundled templates: {", ".join(names)})'


def repository_root() -> str:
  """EV_PREDICT_ROOT: a checkout holds the code's folders next to setup.py
  (package_dir); an installed ev_predict package has no such parent."""
  if os.path.isfile(os.path.join(_CHECKOUT, 'setup.py')) and \
      os.path.isdir(os.path.join(_CHECKOUT, 'templates')):
    return _CHECKOUT
  return os.getcwd()


def builtins(path: str) -> Mapping[str, str]:
  return {'EV_PREDICT_ROOT': repository_root(),
          'TEMPLATE_DIR': os.path.dirname(os.path.abspath(path))}


# ------------------------------------------------------------ YAML loading


class _Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
  """SafeLoader that keeps numbers as written: a version "1.20" must not
  become the float 1.2. Booleans and nulls keep their meaning."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag.rsplit(':', 1)[-1] in ('bool', 'null', 'merge')]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load(path: str, label: Optional[str] = None) -> dict:
  """The template at path as {section: value}; messages name it as label
  (what the user typed)."""
  label = path if label is None else label
  try:
    with open(path, encoding='utf-8') as f:
      doc = yaml.load(f, Loader=_Loader)  # nosec: a SafeLoader
  except OSError as e:
    hint = '' if os.sep in label else _bundled_hint(label)
    raise UsageError(f'cannot read template {label}: {e.strerror}{hint}'
                     ) from e
  except yaml.YAMLError as e:
    raise UsageError(f'{label}: invalid YAML: '
                     f'{" ".join(str(e).split())}') from e
  if doc is None:
    doc = {}
  if not isinstance(doc, dict):
    raise UsageError(f'{label}: a template is a mapping with sections '
                     f'{", ".join(SECTIONS)}')
  unknown = [str(k) for k in doc if k not in SECTIONS]
  if unknown:
    raise UsageError(f'{label}: unknown section(s) {", ".join(unknown)}; '
                     f'sections: {", ".join(SECTIONS)}')
  for section in ('parameters', 'beam_options'):
    value = doc.get(section)
    if value is None:
      doc[section] = {}
    elif not isinstance(value, dict):
      raise UsageError(f'{label}: {section} must be a mapping of name: value')
  return doc


# ------------------------------------------------------------ placeholders


@dataclasses.dataclass(frozen=True)
class Placeholder:
  name: str
  op: str  # '' (required), '-' (default) or '?' (required, with a message)
  arg: tuple  # the default's nodes, or the message as one string


def parse(text: str, pos: int = 0, nested: bool = False):
  """text -> (nodes, end): nodes are strings and Placeholders. Nested: a
  default, which ends at its unbalanced '}'. Raises ValueError."""
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
  match = NAME.match(text, pos)
  if not match:
    raise ValueError(f'bad placeholder in {text!r}: ${{ must be followed by '
                     'a name')
  name, pos = match.group(), match.end()
  if text.startswith('}', pos):
    return Placeholder(name, '', ()), pos + 1
  if text.startswith(':-', pos):
    default, pos = parse(text, pos + 2, nested=True)
    return Placeholder(name, '-', default), pos + 1
  if text.startswith(':?', pos):
    end = text.find('}', pos)
    if end < 0:
      raise ValueError(f'unterminated placeholder in {text!r}')
    return Placeholder(name, '?', (text[pos + 2:end].strip(),)), end + 1
  raise ValueError(f'bad placeholder ${{{name}... in {text!r}: use '
                   f'${{{name}}}, ${{{name}:-default}} or ${{{name}:?message}}')


def names(nodes) -> List[str]:
  out = []
  for node in nodes:
    if isinstance(node, Placeholder):
      out.append(node.name)
      if node.op == '-':
        out.extend(names(node.arg))
  return out


def placeholder_names(value) -> List[str]:
  """Every placeholder name in a template (parse errors are found later)."""
  if isinstance(value, dict):
    return [n for v in value.values() for n in placeholder_names(v)]
  if isinstance(value, list):
    return [n for v in value for n in placeholder_names(v)]
  if isinstance(value, str):
    try:
      return names(parse(value)[0])
    except ValueError:
      return []
  return []


# ------------------------------------------------------------ rendering


@dataclasses.dataclass
class Context:
  """Where placeholders get their values; missing collects (name, hint) of
  required ones without."""
  sets: Mapping[str, str]
  params: Mapping[str, str]
  environ: Mapping[str, str]
  builtins: Mapping[str, str]
  missing: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

  def lookup(self, name: str) -> str:
    for source in (self.sets,
                   self.environ if is_env_name(name) else self.params,
                   self.builtins):
      value = source.get(name)
      if value not in (None, ''):
        return value
    return ''


def render_nodes(nodes, ctx: Context) -> str:
  out = []
  for node in nodes:
    if not isinstance(node, Placeholder):
      out.append(node)
      continue
    value = ctx.lookup(node.name)
    if not value and node.op == '-':
      value = render_nodes(node.arg, ctx)
    elif not value:
      ctx.missing.append((node.name, node.arg[0] if node.arg else ''))
    out.append(value)
  return ''.join(out)


def render(value, ctx: Context, where: str, errors: List[str],
           refuse: Callable[[str], Optional[str]] = lambda _name: None):
  """A YAML value -> the rendered value (strings, lists, dicts, bools).
  A string that does not parse, or names a placeholder refuse() has a
  reason against, renders as '' and its problem goes to errors."""
  if isinstance(value, str):
    try:
      nodes, _ = parse(value)
    except ValueError as e:
      errors.append(f'{where}: {e}')
      return ''
    for name in names(nodes):
      reason = refuse(name)
      if reason:
        errors.append(f'{where}: placeholder ${{{name}}} {reason}')
        return ''
    return render_nodes(nodes, ctx)
  if isinstance(value, list):
    return [render(v, ctx, where, errors, refuse) for v in value]
  if isinstance(value, dict):
    return {str(k): render(v, ctx, where, errors, refuse)
            for k, v in value.items()}
  return value


def scalar(value):
  """Rendered YAML values -> strings, bools and None (lists lose empty
  items)."""
  if isinstance(value, list):
    items = [scalar(v) for v in value]
    return [v for v in items if v not in (None, '')]
  if isinstance(value, dict):
    return {str(k): scalar(v) for k, v in value.items()}
  if value is None or isinstance(value, (str, bool)):
    return value
  return str(value)
