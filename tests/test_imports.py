"""The code imports itself only as ev_predict.*: a bare `pipeline` or
`transforms` import would load a second copy of a module (two OSS file
systems registered, two option classes) or a PyPI package of that name."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
BARE = re.compile(r'^\s*(?:from|import)\s+(pipeline|transforms)\b', re.M)


def test_no_bare_package_imports():
  offenders = []
  for path in ROOT.rglob('*.py'):
    if any(part in ('.venv', 'build') for part in path.parts):
      continue
    for match in BARE.finditer(path.read_text(encoding='utf-8')):
      line = path.read_text(encoding='utf-8').count('\n', 0, match.start()) + 1
      offenders.append(f'{path.relative_to(ROOT)}:{line}')
  assert not offenders, offenders
