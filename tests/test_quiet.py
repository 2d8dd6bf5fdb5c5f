"""What a run prints: ev-predict's own lines only (progress, the summary,
one-line errors) unless -Dlog_level / -v / -vv asks for the libraries' too;
--version without loading Beam or TensorFlow; --help's content.

The jobs run as a user runs them: the installed ev-predict in a fresh
process, with none of the variables ev-predict sets (conftest.py set them
for this process) in its environment."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from ev_predict.pipeline.commandline import parse_command_line
from tests.conftest import write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EV_PREDICT = os.path.join(os.path.dirname(sys.executable), 'ev-predict')
_SET_BY_EV_PREDICT = ('TF_CPP_MIN_LOG_LEVEL', 'GRPC_VERBOSITY',
                      'EV_PREDICT_LOG_LEVEL', 'CUDA_VISIBLE_DEVICES',
                      'PYTHONWARNINGS')


def _user_env(**extra):
  """This process's environment as a user's shell would have it."""
  env = {k: v for k, v in os.environ.items() if k not in _SET_BY_EV_PREDICT}
  paths = [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
           if p and not p.rstrip(os.sep).endswith('worker_site')]
  env.pop('PYTHONPATH', None)
  if paths:
    env['PYTHONPATH'] = os.pathsep.join(paths)
  env.update(extra)
  return env


def _job(tmp_path, model_dirs):
  imgs = [write_image(tmp_path / f'q{i}.png', 500 + i) for i in range(4)]
  listing = tmp_path / 'list.txt'
  listing.write_text('\n'.join(imgs + [str(tmp_path / 'gone.jpg')]) + '\n')
  return [f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
          f'-Doutput_oss_file={tmp_path / "out" / "result.txt"}',
          '-Dmax_error_ratio=0.5']


def _run(args, timeout=600):
  return subprocess.run([EV_PREDICT] + args, cwd=REPO, env=_user_env(),
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def _not_ours(stderr):
  return [l for l in stderr.splitlines()
          if l.strip() and not l.startswith('ev-predict:')]


_SUMMARY = 'ev-predict: 5 lines read, 4 succeeded, 1 failed (not_found 1)'


@pytest.mark.parametrize('how', ['workers=1', 'workers=2', 'submit local'])
def test_a_normal_run_prints_only_its_own_lines(tmp_path, model_dirs, how):
  """No TensorFlow/absl/CUDA C++ lines, no Beam warnings at import, no
  worker processes' chatter, no Python warnings: in this process and in the
  local worker processes, whose stderr is the launcher's."""
  job = _job(tmp_path, model_dirs)
  if how == 'submit local':
    args = ['submit', '--template', 'local', *job, '-Dnum_worker=2']
  else:
    args = job + [f'-Dnum_worker={how[-1]}']
  proc = _run(args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout == ''
  assert _not_ours(proc.stderr) == []
  assert _SUMMARY in proc.stderr


def test_verbose_brings_the_library_lines_back(tmp_path, model_dirs):
  """-v is -Dlog_level=info: Beam's lines at INFO, from the launcher and
  from the worker processes (their SDK harness level follows), and the
  warnings Beam logs at import; the summary as always."""
  proc = _run(_job(tmp_path, model_dirs) + ['-Dnum_worker=2', '-v'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  others = _not_ours(proc.stderr)
  assert any(l.startswith('WARNING:root:apitools not found') for l in others)
  # The SDK harness only runs in the worker processes.
  assert any(l.startswith('INFO:apache_beam.runners.worker.') for l in others)
  assert _SUMMARY in proc.stderr


def test_a_failed_job_says_so_in_one_line(tmp_path, oss_env, model_dirs):
  """Both worker processes fail (every result shard upload is refused):
  exit 3 and one line naming the cause; Beam's errors one line each, its
  tracebacks (logged, and printed by the SDK harness) only at debug."""
  server = oss_env
  job = _job(tmp_path, model_dirs)[:2] + [
      '-Doutput_oss_file=oss://out/quiet/res.txt', '-Dnum_worker=2',
      f'-DossHost={server.endpoint}']
  with server.faults(fail_first=10**6, error_status=403,
                     fault_filter=lambda r: r.op in (
                         'PutObject', 'InitiateMultipartUpload') and
                     '/chunks/' in r.key):
    proc = _run(job)
  assert proc.returncode == 3, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  ours = [l for l in lines if l.startswith('ev-predict:')]
  assert ours[-1].startswith('ev-predict: job failed: ') and \
      'Forbidden' in ours[-1]
  assert [l for l in lines if not l.startswith('ev-predict:') and
          not re.match(r'ERROR:[\w.]+:\S', l)] == []


# --------------------------------------------------------------- -v, -vv


@pytest.mark.parametrize('argv, level', [
    (['-v'], 'info'),
    (['-vv'], 'debug'),
    (['-v', '-v'], 'debug'),
    (['--verbose'], 'info'),
    (['-Dlog_level=warning'], 'warning'),
    (['-Dlog_level=debug', '-v'], 'debug'),   # the more verbose wins
    (['-Dlog_level=warning', '-vv'], 'debug'),
    (['pai -name ev_predict_ext -Dmodel_path=m -vv;'], 'debug'),
])
def test_the_tokenizer_reads_verbosity(argv, level):
  params, beam_args = parse_command_line(argv)
  assert params.get('log_level') == level and beam_args == []


def test_submit_sees_verbosity():
  from ev_predict.pipeline import submit
  req = submit.parse_args(['--template', 'local', '-Dmodel_path=m', '-vv'])
  assert req.params == {'model_path': 'm', 'log_level': 'debug'}
  assert req.beam_args == [] and req.errors == []


def test_a_bad_level_is_refused_as_written():
  from ev_predict.pipeline import graph
  params, _ = parse_command_line(['-Dlog_level=loud', '-v'])
  assert params['log_level'] == 'loud'
  assert any(e.startswith('-Dlog_level must be one of error, warning, info, '
                          "debug, not 'loud'")
             for e in graph.check_parameters(params))


def test_the_level_reaches_the_environment_and_the_workers():
  from ev_predict.pipeline import launcher, logs
  environ = {'TF_CPP_MIN_LOG_LEVEL': '2', 'PYTHONPATH': '/mine'}
  launcher.quiet_runtime_logs(['-Dmodel_path=m', '-v'], environ)
  # Asked for on the command line: it beats what the environment says.
  assert environ == {'TF_CPP_MIN_LOG_LEVEL': '0', 'GRPC_VERBOSITY': 'INFO',
                     'EV_PREDICT_LOG_LEVEL': 'info', 'CUDA_VISIBLE_DEVICES': '',
                     'PYTHONPATH': os.pathsep.join([logs.WORKER_SITE, '/mine'])}
  assert logs.with_harness_level(['-Dmodel_path=m'], 'warning') == [
      '-Dmodel_path=m', '--default_sdk_harness_log_level=WARN']
  # A pasted PAI command still parses with the flag after it.
  pasted = logs.with_harness_level(
      ['pai -name ev_predict_ext -Dmodel_path="m";'], 'debug')
  assert parse_command_line(pasted) == (
      {'model_path': 'm'}, ['--default_sdk_harness_log_level=DEBUG'])
  # One the user gave wins.
  mine = ['-Dmodel_path=m', '--default_sdk_harness_log_level', 'INFO']
  assert logs.with_harness_level(mine, 'error') == mine


# ------------------------------------------------------- the pieces of it


def _python(code, env=None):
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                        cwd=REPO, env=env or _user_env(), capture_output=True,
                        text=True, timeout=120, check=False)


_ONE_LINE = ['ERROR:apache_beam.x:Error processing instruction 1. Original '
             'traceback is ... RuntimeError: the cause',
             'ERROR:apache_beam.y:bundle failed ... ValueError: boom']


@pytest.mark.parametrize('level, lines', [
    ('error', ['ev-predict: mine', 'ev-predict: job failed: x', *_ONE_LINE]),
    ('warning', ['WARNING:root:apitools not found', 'ev-predict: mine',
                 'ev-predict: job failed: x', *_ONE_LINE]),
])
def test_python_logging_in_the_launcher(level, lines):
  """Set before Beam's import logs on the root logger: our lines marked as
  ours, a library's error in one line (its cause last)."""
  proc = _python(f'''
      import logging, warnings
      from ev_predict.pipeline import logs
      logs.configure({level!r})
      logging.warning('apitools not found')  # as Beam's import does
      logging.getLogger('apache_beam.x').info('chatter')
      logging.getLogger('ev_predict.transforms.x').info('backend: detail')
      logging.getLogger('ev_predict.transforms.x').warning('mine')
      logging.getLogger('ev_predict').info('ev-predict: job failed: x')
      warnings.warn('from a library', DeprecationWarning)
      logging.getLogger('apache_beam.x').error(
          'Error processing instruction 1. Original traceback is\\n'
          'Traceback (most recent call last):\\n  File "x.py"\\n'
          'RuntimeError: the cause\\n')
      try:
        raise ValueError('boom')
      except ValueError:
        logging.getLogger('apache_beam.y').exception('bundle failed')
      ''')
  assert proc.returncode == 0, proc.stderr
  got = proc.stderr.splitlines()
  if level == 'warning':  # Python warnings come back, through logging
    assert sum('DeprecationWarning: from a library' in l for l in got) == 1
    got = [l for l in got if 'DeprecationWarning' not in l]
  assert got == lines


def test_tracebacks_at_debug():
  proc = _python('''
      import logging
      from ev_predict.pipeline import logs
      logs.configure('debug')
      try:
        raise ValueError('boom')
      except ValueError:
        logging.getLogger('ev_predict').debug('ev-predict: job failed',
                                              exc_info=True)
      ''')
  lines = proc.stderr.splitlines()
  assert lines[0] == 'ev-predict: job failed'
  assert lines[1] == 'Traceback (most recent call last):'
  assert lines[-1] == 'ValueError: boom'


def test_native_lines_of_an_import_are_dropped_below_their_level(tmp_path):
  """TensorFlow's absl lines before absl::InitializeLog() obey no variable:
  the import runs with fd 2 captured; what is not that chatter comes back."""
  package = tmp_path / 'tensorflow'
  package.mkdir()
  (package / '__init__.py').write_text(textwrap.dedent('''
      import os
      os.write(2, b'WARNING: All log messages before absl::InitializeLog() '
                  b'is called are written to STDERR\\n'
                  b'I0000 00:00:1796234392.957531    8667 cudart_stub.cc:31] '
                  b'Could not find cuda drivers on your machine\\n'
                  b'E0000 00:00:1796234400.859040    8667 cuda_dnn.cc:8310] '
                  b'Unable to register cuDNN factory\\n'
                  b'2024-05-01 12:00:00.123456: I tensorflow/core/util/'
                  b'port.cc:113] oneDNN custom operations are on.\\n'
                  b'W0000 00:00:1796234400.1 1 py_utils.cc:38] TF-TRT Warning\\n'
                  b'a line of its own\\n')
      '''))
  code = f'''
      import sys
      sys.path.insert(0, {str(tmp_path)!r})
      from ev_predict.pipeline import logs
      logs.configure(sys.argv[1])
      import tensorflow
      '''
  seen = {}
  for level in ('error', 'warning', 'info'):
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code), level],
                          env=_user_env(), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    seen[level] = [l.split('] ')[-1] for l in proc.stderr.splitlines()]
  assert seen['error'] == ['a line of its own']
  assert seen['warning'] == ['Unable to register cuDNN factory',
                             'TF-TRT Warning', 'a line of its own']
  assert len(seen['info']) == 6


def test_worker_processes_are_quiet_before_beam_loads(tmp_path):
  """A local SDK worker process gets only the environment: the launcher's
  worker_site/sitecustomize sets its logging up first thing (and still runs
  a sitecustomize it hides); the SDK harness level decides the libraries'."""
  from ev_predict.pipeline import logs
  theirs = tmp_path / 'theirs'
  theirs.mkdir()
  (theirs / 'sitecustomize.py').write_text(
      'import sys\nsys.stderr.write("theirs ran\\n")\n')
  code = '''
      import logging, sys
      logging.warning('apitools not found')   # as Beam's import does
      # as the SDK harness does with a failed bundle's traceback
      print('Traceback (most recent call last):\\n  File "x.py"\\n'
            'ValueError: x\\n', file=sys.stderr)
      logging.getLogger().setLevel(logging.INFO)   # as sdk_worker_main does
      logging.getLogger('__main__').info('Logging handler created.')
      logging.getLogger('ev_predict.transforms.write').warning(
          'ev-predict: could not remove x')
      '''
  environ = {'PYTHONPATH': os.pathsep.join(
      p for p in [str(theirs), _user_env().get('PYTHONPATH')] if p)}
  logs.set_environment('error', False, environ)
  worker = dict(environ, CONTROL_API_SERVICE_DESCRIPTOR='url: "x"')
  proc = _python(code, _user_env(**worker))
  assert proc.stderr.splitlines() == ['theirs ran',
                                      'ev-predict: could not remove x']
  # Not a worker: the process is left alone.
  proc = _python(code, _user_env(**environ))
  assert proc.stderr.splitlines()[:3] == ['theirs ran',
                                          'WARNING:root:apitools not found',
                                          'Traceback (most recent call last):']
  # An explicit --default_sdk_harness_log_level=DEBUG wins in the worker.
  options = json.dumps({'beam:option:default_sdk_harness_log_level:v1':
                        'DEBUG'})
  proc = _python(code, _user_env(**worker, PIPELINE_OPTIONS=options))
  assert 'INFO:__main__:Logging handler created.' in proc.stderr.splitlines()


# ------------------------------------------------------------ --version


_VERSION = re.compile(r'ev-predict \d+\.\d+\.\S+ \(apache-beam \d+\.\d+\.\S+, '
                      r'tensorflow \d+\.\d+\.\S+, openvino \d+\.\d+\.\S+, '
                      r'Python \d+\.\d+\.\d+\)')


@pytest.mark.parametrize('arg', ['--version', 'version'])
def test_version(arg):
  proc = _run([arg], timeout=60)
  assert proc.returncode == 0 and proc.stderr == ''
  assert _VERSION.fullmatch(proc.stdout.strip()), proc.stdout
  assert f'Python {".".join(map(str, sys.version_info[:3]))})' in proc.stdout


def test_version_imports_none_of_them():
  proc = _python('''
      import io, json, sys
      from ev_predict.pipeline import cli
      out, sys.stdout = sys.stdout, io.StringIO()
      code = cli.main(['--version'])
      sys.stdout = out
      print(json.dumps({'code': code, 'loaded': sorted(
          {m.split('.')[0] for m in sys.modules} &
          {'apache_beam', 'tensorflow', 'openvino', 'grpc', 'numpy'})}))
      ''')
  assert json.loads(proc.stdout) == {'code': 0, 'loaded': []}


# --------------------------------------------------------------- --help


def test_help_says_what_is_required_shows_examples_and_exit_codes():
  proc = _run(['--help'], timeout=60)
  assert (proc.returncode, proc.stderr) == (0, '')
  lines = proc.stdout.splitlines()
  assert [l for l in lines if len(l) > 79] == []
  required = sorted(l.split()[0] for l in lines
                    if len(l.split()) > 1 and l.split()[1] == '(required)')
  assert required == ['-Dinput_oss_file', '-Dmodel_path', '-Doutput_oss_file']
  assert '(or -Dinput_table)' in proc.stdout
  text = proc.stdout
  examples = text.split('examples:\n')[1].split('\n\n')[0]
  commands = [c for c in examples.replace('\\\n', ' ').splitlines()
              if not c.strip().startswith('#')]
  assert len(commands) == 2
  local, flink = (' '.join(c.split()) for c in commands)
  assert local.startswith('ev-predict -Dmodel_path=') and 'oss://' not in local
  assert flink.startswith('ev-predict submit --template flink ')
  assert '-Dinput_oss_file=oss://' in flink and '-Doutput_oss_file=oss://' in flink
  codes = text.split('exit codes:\n')[1].split('\n\n')[0]
  rows = ' '.join(codes.split())
  for row in ('0 ok', '1 too many failed lines', 'records that do not add up',
              '2 bad parameters: nothing ran', '3 the job failed',
              '130/143 interrupted (SIGINT/SIGTERM): rerun the same command '
              'to resume'):
    assert row in rows, rows
  assert '-v' in text and '-vv' in text and '--version' in text
  assert '-Dlog_level' in text
