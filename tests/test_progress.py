"""The live view's side channel (transforms/progress.py: every worker's file)
and the launcher's view of it (pipeline/status.py: plain lines or a bar)."""
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

from ev_predict.pipeline import status
from ev_predict.pipeline.status import Monitor
from ev_predict.transforms import progress
from ev_predict.transforms.progress import Reporter, Snapshot, read_all

W = 1_700_000_000.0   # the fake wall clock's origin


def write_worker(folder, worker, phase=None, counts=None, first_at=None):
  """A worker file as a Reporter writes it (the launcher's tests set its
  times exactly)."""
  os.makedirs(folder, exist_ok=True)
  state = {'worker': worker, 'host': 'h', 'pid': 1, 'phase': phase,
           'counts': counts or {}, 'first_at': first_at, 'updated_at': W}
  tmp = os.path.join(folder, f'.{worker}.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(state, f)
  os.replace(tmp, os.path.join(folder, f'{worker}.json'))


def wait_for(predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.005)


# -- the worker side ----------------------------------------------------------

def test_reporters_and_threads_sum_up(tmp_path):
  folder = str(tmp_path / 'progress')
  reps = [Reporter(folder, worker=f'w{i}') for i in range(3)]
  reps[0].phase('loading model')
  reps[1].phase('converting to OpenVINO')

  def work(rep, k):
    for i in range(5000):
      rep.add('ok' if i % 50 else 'not_found')
    rep.add('timeout', k)

  threads = [threading.Thread(target=work, args=(rep, k % 3))
             for k, rep in enumerate(reps * 4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for rep in reps:
    rep.close()
  snap = read_all(folder)
  # 12 threads x 5000 records; 100 not_found each; timeouts 4 x (0+1+2).
  assert snap.counts == {'ok': 12 * 4900, 'not_found': 12 * 100,
                         'timeout': 12}
  assert snap.done == 60_012 and snap.workers == 3
  assert snap.phases == {'w0': 'loading model', 'w1': 'converting to OpenVINO'}
  firsts = [json.loads((tmp_path / 'progress' / f'w{i}.json').read_text())
            ['first_at'] for i in range(3)]
  assert snap.first_at == min(firsts)
  state = json.loads((tmp_path / 'progress' / 'w2.json').read_text())
  assert sorted(state) == ['counts', 'first_at', 'host', 'phase', 'pid',
                           'updated_at', 'worker']
  assert state['counts'] == {'ok': 19_600, 'not_found': 400, 'timeout': 8}
  assert (state['pid'], state['phase']) == (os.getpid(), None)
  assert sorted(os.listdir(folder)) == ['w0.json', 'w1.json', 'w2.json']


def test_a_worker_id_and_its_file_name(tmp_path):
  rep = Reporter(str(tmp_path))
  host, pid, tag = rep.worker.rsplit('-', 2)
  assert (host, pid) == (rep.host, str(os.getpid()))
  assert re.fullmatch('[0-9a-f]{6}', tag)
  assert Reporter(str(tmp_path)).worker != rep.worker
  odd = Reporter(str(tmp_path), worker='../a b/c')
  odd.add('ok')
  odd.flush()
  assert os.listdir(tmp_path) == ['_a_b_c.json']
  assert read_all(str(tmp_path)).phases == {}
  assert json.loads((tmp_path / '_a_b_c.json').read_text())['worker'] == \
      '../a b/c'


def test_writes_wait_for_the_period_but_a_phase_does_not(tmp_path):
  folder = tmp_path / 'p'
  rep = Reporter(str(folder), period=3600, worker='w')
  rep.add('ok', 5)
  assert not folder.exists()   # within the period: nothing written
  rep.phase('processing')
  assert read_all(str(folder)).counts == {'ok': 5}
  rep.add('ok')
  assert read_all(str(folder)).done == 5
  rep.flush()
  assert read_all(str(folder)).done == 6
  mtime = os.stat(folder / 'w.json').st_mtime_ns
  time.sleep(0.01)
  rep.close()   # nothing new: not rewritten
  assert os.stat(folder / 'w.json').st_mtime_ns == mtime
  eager = Reporter(str(folder), period=0, worker='e')
  eager.add('decode')
  assert read_all(str(folder)).counts == {'ok': 6, 'decode': 1}


def test_a_reader_never_sees_half_a_file(tmp_path):
  folder = str(tmp_path / 'p')
  rep = Reporter(folder, period=0, worker='w')
  rep.add('ok')
  seen, stop = [], threading.Event()

  def read():
    while not stop.is_set():
      snap = read_all(folder)
      seen.append((snap.workers, snap.done))

  reader = threading.Thread(target=read)
  reader.start()
  for _ in range(500):
    rep.add('ok', 1000)   # each one rewrites the file, growing it
  stop.set()
  reader.join()
  assert len(seen) > 20
  assert all(workers == 1 for workers, _ in seen)
  assert [d for _, d in seen] == sorted(d for _, d in seen)


def test_partial_and_foreign_files_are_skipped(tmp_path):
  folder = tmp_path / 'p'
  assert read_all(str(folder)) == Snapshot()   # no folder yet
  write_worker(str(folder), 'good', 'processing', {'ok': 3, 'decode': 1}, W)
  bad = {
      'half.json': '{"worker": "half", "counts": {"ok": 1',
      'empty.json': '',
      'list.json': '[1, 2]',
      'noworker.json': '{"counts": {"ok": 1}}',
      'strcount.json': '{"worker": "s", "counts": {"ok": "9"}}',
      'negative.json': '{"worker": "n", "counts": {"ok": -4}}',
      'boolcount.json': '{"worker": "b", "counts": {"ok": true}}',
      'badphase.json': '{"worker": "p", "counts": {}, "phase": 3}',
      'badfirst.json': '{"worker": "f", "counts": {}, "first_at": "x"}',
      'binary.json': '\udcff',
      'notes.txt': '{"worker": "t", "counts": {"ok": 100}}',
      '.hidden.json': '{"worker": "h", "counts": {"ok": 100}}',
      'big.json': json.dumps({'worker': 'big', 'counts': {'ok': 1},
                              'pad': 'x' * (70 << 10)}),
  }
  for name, text in bad.items():
    (folder / name).write_bytes(text.encode('utf-8', 'surrogateescape'))
  (folder / 'dir.json').mkdir()
  assert read_all(str(folder)) == Snapshot(
      counts={'ok': 3, 'decode': 1}, done=4, phases={'good': 'processing'},
      first_at=W, workers=1)


def test_a_failed_write_never_raises(tmp_path, caplog):
  blocker = tmp_path / 'file'
  blocker.write_text('not a folder')
  rep = Reporter(str(blocker / 'progress'), period=0, worker='w')
  rep.phase('loading model')
  rep.add('ok')
  rep.close()
  warnings = [r for r in caplog.records if 'Could not write progress' in
              r.getMessage()]
  assert len(warnings) == 1   # once, not per record
  assert blocker.read_text() == 'not a folder'


def test_one_reporter_per_folder_and_process(tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  got = []
  threads = [threading.Thread(target=lambda: got.append(progress.reporter(a)))
             for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len({id(r) for r in got}) == 1
  assert progress.reporter(a) is got[0]
  assert progress.reporter(b) is not got[0]
  parent = got[0]
  parent.add('ok', 2)
  parent.flush()
  pid = os.fork()
  if pid == 0:   # a forked worker process is another worker
    code = 1
    try:
      child = progress.reporter(a)
      if child is not parent and child.pid == os.getpid():
        child.add('ok', 5)
        child.close()
        code = 0
    finally:
      os._exit(code)   # pylint: disable=protected-access
  _, code = os.waitpid(pid, 0)
  assert code == 0
  snap = read_all(a)
  assert (snap.workers, snap.counts) == (2, {'ok': 7})


_WORKER = textwrap.dedent('''
    import sys, threading
    from ev_predict.transforms import progress
    folder, n = sys.argv[1], int(sys.argv[2])
    progress.reporter(folder).phase('processing')

    def work(kind):
      rep = progress.reporter(folder)
      for i in range(n):
        rep.add('ok' if i % 100 else kind)

    threads = [threading.Thread(target=work, args=(k,))
               for k in ('decode', 'not_found')]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    print(progress.reporter(folder).worker)
    # No close(): the process's exit writes the last counts.
    ''')


def test_worker_processes_are_summed(tmp_path):
  folder = str(tmp_path / 'state' / 'progress')
  procs = [subprocess.Popen([sys.executable, '-c', _WORKER, folder, str(n)],
                            stdout=subprocess.PIPE, text=True)
           for n in (30_000, 20_000)]
  workers = []
  for proc in procs:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    workers.append(out.strip())
  snap = read_all(folder)
  assert snap.counts == {'ok': 99_000, 'decode': 500, 'not_found': 500}
  assert snap.done == 100_000 and snap.workers == 2
  assert snap.phases == {w: 'processing' for w in workers}
  assert len(set(workers)) == 2


def test_add_is_cheap(tmp_path):
  """Once per record on the bundle thread, writes included."""
  rep = Reporter(str(tmp_path / 'p'), period=0.05)
  n, best = 100_000, float('inf')
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(n):
      rep.add('ok')
    best = min(best, (time.perf_counter() - start) / n)
  assert read_all(str(tmp_path / 'p')).done > 0
  assert best < 5e-6, f'{best * 1e6:.2f} us per add()'


def test_clear_removes_only_worker_files(tmp_path):
  folder = tmp_path / 'p'
  write_worker(str(folder), 'old1', counts={'ok': 5})
  write_worker(str(folder), 'old2', counts={'ok': 6})
  (folder / 'notes.json').write_text('{"mine": true}')
  (folder / 'other.txt').write_text('x')
  assert progress.clear(str(folder)) == 2
  assert sorted(os.listdir(folder)) == ['notes.json', 'other.txt']
  assert progress.clear(str(tmp_path / 'none')) == 0


def test_on_oss(oss_env):
  server = oss_env
  folder = 'oss://out/jobs/j1/progress'
  a = Reporter(folder, period=3600, worker='w-a')
  b = Reporter(folder, period=3600, worker='w/b')
  a.phase('loading model')
  assert server.requests.count(op='PutObject') == 1   # a write is one PUT
  a.add('ok', 7)
  a.add('timeout')
  b.add('ok', 3)
  a.close()
  b.close()
  server.put('out', 'jobs/j1/progress/broken.json', b'{"worker": "x", "cou')
  server.put('out', 'jobs/j1/progress/notes.txt',
             b'{"worker": "t", "counts": {"ok": 100}}')
  server.put('out', 'jobs/j1/other/w.json',
             b'{"worker": "o", "counts": {"ok": 100}}')
  states = {k: json.loads(server.get('out', k)) for k in
            ('jobs/j1/progress/w-a.json', 'jobs/j1/progress/w_b.json')}
  assert states['jobs/j1/progress/w-a.json']['counts'] == \
      {'ok': 7, 'timeout': 1}
  assert server.object_info('out', 'jobs/j1/progress/w-a.json') is not None
  first = min(s['first_at'] for s in states.values())
  assert read_all(folder) == Snapshot(
      counts={'ok': 10, 'timeout': 1}, done=11,
      phases={'w-a': 'loading model'}, first_at=first, workers=2)
  assert read_all(folder + '/') == read_all(folder)
  assert progress.clear(folder) == 2
  assert [k for k in server.keys('out') if k.startswith('jobs/j1/')] == \
      ['jobs/j1/other/w.json', 'jobs/j1/progress/broken.json',
       'jobs/j1/progress/notes.txt']
  assert read_all('oss://out/jobs/none/progress') == Snapshot()


# -- the launcher side ---------------------------------------------------------

def test_what_a_line_says():
  assert status.format_duration(219.4) == '3m39s'
  assert status.format_duration(59.6) == '1m00s'
  assert status.format_duration(7) == '7s'
  assert status.format_duration(-3) == '0s'
  assert status.format_duration(3600 * 26 + 300) == '26h05m'
  assert status.format_rate(251.4) == '251'
  assert status.format_rate(12_345.6) == '12,346'
  assert status.format_rate(2.25) == '2.2'
  assert status.failures_text({'ok': 9}) is None
  assert status.failures_text({'ok': 9, 'timeout': 2, 'not_found': 10,
                               'decode': 2, 'fetch': 0}) == \
      'failed 14 (not_found 10, decode 2, timeout 2)'
  assert status.workers_phase({}) is None
  assert status.workers_phase({'a': 'loading model', 'b': 'converting',
                               'c': 'loading model'}) == \
      'loading model (2 workers), converting (1 worker)'


class FakeClock:
  def __init__(self):
    self.t = 0.0

  def clock(self):
    return self.t

  def wall(self):
    return W + self.t


@pytest.fixture
def gate(monkeypatch):
  """Holds the monitor's reads while a test changes files and clock
  together; gate.fail makes a read raise."""
  real, lock = status.read_all, threading.Lock()

  def read_all_gated(folder):
    with lock:
      if gate_state['fail']:
        raise OSError('listing failed')
      return real(folder)

  gate_state = {'fail': False, 'lock': lock}
  monkeypatch.setattr(status, 'read_all', read_all_gated)
  return gate_state


def test_plain_lines(tmp_path, gate):
  folder, out, fake = str(tmp_path / 'p'), io.StringIO(), FakeClock()

  def lines():
    return out.getvalue().splitlines()

  monitor = Monitor(folder, total=100_000, stream=out, tty=False,
                    interval=15, clock=fake.clock, wall=fake.wall, poll=0.005)
  with monitor:
    monitor.phase('reading file list')
    monitor.phase('starting workers')
    monitor.phase('starting workers')
    with gate['lock']:
      write_worker(folder, 'w1', 'loading model')
      write_worker(folder, 'w2', 'loading model')
    wait_for(lambda: len(lines()) == 3)
    with gate['lock']:
      fake.t = 15
    wait_for(lambda: len(lines()) == 4)
    with gate['lock']:
      fake.t = 20
      write_worker(folder, 'w1', 'processing',
                   {'ok': 19_990, 'not_found': 10}, first_at=W + 15)
      write_worker(folder, 'w2', 'processing',
                   {'ok': 24_998, 'timeout': 2}, first_at=W + 16)
    wait_for(lambda: len(lines()) == 5)
    with gate['lock']:
      fake.t = 195   # 180 s after the first record
    wait_for(lambda: len(lines()) == 6)
    assert monitor.snapshot().done == 45_000
    with gate['lock']:
      gate['fail'] = True
      fake.t = 210
    wait_for(lambda: len(lines()) == 7)   # the last state, 15 s older
    with gate['lock']:
      gate['fail'] = False
      write_worker(folder, 'w1', 'processing',
                   {'ok': 49_990, 'not_found': 10}, first_at=W + 15)
      fake.t = 215
    wait_for(lambda: monitor.snapshot().done == 75_000)
  # On exit, the state it ended in.
  assert lines() == [
      'ev-predict: reading file list',
      'ev-predict: starting workers',
      'ev-predict: loading model (2 workers)',
      'ev-predict: 0/100,000 lines (0.0%), loading model (2 workers)',
      'ev-predict: processing (2 workers)',
      'ev-predict: 45,000/100,000 lines (45.0%), 250 img/s, ETA 3m40s, '
      'failed 12 (not_found 10, timeout 2)',
      'ev-predict: 45,000/100,000 lines (45.0%), 231 img/s, ETA 3m58s, '
      'failed 12 (not_found 10, timeout 2)',
      'ev-predict: 75,000/100,000 lines (75.0%), 375 img/s, ETA 1m07s, '
      'failed 12 (not_found 10, timeout 2)',
  ]
  # Nothing after __exit__, whatever the workers still write.
  write_worker(folder, 'w3', 'loading model', {'ok': 5})
  fake.t = 400
  monitor.phase('committing')
  time.sleep(0.1)
  assert len(lines()) == 8


@pytest.mark.parametrize('resumed, line', [
    (40_000, 'ev-predict: 45,000/100,000 lines (45.0%), 100 img/s, ETA 9m10s'),
    (99_000, 'ev-predict: 100,000/100,000 lines (100.0%), 100 img/s, ETA 0s'),
])
def test_a_resumed_run(tmp_path, resumed, line):
  """Done counts the earlier runs' lines (never above the total); the rate
  only this run's, over its processing time (here as long as the monitor
  ran, though a worker's clock says it began before)."""
  folder, out, fake = str(tmp_path / 'p'), io.StringIO(), FakeClock()
  write_worker(folder, 'w1', 'processing', {'ok': 5_000}, first_at=W - 1000)
  with Monitor(folder, total=100_000, resumed=resumed, stream=out, tty=False,
               clock=fake.clock, wall=fake.wall, poll=3600):
    fake.t = 50
  assert out.getvalue().splitlines() == ['ev-predict: processing (1 worker)',
                                         line]


def test_nothing_done_prints_no_final_line(tmp_path):
  out = io.StringIO()
  with Monitor(str(tmp_path / 'p'), total=10, resumed=4, stream=out,
               tty=False, poll=3600) as monitor:
    monitor.phase('reading file list')
  assert out.getvalue() == 'ev-predict: reading file list\n'
  assert monitor.snapshot() == Snapshot()


def _screen(data: str):
  """What a terminal shows after data: its lines, the cursor's row and
  column, and whether the cursor is visible (the few sequences rich uses)."""
  rows, row, col, visible = [''], 0, 0, True
  i = 0
  while i < len(data):
    c = data[i]
    if c == '\x1b':
      m = re.match(r'\x1b\[(\??)([0-9;]*)([A-Za-z])', data[i:])
      assert m, repr(data[i:i + 10])
      private, args, final = m.groups()
      if private and args == '25':
        visible = final == 'h'
      elif final == 'K':
        rows[row] = '' if args == '2' else rows[row][:col]
      elif final == 'A':
        row -= int(args or 1)
      else:
        assert final == 'm', m.group(0)   # colours
      i += len(m.group(0))
      continue
    if c == '\r':
      col = 0
    elif c == '\n':
      row, col = row + 1, 0
      rows += [''] * (row + 1 - len(rows))
    else:
      line = rows[row].ljust(col)
      rows[row] = line[:col] + c + line[col + 1:]
      col += 1
    i += 1
  return rows, (row, col), visible


def test_a_bar_on_a_terminal(tmp_path, gate):
  folder, fake = str(tmp_path / 'p'), FakeClock()
  master, slave = pty.openpty()
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 100, 0, 0))
  stream = os.fdopen(slave, 'w', encoding='utf-8')
  got, lock = bytearray(), threading.Lock()

  def read():
    while True:
      try:
        data = os.read(master, 4096)
      except OSError:
        return
      if not data:
        return
      with lock:
        got.extend(data)

  def text():
    with lock:
      return got.decode('utf-8', 'replace')

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    monitor = Monitor(folder, total=100, stream=stream, clock=fake.clock,
                      wall=fake.wall, poll=0.005)
    assert monitor.tty   # found out from the stream
    with monitor:
      monitor.phase('reading file list')
      wait_for(lambda: '0/100 lines (0.0%), reading file list' in text())
      with gate['lock']:
        write_worker(folder, 'w', 'processing', {'ok': 40, 'decode': 10},
                     first_at=W)
        fake.t = 10
      wait_for(lambda: '50/100 lines (50.0%), 5.0 img/s, ETA 10s, failed 10'
               in text())
    wait_for(lambda: text().endswith('\x1b[?25h'))   # rich's last bytes
    done = text()
    write_worker(folder, 'w', 'processing', {'ok': 90, 'decode': 10},
                 first_at=W)
    monitor.phase('committing')
    time.sleep(0.1)
    assert text() == done   # nothing after __exit__
  finally:
    stream.close()
    os.close(master)
  assert done.startswith('\x1b[?25l')   # the cursor hidden while drawing
  rows, cursor, visible = _screen(done)
  assert rows[0] == ('ev-predict ' + '━' * 24 + ' 50/100 lines (50.0%), '
                     '5.0 img/s, ETA 10s, failed 10 (decode 10)')
  # Half the bar in the colour of done, half in the background's.
  last = done[done.rindex('\r\x1b[2K'):]
  assert re.search('\x1b\\[[0-9;]+m' + '━' * 12 + '\x1b\\[0m\x1b\\[[0-9;]+m'
                   + '━' * 12 + '\x1b\\[0m', last), repr(last)
  # The finished bar, then a fresh line: no half line, the cursor back.
  assert rows[1:] == [''] and cursor == (1, 0) and visible
  assert 'ev-predict:' not in done   # no plain line on a terminal
