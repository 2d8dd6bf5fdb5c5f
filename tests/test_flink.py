"""On a real local Flink cluster (scripts/flink-cluster.sh: 1 JobManager and
2 TaskManagers, Beam's portable FlinkRunner, SDK workers from .venv) a job
gives the same result and error lines as on DirectRunner.

Runs only with EV_PREDICT_FLINK=1: the first run downloads Flink and Beam's
Flink runner (about 400 MB from PyPI and Maven Central, into build/flink/) and
needs Java 11/17 and Maven; the module takes about 12 minutes on 2 busy cores
(4 TaskManagers; each job ~1.5-3 min, mostly SDK worker start-up). With
EV_PREDICT_FLINK=1 a missing prerequisite fails the test instead of skipping it.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest

from ev_predict.pipeline import launcher
from ev_predict.transforms import state as state_lib
from tests.cluster import (free_port, mixed_file_list, run_and_read,
                           run_oss_job_keeping_the_secret, run_script,
                           worker_environment)
from tests.conftest import OSS_SECRET, write_image
from tests.helpers import (assert_each_line_once, process_table, read_lines,
                           split_output_line)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'flink-cluster.sh'

pytestmark = [
    pytest.mark.skipif(
        os.environ.get('EV_PREDICT_FLINK') != '1',
        reason='Flink cluster tests run with EV_PREDICT_FLINK=1 (they need '
               'Java, Maven, ~400 MB of downloads on first use, ~12 min)'),
    pytest.mark.timeout(1200),
]


def _leftovers(folder):
  """What a job left beside its three files and its report (staging
  files, its state)."""
  return sorted(n for n in os.listdir(folder) if not n.endswith(
      ('result.txt', 'result.txt.errors', 'result.txt.summary.json',
       'result.txt.report.html')))


def _script(command, env, timeout):
  return run_script(SCRIPT, command, env, timeout)


class Cluster:

  def __init__(self, env):
    self.env = env
    self.rest = f'http://127.0.0.1:{env["FLINK_REST_PORT"]}'
    self.flags = _script('flags', env, 60).splitlines()

  def get(self, path):
    with urllib.request.urlopen(self.rest + path, timeout=10) as r:
      return json.loads(r.read())

  def jobs(self):
    return {j['jid']: j['state'] for j in self.get('/jobs/overview')['jobs']}

  def finished_jobs(self):
    return {jid for jid, state in self.jobs().items() if state == 'FINISHED'}

  def cancel(self, jid):
    request = urllib.request.Request(f'{self.rest}/jobs/{jid}?mode=cancel',
                                     method='PATCH')
    with urllib.request.urlopen(request, timeout=10):
      pass

  def taskmanagers(self):
    return self.get('/taskmanagers')['taskmanagers']

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
             FLINK_REST_PORT=str(free_port()),
             FLINK_RPC_PORT=str(free_port()),
             # Jobs use 2. test_failed_job_resumes_where_it_stopped kills
             # one; of the 3 left, the third lets a job survive a lost
             # TaskManager (test_killed_taskmanager_job_still_exactly_once,
             # run last).
             FLINK_TASKMANAGERS='4', FLINK_TASK_SLOTS='1',
             **worker_environment(tmp_path_factory))
  _script('setup', env, 1200)
  try:
    _script('start', env, 300)
    yield Cluster(env)
  finally:
    subprocess.run([str(SCRIPT), 'stop'], env=env, cwd=ROOT, timeout=120,
                   capture_output=True, check=False)


def _commit_order(folder, stop):
  """Chunk indices in the order their .done markers appeared (polled)."""
  order = []
  while not stop.wait(0.05):
    for name in sorted(state_lib.list_names(folder.chunks)):
      index = int(name[1:9]) if name.endswith('.done') else None
      if index is not None and index not in order:
        order.append(index)
  return order


def test_flink_matches_direct_runner(tmp_path, model_dirs, http_server,
                                     flink_cluster, monkeypatch):
  """Two parallel tasks on two TaskManagers write, byte for byte, the result
  and error files DirectRunner writes: every line in input order. The first
  chunk's lines are slow to fetch, so later chunks are committed before it
  (watched in the state folder): the order is the launcher's, not luck's."""
  monkeypatch.chdir(ROOT)
  mixed, n_ok, bad_kinds = mixed_file_list(tmp_path, http_server)
  for i in range(20):
    write_image(f'{http_server.root}/early{i}.png', 600 + i)
  # Chunks of 20 lines (state.chunk_lines_for): chunk 0 takes 6 s, the
  # other four well under one.
  early = [f'{http_server.base}/slow/6/early{i}.png' for i in range(20)]
  late = [write_image(tmp_path / f'late{i}.png', 700 + i) for i in range(40)]
  lines = early + late + mixed
  n_ok += len(early) + len(late)
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(l + '\n' for l in lines), encoding='utf-8')
  common = [f'-Dmodel_path={model_dirs["uint8"]}',
            f'-Dinput_oss_file={listing}', '-Dmax_error_ratio=1',
            '-Dnum_worker=2', '-Dbatch_size=4']

  direct_out = tmp_path / 'direct' / 'result.txt'
  direct = run_and_read(common, direct_out)

  out = tmp_path / 'flink' / 'result.txt'
  folder = state_lib.StateFolder(state_lib.state_folder(str(out)))
  stop, order = threading.Event(), []
  watcher = threading.Thread(
      target=lambda: order.extend(_commit_order(folder, stop)), daemon=True)
  watcher.start()
  before = flink_cluster.finished_jobs()
  try:
    flink = run_and_read(common + flink_cluster.flags + [
        '--parallelism=2',
        # Beam's Java runner only knows WARN (launcher.py's default is WARNING).
        '--default_sdk_harness_log_level=WARN',
    ], out)
  except Exception:
    print(flink_cluster.logs())
    raise
  finally:
    stop.set()
    watcher.join()

  assert sorted(order) == list(range(5)), order
  assert order != sorted(order), f'chunks were committed in order: {order}'
  print(f'FLINK-ORDER: chunks committed in the order {order}')
  for name in ('result.txt', 'result.txt.errors'):
    assert (out.parent / name).read_bytes() == \
        (direct_out.parent / name).read_bytes(), name
  # (mixed_file_list's failing lines are the list's last)
  assert [split_output_line(l)[0].decode() for l in flink[0] + flink[1]] \
      == lines
  assert len(direct[0]) == n_ok
  kinds = sorted(split_output_line(l)[1]['error'] for l in direct[1])
  assert kinds == bad_kinds
  for _, _, summary in (direct, flink):
    assert summary['accounting_ok']
    assert summary['lines_read'] == len(lines)
    assert summary['succeeded'] == n_ok
    assert summary['resumed_lines'] == 0
  assert _leftovers(out.parent) == []

  # It ran on the cluster: one new finished job whose classification stage
  # ran with parallelism 2 on both TaskManagers.
  new = flink_cluster.finished_jobs() - before
  assert len(new) == 1, new
  jid = new.pop()
  # ... without a single task failure on the way (restarts hide them; a
  # chunk whose records reached CommitChunks in two bundles fails one).
  assert not flink_cluster.get(
      f'/jobs/{jid}/exceptions')['exceptionHistory']['entries']
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
  from ev_predict.pipeline import submit
  code = submit.main(['--template', 'templates/flink.yaml', *job,
                      f'-Doutput_oss_file={out}'])
  if code:
    print(flink_cluster.logs())
  assert code == 0
  assert len(flink_cluster.finished_jobs() - before) == 1
  launcher.run(job + [f'-Doutput_oss_file={direct_out}'])
  assert sorted(read_lines(out)) == sorted(read_lines(direct_out))
  assert len(read_lines(out)) == 6
  assert [split_output_line(l)[1]['error']
          for l in read_lines(f'{out}.errors')] == ['not_found']


def test_oss_job_on_flink_never_shows_the_secret(tmp_path, model_dirs,
                                                oss_env, flink_cluster,
                                                monkeypatch):
  """Model, list and output on OSS, SDK workers at DEBUG: the secret (in the
  launcher's and the TaskManagers' environments) appears in no output, no
  launcher or cluster log, and not in the job's configuration on Flink."""
  monkeypatch.chdir(ROOT)
  before = flink_cluster.finished_jobs()
  run_oss_job_keeping_the_secret(tmp_path, oss_env, model_dirs, 'flink-leak',
                                 flink_cluster.flags, ROOT,
                                 flink_cluster.logs)
  secret = OSS_SECRET.encode()
  log_dir = pathlib.Path(flink_cluster.env['FLINK_RUN_DIR']) / 'log'
  logs = {p.name: p.read_bytes() for p in log_dir.iterdir() if p.is_file()}
  assert any(b'DEBUG' in text for name, text in logs.items()
             if 'sdk-worker' in name)         # the workers did log, verbosely
  assert not [name for name, text in logs.items() if secret in text]
  new = flink_cluster.finished_jobs() - before
  assert len(new) == 1, new
  config = json.dumps(flink_cluster.get(f'/jobs/{new.pop()}/config'))
  assert 'oss://data/lists/list.txt' in config   # the options are there
  assert OSS_SECRET not in config


def _busy_taskmanagers(run_dir):
  """{TaskManager JVM pid: its descendant pids}, for this cluster's
  TaskManagers that run an SDK worker (so hold a task of a running job).
  scripts/flink-sdk-worker execs sdk_worker_main once it has the job's
  options: a worker at work shows only the latter."""
  table = process_table()
  tms = [pid for pid, (_, cmd) in table.items()
         if b'TaskManagerRunner' in cmd and run_dir.encode() in cmd]
  busy = {}
  for tm in tms:
    family, grew = {tm}, True
    while grew:
      kids = {p for p, (pp, _) in table.items() if pp in family} - family
      family |= kids
      grew = bool(kids)
    family.discard(tm)
    if any(b'sdk_worker_main' in table[p][1] for p in family):
      busy[tm] = family
  return busy


def _kill_family(tm, family):
  for pid in [tm, *family]:
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


def test_multilabel_job_on_flink(tmp_path, flink_cluster, monkeypatch):
  """-Dmodel_type=multilabel_classifier on two TaskManagers: PAI's
  multi-label lines, byte for byte DirectRunner's, each image's labels
  those its brightness gives (models.save_multilabel_model, logits)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tests import models  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(ROOT)
  model = models.save_multilabel_model(str(tmp_path / 'model'), logits=True)
  levels = [13, 77, 128, 230] * 10
  lines = []
  for i, level in enumerate(levels):
    path = tmp_path / f'grey{i}.png'
    Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(path)
    lines.append(str(path))
  lines.append(str(tmp_path / 'gone.png'))
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(l + '\n' for l in lines), encoding='utf-8')
  common = [f'-Dmodel_path={model}', f'-Dinput_oss_file={listing}',
            '-Dmodel_type=multilabel_classifier', '-Dmax_error_ratio=1',
            '-Dnum_worker=2', '-Dbatch_size=4']
  direct_out = tmp_path / 'direct' / 'result.txt'
  run_and_read(common, direct_out)
  out = tmp_path / 'flink' / 'result.txt'
  try:
    results, errors, summary = run_and_read(common + flink_cluster.flags + [
        '--parallelism=2', '--default_sdk_harness_log_level=WARN'], out)
  except Exception:
    print(flink_cluster.logs())
    raise
  for name in ('result.txt', 'result.txt.errors'):
    assert (out.parent / name).read_bytes() == \
        (direct_out.parent / name).read_bytes(), name
  assert (summary['succeeded'], summary['failed']) == (40, 1)
  expected = {13: [], 77: [0], 128: [0, 1], 230: [0, 1, 2, 3]}
  for line, path, level in zip(results, lines, levels):
    value, body = split_output_line(line)
    assert value.decode() == path
    assert list(body) == ['class_probs', 'classes', 'predictions',
                          'class_names', 'probs']
    assert body['classes'] == expected[level], (path, body)
  assert [split_output_line(l)[1]['error'] for l in errors] == ['not_found']
  assert _leftovers(out.parent) == []


def test_table_job_on_flink(tmp_path, flink_cluster, monkeypatch):
  """A Parquet table in, Parquet tables out, on two TaskManagers: the same
  tables DirectRunner writes, row by row, typed columns kept; every row in
  exactly one of them (a missing image, an empty cell)."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tests import models  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(ROOT)
  model = models.save_multilabel_model(str(tmp_path / 'model'), logits=True)
  levels = [13, 77, 128, 230] * 10
  urls = []
  for i, level in enumerate(levels):
    path = tmp_path / f'grey{i}.png'
    Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(path)
    urls.append(str(path))
  urls[5] = str(tmp_path / 'gone.png')
  urls[22] = None
  pq.write_table(pa.table({
      'id': pa.array(range(100, 140), pa.int64()),
      'level': pa.array(levels, pa.int16()),
      'path': pa.array(urls, pa.string())}), tmp_path / 'in.parquet',
                 row_group_size=9)
  common = [f'-Dmodel_path={model}', f'-Dinput_table={tmp_path / "in.parquet"}',
            '-Dimage_col=path', '-Dreserved_columns=id,level',
            '-Dmodel_type=multilabel_classifier', '-Dmax_error_ratio=1',
            '-Dnum_worker=2', '-Dbatch_size=4']
  direct = tmp_path / 'direct' / 'out.parquet'
  launcher.run(common + [f'-Doutput_table={direct}'])
  out = tmp_path / 'flink' / 'out.parquet'
  try:
    summary = launcher.run(common + [f'-Doutput_table={out}'] +
                           flink_cluster.flags +
                           ['--parallelism=2',
                            '--default_sdk_harness_log_level=WARN'])
  except Exception:
    print(flink_cluster.logs())
    raise
  for name in ('out.parquet', 'out.errors.parquet'):
    assert pq.read_table(out.parent / name).equals(
        pq.read_table(direct.parent / name)), name
  ok = pq.read_table(out)
  assert ok.schema.field('level').type == pa.int16()
  assert ok.column('id').to_pylist() == [100 + i for i in range(40)
                                         if i not in (5, 22)]
  expected = {13: [], 77: [0], 128: [0, 1], 230: [0, 1, 2, 3]}
  for row in ok.to_pylist():
    assert json.loads(row['result'])['classes'] == expected[row['level']]
  bad = pq.read_table(out.parent / 'out.errors.parquet').to_pylist()
  assert [(r['id'], r['error']) for r in bad] == [(105, 'not_found'),
                                                  (122, 'bad_line')]
  assert (summary['result_rows'], summary['error_rows']) == (38, 2)
  assert sorted(os.listdir(out.parent)) == [
      'out.errors.parquet', 'out.parquet', 'out.parquet.report.html',
      'out.parquet.summary.json']


def test_failed_job_resumes_where_it_stopped(tmp_path, model_dirs,
                                              http_server, flink_cluster,
                                              monkeypatch):
  """A TaskManager is SIGKILLed (with its SDK workers: the machine is gone)
  mid-job and the job fails. The same command run again continues from the
  chunks committed before: it fetches only the lines of the others, each
  once, and writes, byte for byte, what an uninterrupted DirectRunner run
  of the list writes.

  The job is failed by cancelling it on the cluster right after the kill:
  the cluster's restart strategy (10 attempts) would rerun it, and Beam's
  Flink runner takes no per-job restart budget in batch mode
  (--number_of_execution_retries is only read for streaming jobs, and
  ev-predict refuses Java-only flags)."""
  monkeypatch.chdir(ROOT)
  for i in range(200):
    write_image(f'{http_server.root}/rs{i}.png', 900 + i, size=(34, 28))
  lines = [f'{http_server.base}/slow/0.2/rs{i}.png' for i in range(200)]
  lines.append(f'{http_server.base}/status/404')
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(l + '\n' for l in lines))
  # No report: its thumbnails are fetches of their own (counted below).
  job = [f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
         '-Dmax_error_ratio=1', '-Dnum_worker=2', '-Dbatch_size=4',
         '-Dfetch_threads=2', '-Dreport=false']
  out = tmp_path / 'flink' / 'result.txt'
  argv = job + [f'-Doutput_oss_file={out}'] + flink_cluster.flags + [
      '--parallelism=2']
  direct_out = tmp_path / 'direct' / 'result.txt'
  launcher.run(job + [f'-Doutput_oss_file={direct_out}'])

  def fetches():
    with http_server.lock:
      return {p: n for p, n in http_server.hits.items()
              if p.startswith('/slow/0.2/rs')}

  folder = state_lib.StateFolder(state_lib.state_folder(str(out)))
  run_dir = flink_cluster.env['FLINK_RUN_DIR']
  before_jobs = set(flink_cluster.jobs())
  killed, cancelled = [], []
  stop = threading.Event()

  def kill_then_cancel():
    while not stop.wait(0.2):
      done = [n for n in state_lib.list_names(folder.chunks)
              if n.endswith('.done')]
      busy = _busy_taskmanagers(run_dir)
      if len(done) >= 3 and len(busy) == 2:
        _kill_family(*next(iter(busy.items())))
        killed.append(len(done))
        for jid, state in flink_cluster.jobs().items():
          if jid not in before_jobs and state not in ('FINISHED', 'FAILED',
                                                      'CANCELED'):
            flink_cluster.cancel(jid)
            cancelled.append(jid)
        return

  # The first run in a process of its own (a rerun in the process of a
  # failed run would find that run's launcher.json naming a live pid).
  from tests.test_oss import EV_PREDICT
  thread = threading.Thread(target=kill_then_cancel, daemon=True)
  thread.start()
  try:
    proc = subprocess.run([EV_PREDICT] + argv, capture_output=True,
                          timeout=600, check=False, cwd=ROOT)
  finally:
    stop.set()
    thread.join()
  assert killed and len(cancelled) == 1, (killed, cancelled,
                                          proc.stderr.decode()[-2000:])
  assert proc.returncode == 3, proc.stderr.decode()[-3000:]
  assert b'ev-predict: job failed' in proc.stderr
  assert not out.exists()
  plan = state_lib.ListPlan.from_json(state_lib.read_json(folder.plan))
  committed = state_lib.committed(folder, plan)
  starts = [sum(plan.counts[:i]) for i in range(plan.chunks + 1)]
  kept = {j for i in committed for j in range(starts[i], starts[i + 1])}
  assert 0 < len(kept) < len(lines), (len(kept), plan.chunks)

  # The rerun waits for the JobManager to drop the dead TaskManager (a
  # task deployed to it would fail): 3 TaskManagers, all alive.
  deadline = time.monotonic() + 120
  while len(flink_cluster.taskmanagers()) != 3:
    assert time.monotonic() < deadline, flink_cluster.taskmanagers()
    time.sleep(1)
  first = fetches()
  try:
    summary = launcher.run(argv)
  except Exception:
    print(flink_cluster.logs())
    raise
  again = {p: n - first.get(p, 0) for p, n in fetches().items()
           if n > first.get(p, 0)}

  assert summary['resumed_lines'] == len(kept)
  assert summary['processed_lines'] == len(lines) - len(kept)
  assert summary['accounting_ok'] and summary['lines_read'] == len(lines)
  # Only the lines of the chunks not committed were fetched, each once.
  redo = {lines[j].replace(http_server.base, '') for j in
          range(len(lines)) if j not in kept and '/slow/' in lines[j]}
  assert set(again) == redo and set(again.values()) == {1}
  for name in ('result.txt', 'result.txt.errors'):
    assert (out.parent / name).read_bytes() == \
        (direct_out.parent / name).read_bytes(), name
  assert _leftovers(out.parent) == []
  assert flink_cluster.jobs()[cancelled[0]] == 'CANCELED'
  # Fetched by the failed run, then again: the chunks in flight at the kill.
  twice = sum(1 for p in again if first.get(p, 0) >= 2)
  print(f'FLINK-RESUME: killed at {killed[0]} chunks committed; '
        f'{len(committed)} of {plan.chunks} committed when the job ended '
        f'({len(kept)} lines resumed); the rerun fetched {len(again)} lines, '
        f'{twice} of them fetched by the failed run too')


def test_killed_taskmanager_job_still_exactly_once(tmp_path, model_dirs,
                                                    http_server,
                                                    flink_cluster,
                                                    monkeypatch):
  """SIGKILL a TaskManager (and its SDK workers: the machine is gone) while
  it classifies: Flink's restart strategy reruns the job on the TaskManagers
  left, and the result has every line exactly once. Runs last: the cluster
  has one TaskManager fewer afterwards."""
  monkeypatch.chdir(ROOT)
  for i in range(10):
    write_image(f'{http_server.root}/tm{i}.png', 800 + i, size=(34, 28))
  lines = [f'{http_server.base}/slow/0.2/tm{i % 10}.png?n={i}'
           for i in range(200)]
  lines.append(f'{http_server.base}/status/404')
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(l + '\n' for l in lines))
  out = tmp_path / 'flink' / 'result.txt'
  argv = [f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
          '-Dmax_error_ratio=1', '-Dnum_worker=2', '-Dbatch_size=4',
          '-Dfetch_threads=2', f'-Doutput_oss_file={out}'
          ] + flink_cluster.flags + ['--parallelism=2']

  def slow_hits():
    with http_server.lock:
      return sum(n for p, n in http_server.hits.items()
                 if p.startswith('/slow/0.2/tm'))

  # The job runs here, the killer beside it: Beam's portable runner sets
  # signal handlers, which only the main thread may do.
  killed = []
  done = threading.Event()

  def killer():
    while not done.wait(0.3):
      busy = _busy_taskmanagers(flink_cluster.env['FLINK_RUN_DIR'])
      if len(busy) == 2 and slow_hits() >= 40:
        tm, family = next(iter(busy.items()))
        _kill_family(tm, family)
        killed.append(tm)
        return

  before = flink_cluster.finished_jobs()
  thread = threading.Thread(target=killer, daemon=True)
  thread.start()
  try:
    summary = launcher.run(argv)
  except Exception:
    print(flink_cluster.logs())
    raise
  finally:
    done.set()
    thread.join()
  assert killed, 'the job ended before a TaskManager could be killed'

  assert_each_line_once(out, lines, summary, ['not_found'])
  assert _leftovers(out.parent) == []

  # The job that finished is the one that lost a TaskManager on the way.
  new = flink_cluster.finished_jobs() - before
  assert len(new) == 1, new
  history = flink_cluster.get(f'/jobs/{new.pop()}/exceptions')
  traces = [e.get('stacktrace', '') for e in
            history['exceptionHistory']['entries']]
  assert any('task manager' in t.lower() or 'taskmanager' in t.lower()
             for t in traces), traces
  # ... and lost nothing to a misconfigured cluster.
  assert not any('Insufficient number of network buffers' in t
                 for t in traces)
