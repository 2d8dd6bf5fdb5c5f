"""How the code hangs together: no import cycle among our modules (a cycle
works or breaks by import order), and importing the command line changes
nothing in the process: the runtime environment is main()'s to set, before
TensorFlow loads."""
import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from ev_predict.pipeline import launcher, logs

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('pipeline', 'transforms')  # installed as ev_predict.<folder>
_RUNTIME_ENV = ('CUDA_VISIBLE_DEVICES', 'TF_CPP_MIN_LOG_LEVEL',
                'GRPC_VERBOSITY', 'EV_PREDICT_LOG_LEVEL')
# What ev-predict sets for its default -Dlog_level (pipeline/logs.py).
_QUIET = {'TF_CPP_MIN_LOG_LEVEL': '3', 'GRPC_VERBOSITY': 'NONE',
          'EV_PREDICT_LOG_LEVEL': 'error'}


def module_names(root: pathlib.Path):
  """{module name: file} of every module under root's PACKAGES."""
  modules = {}
  for folder in PACKAGES:
    for path in sorted((root / folder).rglob('*.py')):
      parts = ['ev_predict', *path.relative_to(root).with_suffix('').parts]
      if parts[-1] == '__init__':
        parts.pop()
      modules['.'.join(parts)] = path
  return modules


def import_graph(root: pathlib.Path):
  """{module: set of our modules it imports}, from every import statement
  (function-level ones too: a deferred import is still a dependency)."""
  modules = module_names(root)
  graph = {}
  for name, path in modules.items():
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if isinstance(node, ast.Import):
        targets.update(_known_prefix(a.name, modules) for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          anchor = package.rsplit('.', node.level - 1)[0]
          base = f'{anchor}.{base}' if base else anchor
        for alias in node.names:
          full = f'{base}.{alias.name}'
          targets.add(full if full in modules else
                      _known_prefix(base, modules))
    graph[name] = targets - {None, name}
  return graph


def _known_prefix(dotted: str, modules):
  parts = dotted.split('.')
  for end in range(len(parts), 0, -1):
    if '.'.join(parts[:end]) in modules:
      return '.'.join(parts[:end])
  return None


def cycles(graph):
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in sorted(graph.get(node, ())):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def test_no_import_cycle():
  graph = import_graph(ROOT)
  assert 'ev_predict.pipeline.launcher' in graph['ev_predict.pipeline.cli']
  assert 'ev_predict.pipeline.cli' not in graph['ev_predict.pipeline.submit']
  assert not cycles(graph)


def test_a_cycle_is_found(tmp_path):
  """The check above can fail: a deferred import closing a loop counts."""
  for folder in PACKAGES:
    (tmp_path / folder).mkdir()
    (tmp_path / folder / '__init__.py').write_text('')
  (tmp_path / 'pipeline' / 'a.py').write_text(
      'from ev_predict.transforms import b\n')
  (tmp_path / 'transforms' / 'b.py').write_text(
      'from . import c\n')
  (tmp_path / 'transforms' / 'c.py').write_text(
      'def f():\n  import ev_predict.pipeline.a.x\n')
  graph = import_graph(tmp_path)
  assert graph['ev_predict.transforms.b'] == {'ev_predict.transforms.c'}
  assert cycles(graph) == [['ev_predict.pipeline.a', 'ev_predict.transforms.b',
                            'ev_predict.transforms.c']]


def _python(code, *args, **extra_env):
  env = {k: v for k, v in os.environ.items() if k not in _RUNTIME_ENV}
  env.update(extra_env)
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code), *args],
                        env=env, cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout.splitlines()[-1])


def test_importing_the_cli_changes_nothing():
  seen = _python('''
      import json, os, sys
      sys.argv = ['ev-predict', '-Dmodel_path=m', '-Dnum_worker=2']
      before = dict(os.environ)
      import ev_predict.pipeline.cli
      changed = sorted(k for k in set(before) | set(os.environ)
                       if before.get(k) != os.environ.get(k))
      print(json.dumps({'changed': changed,
                        'tensorflow': 'tensorflow' in sys.modules}))
      ''')
  assert seen == {'changed': [], 'tensorflow': False}


# Runs cli.main(argv) and reports the runtime environment when TensorFlow
# was first imported (None: it was not) and after main returned.
_MAIN = '''
    import importlib.abc, json, os, sys
    KEYS = %r
    at_import = {}

    class Spy(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow' and not at_import:
          at_import.update({k: os.environ.get(k) for k in KEYS})

    sys.meta_path.insert(0, Spy())
    from ev_predict.pipeline import cli
    code = cli.main(sys.argv[1:])
    print(json.dumps({'code': code, 'at_import': at_import or None,
                      'after': {k: os.environ.get(k) for k in KEYS}}))
    ''' % (_RUNTIME_ENV,)


def test_main_sets_the_environment_before_tensorflow(tmp_path, model_dirs):
  listing = tmp_path / 'list.txt'
  listing.write_text('x.jpg\n')
  # A fresh model cache: the signatures are parsed (TensorFlow imported),
  # not recalled.
  seen = _python(_MAIN, f'-Dmodel_path={model_dirs["uint8"]}',
                 f'-Dinput_oss_file={listing}',
                 f'-Doutput_oss_file={tmp_path / "out.txt"}',
                 '-Dsignature_name=nope',
                 EV_PREDICT_CACHE=str(tmp_path / 'cache'))
  quiet = {'CUDA_VISIBLE_DEVICES': '', **_QUIET}
  # The model was read (TensorFlow loaded) and its signature refused.
  assert seen == {'code': 2, 'at_import': quiet, 'after': quiet}


@pytest.mark.parametrize('argv, cuda', [
    (['-Dmodel_pth=m', '-DgpuRequired=100'], None),
    (['-Dmodel_pth=m', '-DgpuRequired=0'], ''),
    (['submit', '--template', 'local', '-Dmodel_path=/nonexistent/m',
      '-Dinput_oss_file=/nonexistent/l.txt', '-Doutput_oss_file=/tmp/o.txt'],
     ''),
    (['submit', '--template', 'local', '-Dmodel_path=/nonexistent/m',
      '-Dinput_oss_file=/nonexistent/l.txt', '-Doutput_oss_file=/tmp/o.txt',
      '-DgpuRequired=50'], None),
])
def test_a_gpu_job_keeps_cuda_visible(argv, cuda):
  """For the command line given, or the one a template resolves to."""
  seen = _python(_MAIN, *argv)
  assert seen['code'] == 2
  assert seen['after'] == {'CUDA_VISIBLE_DEVICES': cuda, **_QUIET}


def test_the_oss_plugin_names_a_file_system():
  """The one place that names it: Beam imports it in every worker."""
  from apache_beam.io.filesystem import FileSystem
  import importlib
  module, _, name = launcher.OSS_FILESYSTEM.rpartition('.')
  cls = getattr(importlib.import_module(module), name)
  assert issubclass(cls, FileSystem) and cls.scheme() == 'oss'
  options = launcher.make_options(['-Dmodel_path=m']).get_all_options()
  assert options['beam_plugins'] == [launcher.OSS_FILESYSTEM]


@pytest.mark.parametrize('argv, hidden', [
    (['-DgpuRequired=100'], False),
    (['--gpuRequired', '100'], False),
    (['pai -name ev_predict_ext -Dmodel_path=m -DgpuRequired=100 -Dx=0'],
     False),
    (['pai -name ev_predict_ext -Dmodel_path=m -DgpuRequired="50";'], False),
    (['pai -name ev_predict_ext -DgpuRequired=0 -DcpuRequired=200;'], True),
    (['-DgpuRequired=00'], True),
    (['--gpuRequired', '0'], True),
    (['--gpuRequired=0'], True),
    (['-Dmodel_path=/m/gpuRequired_v2'], True),
    (['-Dmodel_path=m', '-DgpuRequired=lots'], True),
    ([], True),
])
def test_cuda_is_hidden_unless_gpu_required_is_above_0(argv, hidden):
  """gpuRequired as the job reads it (the one tokenizer, the parameter's
  own parsing), in every form a command line can give it."""
  environ = {}
  launcher.quiet_runtime_logs(argv, environ)
  assert environ == {**_QUIET, 'PYTHONPATH': logs.WORKER_SITE,
                     **({'CUDA_VISIBLE_DEVICES': ''} if hidden else {})}
  # A user's own setting wins either way.
  environ = {'CUDA_VISIBLE_DEVICES': '1', 'TF_CPP_MIN_LOG_LEVEL': '0'}
  launcher.quiet_runtime_logs(argv, environ)
  assert environ == {**_QUIET, 'PYTHONPATH': logs.WORKER_SITE,
                     'CUDA_VISIBLE_DEVICES': '1', 'TF_CPP_MIN_LOG_LEVEL': '0'}


def test_help_imports_no_beam():
  """Beam's import logs warnings ("apitools not found"); help needs none of
  it, nor the environment."""
  seen = _python('''
      import io, json, os, sys
      from ev_predict.pipeline import cli
      before = dict(os.environ)
      out, sys.stdout = sys.stdout, io.StringIO()
      code = cli.main(['--help'])
      sys.stdout = out
      print(json.dumps({'code': code, 'beam': 'apache_beam' in sys.modules,
                        'environ': dict(os.environ) == before}))
      ''')
  assert seen == {'code': 0, 'beam': False, 'environ': True}
