"""On a real local Spark standalone cluster (scripts/spark-cluster.sh: 1
master and 2 workers, Beam's portable SparkRunner, SDK workers from .venv) a
job gives the same result and error lines as on DirectRunner, and so does a
submission of templates/spark.yaml.

The cluster tests run only with EV_PREDICT_SPARK=1: the first run downloads
Spark (PyPI's pyspark sdist, ~320 MB) and Beam's Spark runner with Spark's
jars (~300 MB from Maven Central) into build/spark/, and needs Java 17 and
Maven; a run takes about two minutes. With EV_PREDICT_SPARK=1 a missing
prerequisite fails the test instead of skipping it. The check that the
template resolves to the script's flags needs no cluster and always runs.
"""
import json
import os
import pathlib
import shutil
import subprocess
import urllib.request

import pytest

from ev_predict.pipeline import launcher, submit
from tests.cluster import (free_port, mixed_file_list, run_and_read,
                           run_oss_job_keeping_the_secret, run_script,
                           worker_environment)
from tests.conftest import OSS_SECRET, write_image
from tests.helpers import read_lines, split_output_line

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'spark-cluster.sh'
TEMPLATE = 'templates/spark.yaml'
_JOB = ['-Dmodel_path=/m', '-Dinput_oss_file=/in.txt',
        '-Doutput_oss_file=/out/result.txt']

needs_cluster = pytest.mark.skipif(
    os.environ.get('EV_PREDICT_SPARK') != '1',
    reason='Spark cluster tests run with EV_PREDICT_SPARK=1 (they need Java, '
           'Maven, ~600 MB of downloads on first use, ~2 min)')
pytestmark = pytest.mark.timeout(1200)


def _script(command, env, timeout):
  return run_script(SCRIPT, command, env, timeout)


def _base_env():
  """The environment less anything the template or the script reads."""
  return {k: v for k, v in os.environ.items()
          if not k.startswith('SPARK_') and k not in (
              'SDK_WORKER', 'EV_PREDICT_ROOT', 'EV_PREDICT_PYTHON')}


def test_template_gives_the_cluster_scripts_flags(tmp_path):
  """templates/spark.yaml resolves to exactly what `spark-cluster.sh flags`
  prints (no cluster needed), by default and for a cluster with other
  settings, whose `env` output is the template's environment."""
  base = _base_env()
  args = submit.parse_args(['--template', TEMPLATE, *_JOB])
  flags = _script('flags', base, 30).splitlines()
  assert submit.resolve(args, environ=base).beam_args == flags
  assert flags[0] == '--runner=SparkRunner'
  assert '--spark_master_url=spark://127.0.0.1:7177' in flags

  other = dict(base, SPARK_MASTER_PORT='17077', SPARK_CACHE=str(tmp_path),
               SPARK_RUN_DIR='build/elsewhere', SPARK_EXECUTOR_MEMORY='768m')
  cluster_env = dict(line.split('=', 1)
                     for line in _script('env', other, 30).splitlines())
  flags = _script('flags', other, 30).splitlines()
  assert submit.resolve(args, environ=dict(base, **cluster_env)).beam_args \
      == flags
  assert '--spark_master_url=spark://127.0.0.1:17077' in flags
  assert f'--spark_job_server_jar={tmp_path}/' in flags[3]
  assert ('--environment_config={"command":"'
          f'{ROOT}/build/elsewhere/sdk-worker"}}') in flags
  assert '--job_server_jvm_properties=-Dspark.executor.memory=768m' in flags


class Cluster:

  def __init__(self, env):
    self.env = env
    self.ui = f'http://127.0.0.1:{env["SPARK_MASTER_WEBUI_PORT"]}'
    self.run_dir = pathlib.Path(env['SPARK_RUN_DIR'])
    self.flags = _script('flags', env, 60).splitlines()

  def master(self):
    with urllib.request.urlopen(self.ui + '/json/', timeout=10) as r:
      return json.loads(r.read())

  def finished_apps(self):
    return {a['id']: a for a in self.master()['completedapps']
            if a['state'] == 'FINISHED'}

  def executor_logs(self, app_id):
    """{worker dir name: [stderr text of each of its executors of app_id]}"""
    logs = {}
    for worker in sorted((self.run_dir / 'work').glob('worker-*')):
      logs[worker.name] = [p.read_text(errors='replace')
                           for p in sorted(worker.glob(f'{app_id}/*/stderr'))]
    return logs

  def logs(self):
    return subprocess.run([str(SCRIPT), 'logs'], env=self.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          check=False).stdout


@pytest.fixture(scope='session')
def spark_cluster(tmp_path_factory):
  for tool in ('java', 'mvn', 'curl'):
    if not shutil.which(tool):
      pytest.fail(f'EV_PREDICT_SPARK=1 but {tool} is not installed')
  env = _base_env()
  # Its own run directory and ports: a developer's cluster may be running.
  env.update(SPARK_RUN_DIR=str(tmp_path_factory.mktemp('spark-run')),
             SPARK_MASTER_PORT=str(free_port()),
             SPARK_MASTER_WEBUI_PORT=str(free_port()),
             SPARK_WORKER_WEBUI_PORT='0',
             SPARK_WORKERS='2', SPARK_WORKER_CORES='1',
             **worker_environment(tmp_path_factory))
  _script('setup', env, 1200)
  try:
    _script('start', env, 300)
    yield Cluster(env)
  finally:
    subprocess.run([str(SCRIPT), 'stop'], env=env, cwd=ROOT, timeout=120,
                   capture_output=True, check=False)


@needs_cluster
def test_spark_matches_direct_runner(tmp_path, model_dirs, http_server,
                                     spark_cluster, monkeypatch):
  monkeypatch.chdir(ROOT)
  lines, n_ok, bad_kinds = mixed_file_list(tmp_path, http_server)
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(l + '\n' for l in lines), encoding='utf-8')
  common = [f'-Dmodel_path={model_dirs["uint8"]}',
            f'-Dinput_oss_file={listing}', '-Dmax_error_ratio=1',
            '-Dnum_worker=2', '-Dbatch_size=4']

  direct = run_and_read(common, tmp_path / 'direct' / 'result.txt')

  before = spark_cluster.finished_apps()
  try:
    spark = run_and_read(common + spark_cluster.flags,
                 tmp_path / 'spark' / 'result.txt')
  except Exception:
    print(spark_cluster.logs())
    raise

  # The same lines in input order: the launcher joins the committed chunks.
  assert spark[:2] == direct[:2]
  # (mixed_file_list's failing lines are the list's last)
  assert [split_output_line(l)[0].decode() for l in spark[0] + spark[1]] \
      == lines
  assert len(direct[0]) == n_ok
  kinds = sorted(split_output_line(l)[1]['error'] for l in direct[1])
  assert kinds == bad_kinds
  for _, _, summary in (direct, spark):
    assert summary['accounting_ok']
    assert summary['lines_read'] == len(lines)
    assert summary['succeeded'] == n_ok
    assert summary['resumed_lines'] == 0
  # Nothing beside the three files: no staging file, no resume state.
  assert sorted(os.listdir(tmp_path / 'spark')) == [
      'result.txt', 'result.txt.errors', 'result.txt.report.html',
      'result.txt.summary.json']

  # It ran on the cluster: one new finished application, with one executor
  # (1 core) on each worker, and each executor ran bundles on its SDK worker.
  new = set(spark_cluster.finished_apps()) - set(before)
  assert len(new) == 1, new
  app_id = new.pop()
  assert spark_cluster.finished_apps()[app_id]['cores'] == 2
  logs = spark_cluster.executor_logs(app_id)
  assert sorted(logs) == ['worker-1', 'worker-2'], logs.keys()
  for worker, executors in logs.items():
    assert len(executors) == 1, (worker, len(executors))
    assert 'getProcessBundleDescriptor' in executors[0], (worker,
                                                          executors[0][-3000:])
    # Beam's Google libraries find their guava (the jar relocates it).
    assert 'NoSuchMethodError' not in executors[0], executors[0][-3000:]


@needs_cluster
def test_submit_spark_template(tmp_path, model_dirs, spark_cluster,
                               monkeypatch):
  """What an ops team runs: `ev-predict submit --template templates/spark.yaml`
  against the cluster, with the cluster's settings from the script's env."""
  monkeypatch.chdir(ROOT)
  for line in _script('env', spark_cluster.env, 60).splitlines():
    name, _, value = line.partition('=')
    monkeypatch.setenv(name, value)
  paths = [write_image(tmp_path / f's{i}.png', 500 + i) for i in range(6)]
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(p + '\n' for p in paths + [
      str(tmp_path / 'gone.jpg')]))
  out = tmp_path / 'submitted' / 'result.txt'
  direct_out = tmp_path / 'direct' / 'result.txt'
  job = [f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
         '-Dmax_error_ratio=0.5']
  before = spark_cluster.finished_apps()
  code = submit.main(['--template', TEMPLATE, *job,
                      f'-Doutput_oss_file={out}'])
  if code:
    print(spark_cluster.logs())
  assert code == 0
  assert len(set(spark_cluster.finished_apps()) - set(before)) == 1
  launcher.run(job + [f'-Doutput_oss_file={direct_out}'])
  assert sorted(read_lines(out)) == sorted(read_lines(direct_out))
  assert len(read_lines(out)) == 6
  assert [split_output_line(l)[1]['error']
          for l in read_lines(f'{out}.errors')] == ['not_found']


@needs_cluster
def test_oss_job_on_spark_never_shows_the_secret(tmp_path, model_dirs,
                                                oss_env, spark_cluster,
                                                monkeypatch):
  """Model, list and output on OSS, SDK workers at DEBUG: the secret (in the
  launcher's and the Spark workers' environments) appears in no output and
  no launcher, master, worker or executor log."""
  monkeypatch.chdir(ROOT)
  run_oss_job_keeping_the_secret(tmp_path, oss_env, model_dirs, 'spark-leak',
                                 spark_cluster.flags, ROOT,
                                 spark_cluster.logs)
  secret = OSS_SECRET.encode()
  texts = {str(p.relative_to(spark_cluster.run_dir)): p.read_bytes()
           for p in spark_cluster.run_dir.rglob('*')
           if p.is_file() and p.suffix != '.jar' and
           p.stat().st_size < 64 << 20}
  assert any(b'DEBUG' in t for t in texts.values())  # workers logged, verbosely
  assert not [name for name, t in texts.items() if secret in t]
