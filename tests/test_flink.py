"""On a real local Flink cluster (scripts/flink-cluster.sh: 1 JobManager and
2 TaskManagers, Beam's portable FlinkRunner, SDK workers from .venv) a job
gives the same result and error lines as on DirectRunner.

Runs only with EV_PREDICT_FLINK=1: the first run downloads Flink and Beam's
Flink runner (about 400 MB from PyPI and Maven Central, into build/flink/) and
needs Java 11/17 and Maven; a run takes about two minutes. With
EV_PREDICT_FLINK=1 a missing prerequisite fails the test instead of skipping it.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import urllib.request

import pytest

from pipeline import cli
from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'flink-cluster.sh'

pytestmark = [
    pytest.mark.skipif(
        os.environ.get('EV_PREDICT_FLINK') != '1',
        reason='Flink cluster tests run with EV_PREDICT_FLINK=1 (they need '
               'Java, Maven, ~400 MB of downloads on first use, ~2 min)'),
    pytest.mark.timeout(1200),
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _script(command, env, timeout):
  proc = subprocess.run([str(SCRIPT), command], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
  if proc.returncode:
    pytest.fail(f'flink-cluster.sh {command} failed ({proc.returncode}):\n'
                f'{proc.stdout}\n{proc.stderr}')
  return proc.stdout


class Cluster:

  def __init__(self, env):
    self.env = env
    self.rest = f'http://127.0.0.1:{env["FLINK_REST_PORT"]}'
    self.flags = _script('flags', env, 60).splitlines()

  def get(self, path):
    with urllib.request.urlopen(self.rest + path, timeout=10) as r:
      return json.loads(r.read())

  def finished_jobs(self):
    return {j['jid'] for j in self.get('/jobs/overview')['jobs']
            if j['state'] == 'FINISHED'}

  def logs(self):
    return subprocess.run([str(SCRIPT), 'logs'], env=self.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          check=False).stdout


@pytest.fixture(scope='session')
def flink_cluster(tmp_path_factory):
  for tool in ('java', 'mvn', 'curl'):
    if not shutil.which(tool):
      pytest.fail(f'EV_PREDICT_FLINK=1 but {tool} is not installed')
  env = dict(os.environ)
  # Its own run directory and ports: a developer's cluster may be running.
  env.update(FLINK_RUN_DIR=str(tmp_path_factory.mktemp('flink-run')),
             FLINK_REST_PORT=str(_free_port()),
             FLINK_RPC_PORT=str(_free_port()),
             FLINK_TASKMANAGERS='2', FLINK_TASK_SLOTS='1')
  _script('setup', env, 1200)
  try:
    _script('start', env, 300)
    yield Cluster(env)
  finally:
    subprocess.run([str(SCRIPT), 'stop'], env=env, cwd=ROOT, timeout=120,
                   capture_output=True, check=False)


def _file_list(tmp_path, http_server):
  """(lines, expected number of results, expected error kinds)."""
  images = tmp_path / 'images'
  images.mkdir()
  lines = [write_image(images / f'img{i}.{ext}', 300 + i, size=(30 + i, 24),
                       fmt=fmt)
           for i, (ext, fmt) in enumerate(
               [('jpg', None), ('png', None), ('webp', 'WEBP'),
                ('bmp', None)] * 4)]
  lines.append(lines[0])  # a duplicate line gives two records
  # Relative to the repository root: the working directory of the SDK
  # workers, and of the DirectRunner run below.
  lines += ['examples/data/images/digit_00_label-two.png',
            'examples/data/images/digit_05_label-seven.webp']
  write_image(f'{http_server.root}/web.png', 399)
  lines.append(f'{http_server.base}/web.png')
  (images / 'text.jpg').write_text('not an image')
  bad = {str(images / 'text.jpg'): 'decode',
         str(images / 'missing.jpg'): 'not_found',
         f'{http_server.base}/status/404': 'not_found'}
  return lines + list(bad), len(lines), sorted(bad.values())


def _run(argv, out):
  summary = cli.run(argv + [f'-Doutput_oss_file={out}'])
  return read_lines(out), read_lines(f'{out}.errors'), summary


def test_flink_matches_direct_runner(tmp_path, model_dirs, http_server,
                                     flink_cluster, monkeypatch):
  monkeypatch.chdir(ROOT)
  lines, n_ok, bad_kinds = _file_list(tmp_path, http_server)
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(l + '\n' for l in lines), encoding='utf-8')
  common = [f'-Dmodel_path={model_dirs["uint8"]}',
            f'-Dinput_oss_file={listing}', '-Dmax_error_ratio=1',
            '-Dnum_worker=2', '-Dbatch_size=4']

  direct = _run(common, tmp_path / 'direct' / 'result.txt')

  before = flink_cluster.finished_jobs()
  try:
    flink = _run(common + flink_cluster.flags + [
        '--parallelism=2',
        # Beam's Java runner only knows WARN (cli.py's default is WARNING).
        '--default_sdk_harness_log_level=WARN',
    ], tmp_path / 'flink' / 'result.txt')
  except Exception:
    print(flink_cluster.logs())
    raise

  assert sorted(flink[0]) == sorted(direct[0])
  assert sorted(flink[1]) == sorted(direct[1])
  assert len(direct[0]) == n_ok
  kinds = sorted(split_output_line(l)[1]['error'] for l in direct[1])
  assert kinds == bad_kinds
  for _, _, summary in (direct, flink):
    assert summary['accounting_ok']
    assert summary['lines_read'] == len(lines)
    assert summary['succeeded'] == n_ok
  assert not list((tmp_path / 'flink').glob('*.shards-*'))

  # It ran on the cluster: one new finished job whose classification stage
  # ran with parallelism 2 on both TaskManagers.
  new = flink_cluster.finished_jobs() - before
  assert len(new) == 1, new
  jid = new.pop()
  classify = [v for v in flink_cluster.get(f'/jobs/{jid}')['vertices']
              if 'Classify' in v['name']]
  assert len(classify) == 1 and classify[0]['parallelism'] == 2
  tms = flink_cluster.get(
      f'/jobs/{jid}/vertices/{classify[0]["id"]}/taskmanagers')['taskmanagers']
  assert len({tm['taskmanager-id'] for tm in tms}) == 2, tms


def test_submit_flink_template(tmp_path, model_dirs, flink_cluster,
                               monkeypatch):
  """What an ops team runs: `ev-predict submit --template templates/flink.yaml`
  against the cluster, with the cluster's settings from the script's env."""
  monkeypatch.chdir(ROOT)
  for line in _script('env', flink_cluster.env, 60).splitlines():
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
  before = flink_cluster.finished_jobs()
  from pipeline import submit
  code = submit.main(['--template', 'templates/flink.yaml', *job,
                      f'-Doutput_oss_file={out}'])
  if code:
    print(flink_cluster.logs())
  assert code == 0
  assert len(flink_cluster.finished_jobs() - before) == 1
  cli.run(job + [f'-Doutput_oss_file={direct_out}'])
  assert sorted(read_lines(out)) == sorted(read_lines(direct_out))
  assert len(read_lines(out)) == 6
  assert [split_output_line(l)[1]['error']
          for l in read_lines(f'{out}.errors')] == ['not_found']
