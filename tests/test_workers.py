"""Local parallelism: several DirectRunner worker processes give the same
result file (after sorting lines) as one, even when one of them dies."""
import glob
import json
import os
import signal
import threading
import time

import pytest

from ev_predict.pipeline import launcher
from tests.conftest import write_image
from tests.helpers import assert_each_line_once, process_table, run_job


def test_one_and_two_workers_identical(tmp_path, model_dirs):
  paths = [write_image(tmp_path / f'{i}.jpg', 100 + i, size=(50 + i, 40))
           for i in range(45)]
  paths += [str(tmp_path / 'missing.jpg')]
  one = run_job(tmp_path, paths, model_dirs['uint8'], name='one',
                batch_size=8)
  two = run_job(tmp_path, paths, model_dirs['uint8'], name='two',
                batch_size=8, num_worker=2)
  assert sorted(one[0]) == sorted(two[0])
  assert sorted(one[1]) == sorted(two[1])
  assert len(one[0]) == 45 and len(one[1]) == 1
  assert two[2]['workers'] == 2 and two[2]['accounting_ok']
  assert two[2]['attempts'] == 1


def _sdk_workers():
  """Our SDK worker processes (children of this test process's children)."""
  table = process_table()
  mine = os.getpid()

  def ours(ppid):
    return ppid == mine or table.get(ppid, (None,))[0] == mine

  return [pid for pid, (ppid, cmd) in table.items()
          if b'sdk_worker_main' in cmd and b'/bin/sh' not in cmd and
          ours(ppid)]


def _slow_job(tmp_path, http_server, model_path, name):
  for i in range(12):
    write_image(f'{http_server.root}/kill{i}.png', 700 + i, size=(36, 30))
  # Slow bodies keep the job running long enough to kill a worker mid-way.
  lines = [f'{http_server.base}/slow/0.15/kill{i % 12}.png?n={i}'
           for i in range(160)]
  lines.append(f'{http_server.base}/status/404')
  listing = tmp_path / f'{name}.txt'
  listing.write_text(''.join(l + '\n' for l in lines))
  out = tmp_path / name / 'result.txt'
  argv = [f'-Dmodel_path={model_path}', f'-Dinput_oss_file={listing}',
          f'-Doutput_oss_file={out}', '-Dmax_error_ratio=1',
          '-Dnum_worker=2', '-Dbatch_size=4', '-Dfetch_threads=2']
  return lines, out, argv


def _busy(out, workers):
  """The worker processes that hold chunks to do (their progress files
  say they are processing)."""
  found = set()
  for name in glob.glob(f'{out}.ev-resume/progress/*.json'):
    try:
      with open(name) as f:
        state = json.load(f)
    except (OSError, ValueError):
      continue
    if state.get('phase') == 'processing':
      found.add(state.get('pid'))
  return [p for p in workers if p in found]


def _run_killing_one_worker(argv, http_server, out):
  """Runs the job, SIGKILLs one of its two worker processes (one with work
  to do) once 30 slow images were served; returns (summary or None,
  exception or None)."""
  outcome = {}

  def job():
    try:
      outcome['summary'] = launcher.run(argv)
    except BaseException as err:  # pylint: disable=broad-except
      outcome['error'] = err

  http_server.hits.clear()
  runner = threading.Thread(target=job)
  runner.start()
  killed = None
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and runner.is_alive():
    workers = _sdk_workers()
    busy = _busy(out, workers)
    if len(workers) == 2 and busy and _slow_hits(http_server) >= 30:
      killed = busy[0]
      os.kill(killed, signal.SIGKILL)
      break
    time.sleep(0.2)
  runner.join(600)
  assert killed, 'the job ended before a worker could be killed'
  assert not runner.is_alive()
  return outcome.get('summary'), outcome.get('error')


def _slow_hits(http_server):
  with http_server.lock:
    return sum(n for p, n in http_server.hits.items()
               if p.startswith('/slow/0.15/kill'))


def _leftovers(folder):
  return [n for n in os.listdir(folder) if '.tmp-' in n or '.shards-' in n]


# The dead worker's gRPC streams end with errors in Beam's server threads.
_dead_worker_noise = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnhandledThreadExceptionWarning')


@_dead_worker_noise
def test_killed_worker_process_reruns_and_loses_nothing(tmp_path, model_dirs,
                                                        http_server):
  """SIGKILL one of two worker processes mid-run: the job restarts, the
  result has every line exactly once, nothing of the dead attempt is left."""
  lines, out, argv = _slow_job(tmp_path, http_server, model_dirs['uint8'],
                               'killed')
  summary, error = _run_killing_one_worker(argv, http_server, out)
  assert error is None, error
  assert summary['attempts'] == 2
  assert_each_line_once(out, lines, summary, ['not_found'])
  assert _slow_hits(http_server) > 160            # the rerun fetched again
  assert not _leftovers(out.parent)


@_dead_worker_noise
def test_failed_job_leaves_previous_result_untouched(tmp_path, model_dirs,
                                                     http_server):
  """Without restarts the job fails (exit 3 from the CLI); the result of an
  earlier run stays whole, and no partial file appears."""
  _, out, argv = _slow_job(tmp_path, http_server, model_dirs['uint8'],
                          'failed')
  out.parent.mkdir()
  out.write_bytes(b'previous result\n')
  summary, error = _run_killing_one_worker(argv + ['-Dmax_restarts=0'],
                                           http_server, out)
  assert summary is None and error is not None
  assert out.read_bytes() == b'previous result\n'
  # No partial file; the state a rerun continues from.
  assert sorted(os.listdir(out.parent)) == ['result.txt',
                                            'result.txt.ev-resume']
