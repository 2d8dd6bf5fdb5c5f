"""Job templates (templates/*.yaml) and `ev-predict submit`: rendering,
validation (all problems in one message, exit code 2), secret masking in
--dry-run, the Flink template against scripts/flink-cluster.sh, and one real
submission of templates/local.yaml."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from ev_predict.pipeline import cli, launcher, submit, template
from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line
from tests.models import LABELS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(REPO, 'templates')
FLINK_SCRIPT = os.path.join(REPO, 'scripts', 'flink-cluster.sh')
EV_PREDICT = os.path.join(os.path.dirname(sys.executable), 'ev-predict')

# Anything a template may read from the environment, and the secrets.
_ENV = ('FLINK_MASTER', 'FLINK_REST_PORT', 'FLINK_MINOR', 'FLINK_CACHE',
        'FLINK_RUN_DIR', 'JOB_SERVER_JAR', 'SDK_WORKER', 'EV_PREDICT_ROOT',
        'SPARK_MASTER_URL', 'SPARK_JOB_SERVER_JAR', 'SPARK_MASTER_PORT',
        'SPARK_DRIVER_HOST', 'SPARK_EXECUTOR_MEMORY', 'GCP_PROJECT',
        'GCP_REGION', 'GCS_TEMP_LOCATION', 'SDK_CONTAINER_IMAGE', 'JOB_NAME',
        'OSS_ACCESS_KEY_ID', 'OSS_ACCESS_KEY_SECRET', 'OSS_SESSION_TOKEN')
_JOB = ['-Dmodel_path=models/m', '-Dinput_oss_file=lists/in.txt',
        '-Doutput_oss_file=out/result file.txt']


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
  for name in _ENV:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def _template(name):
  return os.path.join('templates', name)


def _submit(capture, args):
  """Runs `ev-predict submit ARGS` in-process: (exit code, stdout, stderr)."""
  code = cli.main(['submit'] + args)
  out, err = capture.readouterr()
  return code, out, err


def _resolve(args, environ=None):
  return submit.resolve(submit.parse_args(args), environ=environ or {})


def _error(err):
  lines = [l for l in err.splitlines() if l.startswith('ev-predict: error:')]
  assert len(lines) == 1, err
  return lines[0]


def test_local_dry_run_output(capsys):
  code, out, _ = _submit(capsys, [
      '--template', _template('local.yaml'), *_JOB, '-Dnum_worker=2',
      '--set', 'cpuRequired=200', '--dry-run'])
  assert code == 0
  assert out == (
      "ev-predict -Dmodel_type=classifier -Dmodel_path=models/m "
      "-Dinput_oss_file=lists/in.txt '-Doutput_oss_file=out/result file.txt' "
      "-Dimage_type=url -Dnum_worker=2 -DcpuRequired=200 -DgpuRequired=0 "
      "-Dmax_error_ratio=0.05 --runner=DirectRunner\n"
      "parameters:\n"
      "  model_type: classifier\n"
      "  model_path: models/m\n"
      "  input_oss_file: lists/in.txt\n"
      "  output_oss_file: out/result file.txt\n"
      "  image_type: url\n"
      "  num_worker: 2\n"
      "  cpuRequired: 200\n"
      "  gpuRequired: 0\n"
      "  max_error_ratio: 0.05\n"
      "beam_options:\n"
      "  runner: DirectRunner\n"
      "  direct_num_workers: 2\n"
      "  direct_running_mode: multi_processing\n"
      # -Dlog_level's default (error), as a run sets it (pipeline/logs.py).
      "  default_sdk_harness_log_level: ERROR\n"
      f'  beam_plugins: ["{launcher.OSS_FILESYSTEM}"]\n')
  # The printed line is a command line that parses back to the same argv.
  argv = shlex.split(out.splitlines()[0])[1:]
  assert argv == _resolve(['--template', _template('local.yaml'), *_JOB,
                           '-Dnum_worker=2', '--set',
                           'cpuRequired=200']).argv


@pytest.mark.parametrize('name, sets, flags', [
    ('local.yaml', [], ['--runner=DirectRunner']),
    ('flink.yaml', ['FLINK_MASTER=jm.example:8081'],
     ['--runner=FlinkRunner', '--flink_master=jm.example:8081']),
    ('spark.yaml', ['SPARK_JOB_SERVER_JAR=/opt/spark-js.jar',
                    'SDK_WORKER=/opt/sdk-worker',
                    'SPARK_MASTER_URL=spark://m:7077'],
     ['--runner=SparkRunner', '--spark_master_url=spark://m:7077',
      '--spark_version=3', '--spark_job_server_jar=/opt/spark-js.jar',
      '--environment_type=PROCESS',
      '--environment_config={"command":"/opt/sdk-worker"}']),
    ('dataflow.yaml', ['GCP_PROJECT=p', 'GCS_TEMP_LOCATION=gs://b/tmp',
                       'SDK_CONTAINER_IMAGE=img:1'],
     ['--runner=DataflowRunner', '--project=p', '--region=us-central1',
      '--temp_location=gs://b/tmp', '--sdk_container_image=img:1',
      '--num_workers=3']),
])
def test_every_template_renders(capsys, name, sets, flags):
  args = ['--template', _template(name), *_JOB, '-Dnum_worker=3',
          '-Dbatch_size=8', '--dry-run']
  for item in sets:
    args += ['--set', item]
  code, out, err = _submit(capsys, args)
  assert code == 0, err
  argv = shlex.split(out.splitlines()[0])
  assert argv[0] == 'ev-predict'
  assert argv[1:4] == ['-Dmodel_type=classifier', '-Dmodel_path=models/m',
                       '-Dinput_oss_file=lists/in.txt']
  assert '-Dnum_worker=3' in argv and '-Dbatch_size=8' in argv
  beam = [a for a in argv if a.startswith('--')]
  for flag in flags:
    assert flag in beam, (flag, beam)
  assert '  batch_size: 8' in out.splitlines()


def _flink_script(command, env):
  proc = subprocess.run([FLINK_SCRIPT, command], env=env, capture_output=True,
                        text=True, timeout=30, check=True)
  return proc.stdout.splitlines()


def test_flink_template_gives_the_cluster_scripts_flags(tmp_path):
  """templates/flink.yaml resolves to exactly what `flink-cluster.sh flags`
  prints (no cluster needed), by default and for a cluster with other
  settings, whose `env` output is the template's environment."""
  base = {k: v for k, v in os.environ.items() if k not in _ENV}
  resolved = _resolve(['--template', _template('flink.yaml'), *_JOB],
                      environ=base)
  assert resolved.beam_args == _flink_script('flags', base)
  assert resolved.beam_args[0] == '--runner=FlinkRunner'

  other = dict(base, FLINK_REST_PORT='18123', FLINK_CACHE=str(tmp_path),
               FLINK_RUN_DIR='build/elsewhere')
  cluster_env = dict(line.split('=', 1)
                     for line in _flink_script('env', other))
  resolved = _resolve(['--template', _template('flink.yaml'), *_JOB],
                      environ=dict(base, **cluster_env))
  flags = _flink_script('flags', other)
  assert resolved.beam_args == flags
  assert '--flink_master=localhost:18123' in flags
  assert f'--flink_job_server_jar={tmp_path}/' in flags[3]


def test_flink_dry_run_sets_parallelism(capsys):
  code, out, _ = _submit(capsys, ['--template', _template('flink.yaml'),
                                  *_JOB, '--dry-run'])
  assert code == 0
  assert '  parallelism: 2' in out.splitlines()  # -Dnum_worker's default


def test_validation_lists_every_problem_exit_2(capsys):
  code, _, err = _submit(capsys, [
      '--template', _template('local.yaml'),
      '-Dmodel_pth=models/m',              # unknown (and so model_path missing)
      '-Dinput_oss_file=lists/in.txt', '-Doutput_oss_file=out/r.txt',
      '-Dnum_worker=two',                  # not an integer
      '-Dimage_type=bytes',                # not a choice
      '-Dmax_error_ratio=2',               # out of range
      '--set', 'FLINK_MASTR=x',            # no such placeholder
      '--runner_typo=1',                   # unknown Beam flag
      '--dry-run'])
  assert code == 2
  line = _error(err)
  assert line.startswith('ev-predict: error: templates/local.yaml: '
                         '7 problems: ')
  for needle in ('unknown parameter -Dmodel_pth (did you mean model_path?)',
                 '-Dmodel_path is required (SavedModel directory',
                 "-Dnum_worker must be an integer, not 'two'",
                 "-Dimage_type must be one of url, base64, not 'bytes'",
                 "-Dmax_error_ratio must be between 0 and 1, not '2'",
                 '--set FLINK_MASTR: templates/local.yaml has no '
                 '${FLINK_MASTR}',
                 'unknown option(s) --runner_typo=1'):
    assert needle in line, (needle, line)


def test_validation_through_the_console_script(tmp_path):
  """The installed `ev-predict submit`: exit code 2, one line, nothing run."""
  out = tmp_path / 'out' / 'result.txt'
  proc = subprocess.run(
      [EV_PREDICT, 'submit', '--template', _template('local.yaml'),
       '-Dmodel_path=/nonexistent/model', f'-Doutput_oss_file={out}',
       '-Dbatch_size=1.5', '-Dmodel_type=detector'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  assert _error(proc.stderr) == (
      'ev-predict: error: templates/local.yaml: 3 problems: '
      '-Dinput_oss_file is required (file list, one image per line); '
      "-Dbatch_size must be an integer, not '1.5'; "
      '-Dmodel_type=detector is not supported; supported: classifier, multilabel_classifier')
  assert not out.parent.exists()


def test_dry_run_needs_no_model_but_a_run_does(capsys, tmp_path):
  args = ['--template', _template('local.yaml'),
          '-Dmodel_path=/nonexistent/model',
          f'-Dinput_oss_file={tmp_path}/missing.txt',
          f'-Doutput_oss_file={tmp_path}/out/r.txt']
  code, out, _ = _submit(capsys, args + ['--dry-run'])
  assert code == 0 and out.startswith('ev-predict ')
  code, _, err = _submit(capsys, args)
  assert code == 2
  assert 'cannot read' in _error(err)


def test_template_problems_are_reported_together(capsys, tmp_path):
  bad = tmp_path / 'bad.yaml'
  bad.write_text(
      'parameters:\n'
      '  model_path: ${model_path}\n'
      '  input_oss_file: ${1abc}\n'
      '  output_oss_file: ${OUT:-out/${RUN:-r1}.txt}\n'
      '  batchsize: 4\n'
      'beam_options:\n'
      '  runner: DirectRunner\n'
      '  job_name: ${OSS_ACCESS_KEY_SECRET}\n'
      '  s3_secret_access_key: abc\n'
      '  num_worker: 2\n')
  code, _, err = _submit(capsys, ['--template', str(bad), '--dry-run'])
  assert code == 2
  line = _error(err)
  for needle in ('-Dmodel_path is required',
                 'parameters.input_oss_file: bad placeholder',
                 'unknown parameter -Dbatchsize in ',
                 '(did you mean batch_size?)',
                 'placeholder ${OSS_ACCESS_KEY_SECRET} looks like a secret',
                 'beam_options.s3_secret_access_key looks like a secret',
                 'beam_options.num_worker: num_worker is a parameter'):
    assert needle in line, (needle, line)

  # Malformed YAML or sections: one clear line as well.
  bad.write_text('parameters: [a, b]\n')
  code, _, err = _submit(capsys, ['--template', str(bad)])
  assert code == 2 and 'parameters must be a mapping' in _error(err)
  code, _, err = _submit(capsys, ['--template', str(tmp_path / 'none.yaml')])
  assert code == 2 and 'cannot read template' in _error(err)


def test_placeholder_rules(tmp_path):
  path = tmp_path / 't.yaml'
  path.write_text(
      'parameters:\n'
      '  model_path: ${model_path:-m}\n'
      '  input_oss_file: ${IN:-${DATA:-/data}/list.txt}\n'
      '  output_oss_file: out/$${x}/${name:-r}.txt\n'
      '  jpeg_draft: off\n'
      '  pixel_mean: [1, 2, 3]\n'
      '  pixel_std: "${std:-}"\n'
      'beam_options:\n'
      '  job_name: ${model_path}-${JOB:-j}\n'
      '  flink_version: 1.20\n'
      '  experiments: [a, "${EXP:-b}"]\n'
      '  save_main_session: true\n'
      '  streaming: false\n'
      '  environment_config: {command: "${TEMPLATE_DIR}/w", n: "1"}\n')
  args = ['--template', str(path)]
  r = _resolve(args, environ={'DATA': '/env', 'name': 'from-env'})
  assert r.params == {
      'model_path': 'm', 'input_oss_file': '/env/list.txt',
      'output_oss_file': 'out/${x}/r.txt',  # lowercase: never from the env
      'jpeg_draft': 'false', 'pixel_mean': '1,2,3'}
  assert r.beam_args == [
      '--job_name=m-j', '--flink_version=1.20', '--experiments=a',
      '--experiments=b', '--save_main_session',
      f'--environment_config={{"command":"{tmp_path}/w","n":"1"}}']
  # --set beats -D beats the environment beats the default; -D replaces
  # the template's entry; a command-line Beam flag replaces the template's.
  r = _resolve(args + ['--set', 'IN=/set', '-Dmodel_path=d', '--set',
                       'name=s', '--job_name=cli'],
               environ={'IN': '/env', 'JOB': 'e'})
  assert r.params['input_oss_file'] == '/set'
  assert r.params['model_path'] == 'd'
  assert r.params['output_oss_file'] == 'out/${x}/s.txt'
  assert r.beam_args[0] == '--flink_version=1.20'
  assert r.beam_args[-1] == '--job_name=cli'
  # An empty -D value leaves the parameter to ev-predict's default.
  r = _resolve(args + ['-Djpeg_draft='])
  assert 'jpeg_draft' not in r.params


def test_dry_run_masks_secrets(capsys, clean_env):
  secret, token = 'Sec-9f8e7d6c5b4a-never-print-me', 'Tok-1a2b3c4d5e6f'
  clean_env.setenv('OSS_ACCESS_KEY_ID', 'LTAI-test-id')
  clean_env.setenv('OSS_ACCESS_KEY_SECRET', secret)
  clean_env.setenv('OSS_SESSION_TOKEN', token)
  code, out, err = _submit(capsys, [
      '--template', _template('local.yaml'), *_JOB,
      f'-Darn=acs:ram::1:role/{token}',       # a value holding the token
      f'--job_name={secret}',                # a value equal to the secret
      '--s3_secret_access_key=plain-text',   # a secret-looking name
      '--s3_access_key_id=AKID', '-Doutput_key=probs', '--dry-run'])
  assert code == 0, err
  assert secret not in out + err and token not in out + err
  assert 'plain-text' not in out and 'AKID' not in out
  line = shlex.split(out.splitlines()[0])
  assert '-Darn=acs:ram::1:role/****' in line
  assert '--job_name=****' in line
  assert '--s3_secret_access_key=****' in line
  assert '--s3_access_key_id=****' in line
  assert '-Doutput_key=probs' in line  # a model output's name, not a secret
  assert '  s3_secret_access_key: ****' in out.splitlines()
  assert '  arn: acs:ram::1:role/****' in out.splitlines()

  # Errors are masked too.
  code, _, err = _submit(capsys, ['--template', _template('local.yaml'),
                                  *_JOB, f'-Dbatch_size={secret}'])
  assert code == 2 and secret not in err and '****' in _error(err)


def test_real_submission_of_the_local_template(capsys, tmp_path, model_dirs):
  images = [write_image(tmp_path / f'{i}.png', 300 + i) for i in range(3)]
  listing = tmp_path / 'list.txt'
  listing.write_text('\n'.join(images + [str(tmp_path / 'gone.png')]) + '\n')
  out = tmp_path / 'out' / 'result.txt'
  code, _, err = _submit(capsys, [
      '--template', _template('local.yaml'),
      f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
      f'-Doutput_oss_file={out}', '-Dbatch_size=2', '--set',
      'max_error_ratio=0.5', '--set', 'cpuRequired=100'])
  assert code == 0, err
  assert 'ev-predict: submitting templates/local.yaml: ev-predict ' in err
  summary = json.loads((tmp_path / 'out' / 'result.txt.summary.json')
                       .read_text())
  assert (summary['lines_read'], summary['succeeded'], summary['failed'],
          summary['batch_size']) == (4, 3, 1, 2)
  results = [split_output_line(l) for l in read_lines(out)]
  assert sorted(k.decode() for k, _ in results) == sorted(images)
  for _, record in results:
    assert set(record) == {'class', 'class_name', 'class_probs'}
    assert record['class_name'] == LABELS[record['class']]
    assert list(record['class_probs']) == LABELS
    assert abs(sum(record['class_probs'].values()) - 1) < 1e-4
  errors = [split_output_line(l) for l in read_lines(f'{out}.errors')]
  assert [(k.decode(), r['error']) for k, r in errors] == [
      (str(tmp_path / 'gone.png'), 'not_found')]


def test_bundled_templates_by_name(capsys, tmp_path, monkeypatch):
  """--template local is the packaged templates/local.yaml, from any
  directory; a file of that name there wins; an unknown name lists them."""
  assert template.bundled() == ['dataflow', 'flink', 'local', 'spark']
  by_path = _resolve(['--template', _template('local.yaml'), *_JOB])
  monkeypatch.chdir(tmp_path)
  by_name = _resolve(['--template', 'local', *_JOB])
  assert (by_name.params, by_name.beam_args) == (by_path.params,
                                                by_path.beam_args)
  assert by_name.template == 'local'
  code, out, err = _submit(capsys, ['--template', 'flink', *_JOB,
                                    '--dry-run'])
  assert code == 0, err
  assert f'--flink_job_server_jar={REPO}/build/flink/' in out
  (tmp_path / 'local').write_text('beam_options:\n  runner: FlinkRunner\n')
  assert _resolve(['--template', 'local', *_JOB]).beam_args == [
      '--runner=FlinkRunner']
  code, _, err = _submit(capsys, ['--template', 'locl', *_JOB])
  assert code == 2
  assert _error(err) == (
      'ev-predict: error: cannot read template locl: No such file or '
      'directory (did you mean local? bundled templates: dataflow, flink, '
      'local, spark)')
  code, _, err = _submit(capsys, ['--template', 'nothing-like-it', *_JOB])
  assert code == 2 and _error(err) == (
      'ev-predict: error: cannot read template nothing-like-it: No such file '
      'or directory (bundled templates: dataflow, flink, local, spark)')


def test_submit_help_names_templates_and_points_to_the_parameters(capsys):
  code, out, err = _submit(capsys, ['--help'])
  assert (code, err) == (0, '')
  assert out.startswith('usage: ev-predict submit --template NAME|FILE')
  assert f'a bundled one ({", ".join(template.bundled())})' in out
  assert out.rstrip().endswith('The parameters, their meaning and defaults: '
                               'ev-predict --help.')


def test_ev_predict_root_outside_a_checkout(tmp_path, monkeypatch):
  """From a checkout EV_PREDICT_ROOT is the repository; installed (no
  setup.py beside the package folders) it is the current directory."""
  assert template.repository_root() == REPO
  monkeypatch.setattr(template, '_CHECKOUT', str(tmp_path / 'site-packages'))
  monkeypatch.chdir(tmp_path)
  resolved = _resolve(['--template', 'spark', *_JOB])
  assert (f'--spark_job_server_jar={tmp_path}/build/spark/'
          in resolved.beam_args[3])


def test_submit_reads_parameters_as_ev_predict_does():
  """The same tokenizer as `ev-predict` (commandline.parse_command_line), with
  every problem kept for the one message; submit's own options around it."""
  req = submit.parse_args([
      '--templat', 'local', '--dry_run', '-Dmodel_pth=m', '-Dnum_worker',
      '--input_oss_file', "'in.txt';", '-Dnum_worker=two', 'stray',
      '--runner', 'DirectRunner', '--set', 'X=1', '--set=bad', '--dry-run'])
  assert req.errors == [
      'unknown option --templat (did you mean --template?)',
      'unknown option --dry_run (did you mean --dry-run?)',
      "--set 'bad': use --set NAME=value",
      'unknown parameter -Dmodel_pth (did you mean model_path?)',
      "malformed parameter '-Dnum_worker'; use -Dkey=value",
      "unexpected argument 'stray'; parameters look like -Dkey=value",
      '--template NAME|FILE is required']
  # Values are checked with the template's, by resolve().
  assert req.params == {'input_oss_file': 'in.txt', 'num_worker': 'two'}
  assert req.beam_args == ['--runner', 'DirectRunner']
  assert (req.sets, req.dry_run, req.template) == ({'X': '1'}, True, None)
