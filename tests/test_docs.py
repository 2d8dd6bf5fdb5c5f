"""The docs hold together: every local link and anchor resolves, the README
stays short and tables every error kind, and every promise in
docs/guarantees.md names tests that exist (the project's rule: each promise
names the test that proves it)."""
import collections
import pathlib
import re

import pytest

from ev_predict.transforms import record

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
GUARANTEES = ROOT / 'docs' / 'guarantees.md'
DOCS = [README] + sorted((ROOT / 'docs').glob('*.md'))

_FENCE = re.compile(r'^(```|~~~).*?^\1[^\n]*$', re.M | re.S)
_INDENTED = re.compile(r'^(?: {4}|\t).*$', re.M)
_CODE_SPAN = re.compile(r'(`+)(.+?)\1', re.S)
_LINK = re.compile(r'!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$', re.M)
_QUALIFIED = re.compile(r'(tests/[\w/]+\.py)::(\w+)')
_TEST_FILE = re.compile(r'tests/[\w/]+\.py')
_TEST_NAME = re.compile(r'(?<![\w/.:])(test_\w+)(?!\.py|\w)')


def _prose(text: str) -> str:
  """text without code blocks: a link inside code is an example, not a link.
  Fenced blocks go first; indented blocks only outside list items."""
  text = _FENCE.sub('', text)
  lines, out, in_list = text.split('\n'), [], False
  for line in lines:
    if re.match(r'^\s*([-*+]|\d+\.)\s', line):
      in_list = True
    elif not line.strip():
      pass
    elif not line.startswith(' '):
      in_list = False
    out.append('' if (not in_list and _INDENTED.fullmatch(line)) else line)
  return '\n'.join(out)


def _without_code_spans(text: str) -> str:
  return _CODE_SPAN.sub('', text)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: markup dropped, lower case, punctuation
  removed (letters, digits, '_', '-' and spaces stay), spaces to '-'."""
  text = _LINK.sub(lambda m: m.group(0)[1:m.group(0).index(']')], heading)
  text = _CODE_SPAN.sub(lambda m: m.group(2), text)
  text = re.sub(r'<[^>]+>', '', text).lower()
  text = ''.join(c for c in text if c.isalnum() or c in '_- ')
  return text.replace(' ', '-')


def anchors(path: pathlib.Path) -> set:
  seen = collections.Counter()
  found = set()
  for _, heading in _HEADING.findall(_FENCE.sub('', path.read_text('utf-8'))):
    base = slug(heading)
    found.add(base if not seen[base] else f'{base}-{seen[base]}')
    seen[base] += 1
  return found


def links(path: pathlib.Path):
  return _LINK.findall(_without_code_spans(_prose(path.read_text('utf-8'))))


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_local_links_and_anchors_resolve(doc):
  broken = []
  for target in links(doc):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target):   # http:, mailto:, …
      continue
    file_part, _, anchor = target.partition('#')
    dest = (doc.parent / file_part).resolve() if file_part else doc
    if not dest.exists():
      broken.append(f'{target}: no such file')
    elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
      broken.append(f'{target}: no heading #{anchor} in {dest.name}')
  assert not broken, broken


def test_readme_fits():
  lines = README.read_text('utf-8').count('\n')
  assert lines <= 250, f'README.md has {lines} lines; move detail to docs/'


def _defined_tests(path: pathlib.Path) -> set:
  return set(re.findall(r'^\s*(?:async\s+)?def\s+(test_\w+)\s*\(',
                        path.read_text('utf-8'), re.M))


def test_every_test_named_in_the_guarantees_exists():
  text = GUARANTEES.read_text('utf-8')
  missing = []
  for name in sorted(set(_TEST_FILE.findall(text))):
    if not (ROOT / name).is_file():
      missing.append(name)
  for path, name in sorted(set(_QUALIFIED.findall(text))):
    if (ROOT / path).is_file() and name not in _defined_tests(ROOT / path):
      missing.append(f'{path}::{name}')
  # A bare test name must exist somewhere under tests/.
  everywhere = set().union(*(_defined_tests(p)
                             for p in (ROOT / 'tests').rglob('test_*.py')))
  bare = set(_TEST_NAME.findall(_QUALIFIED.sub('', text)))
  missing += sorted(bare - everywhere)
  assert not missing, missing


def _sections(path: pathlib.Path):
  """(heading, body) of each level-2 section."""
  parts = re.split(r'^## +(.*)$', path.read_text('utf-8'), flags=re.M)
  return list(zip(parts[1::2], parts[2::2]))


def test_every_promise_names_a_test():
  bare = [h for h, body in _sections(GUARANTEES) if not _QUALIFIED.search(body)]
  assert _sections(GUARANTEES) and not bare, bare


def test_readme_lists_every_promise():
  """The README's brief list and docs/guarantees.md name the same promises,
  each README line linking to its section."""
  readme = dict(_sections(README))
  listed = re.findall(r'docs/guarantees\.md#([\w-]+)', readme['Guarantees'])
  promised = [slug(h) for h, _ in _sections(GUARANTEES)]
  assert sorted(listed) == sorted(promised)
  bullets = [l for l in readme['Guarantees'].splitlines() if l.startswith('- ')]
  assert len(bullets) == len(promised) and all(
      'docs/guarantees.md#' in b for b in bullets), bullets


def test_readme_tables_every_error_kind():
  """README's error-kind table and record.ERROR_KINDS hold the same kinds,
  once each: adding a kind without documenting it fails here."""
  errors = dict(_sections(README))['Errors']
  rows = re.findall(r'^\| `(\w+)` \|', errors.split('| exit code |')[0], re.M)
  assert errors.lstrip().startswith('| error kind |'), errors[:80]
  assert sorted(rows) == sorted(record.ERROR_KINDS)
  assert len(rows) == len(set(rows)), rows


def test_code_points_at_docs_that_exist():
  """Comments that quote a measurement or a rule name the docs/ file that
  holds it: that file must exist."""
  missing = []
  for folder in ('pipeline', 'transforms', 'bench', 'tests', 'scripts',
                 'templates', 'examples'):
    for path in (ROOT / folder).rglob('*'):
      if not path.is_file() or path.suffix not in ('.py', '.yaml', '.sh', ''):
        continue
      text = path.read_text('utf-8', errors='replace')
      for name in set(re.findall(r'\bdocs/([\w-]+\.md)', text)):
        if not (ROOT / 'docs' / name).is_file():
          missing.append(f'{path.relative_to(ROOT)}: docs/{name}')
  assert not missing, missing


def test_slug_follows_github():
  assert slug('Parameters → cluster resources') == 'parameters--cluster-resources'
  assert slug("Errors come from the server's answer, never from the path") == \
      'errors-come-from-the-servers-answer-never-from-the-path'
  assert slug('Job templates: `ev-predict submit`') == \
      'job-templates-ev-predict-submit'
  assert slug('Levers (what each gave)') == 'levers-what-each-gave'
