"""The wheel works outside the checkout: built from the repo, installed into
a fresh venv that has the dependencies but not our editable install, and run
as `ev-predict` from a folder whose pipeline.py and transforms.py would
shadow top-level packages of those names."""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest

from tests import models
from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line
from ev_predict.transforms.decode import DecodeConfig, decode_image

REPO = pathlib.Path(__file__).resolve().parent.parent
# Installed as ev_predict.<folder> (setup.py package_dir).
FOLDERS = ('pipeline', 'transforms', 'templates')
# Build outputs and checkouts' own state: not sources.
_NOT_SOURCES = shutil.ignore_patterns(
    '.git', '.venv', 'build', 'dist', '__pycache__', '*.egg-info',
    '.pytest_cache', 'out')


def _clean_env(venv=None):
  """This process's environment without anything that puts other code on
  sys.path (the worktree shim's PYTHONPATH, an activated venv)."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP',
                      'PYTHONSAFEPATH', 'VIRTUAL_ENV', 'PYTHONUSERBASE')}
  env['PYTHONNOUSERSITE'] = '1'
  env['PIP_NO_INDEX'] = '1'   # nothing is downloaded
  env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
  if venv:
    env['PATH'] = f'{venv}/bin{os.pathsep}{env.get("PATH", "")}'
  return env


def _run(args, cwd, venv=None, timeout=300):
  return subprocess.run(args, cwd=cwd, env=_clean_env(venv),
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def _wheel_names(path):
  with zipfile.ZipFile(path) as z:
    return set(z.namelist())


def _sources():
  """What the wheel must hold: every module and template of the folders,
  as its installed name (a new sub-package missing from setup.py shows)."""
  names = set()
  for folder in FOLDERS:
    for path in (REPO / folder).rglob('*'):
      if path.suffix in ('.py', '.yaml') and '__pycache__' not in path.parts:
        names.add('ev_predict/' + path.relative_to(REPO).as_posix())
  return names


def _need_build_backend():
  """The wheel is built with this venv's setuptools (nothing downloaded);
  Python 3.12+ venvs have none unless it is installed."""
  missing = [m for m in ('setuptools',) if not importlib.util.find_spec(m)]
  # setuptools before 70.1 builds wheels with the `wheel` package.
  if not missing and not importlib.util.find_spec('wheel') and \
      not importlib.util.find_spec('setuptools.command.bdist_wheel'):
    missing.append('wheel')
  if missing:
    message = (f'{", ".join(missing)} not installed in this venv: '
               f'pip install {" ".join(missing)}')
    if os.environ.get('CI'):
      pytest.fail(message)   # CI must run this test, not skip it
    pytest.skip(message)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(wheel, venv, site-packages, what `import ev_predict` did before the
  wheel went in)."""
  _need_build_backend()
  root = tmp_path_factory.mktemp('wheel')
  # A copy: setuptools writes build/ and *.egg-info into the source tree.
  src = root / 'src'
  shutil.copytree(REPO, src, ignore=_NOT_SOURCES)
  proc = _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
               '--no-build-isolation', '-w', str(root / 'dist'), str(src)],
              cwd=root)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  wheel, = (root / 'dist').glob('ev_predict-*.whl')

  venv = root / 'venv'
  proc = _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)],
              cwd=root)
  assert proc.returncode == 0, proc.stderr
  python = str(venv / 'bin' / 'python')
  site = _run([python, '-c', 'import sysconfig; '
               'print(sysconfig.get_paths()["purelib"])'],
              cwd=root).stdout.strip()
  # The dependencies are this venv's site-packages, added as a plain path:
  # .pth files are processed only in site dirs, so its editable finder for
  # ev_predict (a .pth there) is not.
  deps = {sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']}
  pathlib.Path(site, 'project-deps.pth').write_text(
      '\n'.join(sorted(deps)) + '\n')
  before = _run([python, '-c', 'import ev_predict; print(ev_predict.__path__)'],
                cwd=root)
  proc = _run([sys.executable, '-m', 'pip', '--python', python, 'install',
               '--no-deps', '--ignore-installed', str(wheel)], cwd=root)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return wheel, venv, pathlib.Path(site), before


@pytest.fixture
def elsewhere(tmp_path):
  """A working folder outside the repo where bare `pipeline`/`transforms`
  imports would find these files first (cwd leads sys.path for -c and -m,
  and Beam's worker processes start with -m)."""
  work = tmp_path / 'elsewhere'
  work.mkdir()
  for name in ('pipeline', 'transforms'):
    (work / f'{name}.py').write_text(
        'import pathlib\n'
        'pathlib.Path(__file__).with_suffix(".imported").touch()\n'
        f'raise RuntimeError("the planted {name}.py was imported")\n')
  yield work
  assert not list(work.glob('*.imported'))


def test_wheel_holds_every_module_and_template(installed):
  wheel = installed[0]
  names = _wheel_names(wheel)
  sources = _sources()
  assert any(n.endswith('templates/local.yaml') for n in sources)
  missing = sorted(sources - names)
  assert not missing, f'not in the wheel (setup.py packages?): {missing}'
  # Nothing top-level but ours: no `pipeline`/`transforms` of our own.
  dist_info = '-'.join(wheel.name.split('-')[:2]) + '.dist-info'
  tops = {n.split('/', 1)[0] for n in names}
  assert tops == {'ev_predict', dist_info}, tops


def test_fresh_venv_lacked_ev_predict_before_the_wheel(installed):
  before = installed[3]
  assert before.returncode != 0
  assert "No module named 'ev_predict'" in before.stderr, before.stderr


def test_installed_modules_and_templates_come_from_the_venv(installed,
                                                            elsewhere):
  _, venv, site, _ = installed
  script = (
      'import importlib.resources, json, sys\n'
      'import ev_predict, ev_predict.pipeline.cli, ev_predict.pipeline.graph\n'
      'import ev_predict.pipeline.submit, ev_predict.transforms.read\n'
      'import ev_predict.templates\n'
      'files = importlib.resources.files("ev_predict.templates")\n'
      'print(json.dumps({\n'
      '  "path": list(ev_predict.__path__),\n'
      '  "files": [m.__file__ for n, m in sorted(sys.modules.items())\n'
      '            if n.startswith("ev_predict.") and\n'
      '            getattr(m, "__file__", None)],\n'
      '  "bare": [n for n in ("pipeline", "transforms") if n in sys.modules],\n'
      '  "templates": {p.name: p.read_text() for p in files.iterdir()\n'
      '                if p.name.endswith(".yaml")},\n'
      '}))\n')
  proc = _run([str(venv / 'bin' / 'python'), '-c', script], cwd=elsewhere,
              venv=venv)
  assert proc.returncode == 0, proc.stderr
  got = json.loads(proc.stdout.splitlines()[-1])
  assert got['path'] == [str(site / 'ev_predict')]
  assert len(got['files']) >= 5
  for path in got['files']:
    assert path.startswith(str(site / 'ev_predict') + os.sep), path
    assert not path.startswith(str(REPO) + os.sep), path
  assert got['bare'] == []
  repo_templates = {p.name: p.read_text()
                    for p in (REPO / 'templates').glob('*.yaml')}
  assert 'local.yaml' in repo_templates
  assert got['templates'] == repo_templates

  # The installed `submit` reads an installed template.
  local = site / 'ev_predict' / 'templates' / 'local.yaml'
  proc = _run([str(venv / 'bin' / 'ev-predict'), 'submit',
               '--template', str(local), '-Dmodel_path=m',
               '-Dinput_oss_file=in.txt', '-Doutput_oss_file=out.txt',
               '--dry-run'],
              cwd=elsewhere, venv=venv)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith(
      'ev-predict -Dmodel_type=classifier -Dmodel_path=m '
      '-Dinput_oss_file=in.txt -Doutput_oss_file=out.txt '), proc.stdout


def _expected_class(model, image):
  with open(image, 'rb') as f:
    pixels = decode_image(f.read(), DecodeConfig(
        size=(models.SIZE, models.SIZE), draft=True))[None]
  probs = models.direct_call(model, pixels)[0]
  return int(np.argmax(probs)), probs


def test_installed_console_script_runs_a_job(installed, elsewhere, tmp_path,
                                             model_dirs):
  """Two local worker processes: Beam starts them with -m from the working
  folder, where the planted modules lie."""
  _, venv, _, _ = installed
  model = model_dirs['uint8']
  images = [write_image(tmp_path / f'w{i}.png', 500 + i) for i in range(4)]
  gone = str(tmp_path / 'gone.png')
  listing = tmp_path / 'list.txt'
  listing.write_text('\n'.join(images[:2] + ['', gone] + images[2:]) + '\n')
  out = tmp_path / 'out' / 'result.txt'
  proc = _run([str(venv / 'bin' / 'ev-predict'),
               '-Dmodel_type=classifier', f'-Dmodel_path={model}',
               f'-Dinput_oss_file={listing}', f'-Doutput_oss_file={out}',
               '-Dmax_error_ratio=0.5', '-Dnum_worker=2'],
              cwd=elsewhere, venv=venv)
  assert proc.returncode == 0, proc.stderr
  assert ('ev-predict: 5 lines read, 4 succeeded, 1 failed (not_found 1); '
          in proc.stderr), proc.stderr
  results = [split_output_line(l) for l in read_lines(out)]
  assert sorted(line.decode() for line, _ in results) == sorted(images)
  for line, body in results:
    want, probs = _expected_class(model, line.decode())
    assert body['class'] == want
    assert body['class_name'] == models.LABELS[want]
    np.testing.assert_allclose(list(body['class_probs'].values()), probs,
                               atol=1e-6, rtol=0)
  errors = [split_output_line(l) for l in read_lines(f'{out}.errors')]
  assert [(line.decode(), body['error']) for line, body in errors] == [
      (gone, 'not_found')]
  summary = json.loads(pathlib.Path(f'{out}.summary.json').read_text())
  assert (summary['lines_read'], summary['succeeded'], summary['failed'],
          summary['workers']) == (5, 4, 1, 2)
  assert summary['failed_by_kind'] == {'not_found': 1}
  assert summary['accounting_ok']
