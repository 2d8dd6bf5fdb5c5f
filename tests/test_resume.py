"""Resuming a job where it stopped (issue #12), end to end: real ev-predict
processes killed or interrupted mid-job over slow HTTP (a real nginx that
paces its answers), the same command run again, and its files compared byte
for byte with an uninterrupted run's.

The state folder (<result>.ev-resume/, transforms/state.py) is watched from
outside, as a user would: chunks/*.done are the committed chunks, each
naming its line count.
"""
import collections
import gzip
import http.server
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from ev_predict.pipeline import launcher
from tests.conftest import write_image
from tests.helpers import process_table, split_output_line

EV_PREDICT = os.path.join(os.path.dirname(sys.executable), 'ev-predict')
LINES = 300     # the paced list: 15 chunks of 20 lines (5 batches of 4)
PACE = 40       # nginx's requests per second: about 7.5 s of fetching
FETCH_THREADS = 4
IMAGES = 8
BOM = b'\xef\xbb\xbf'
# Which lines of the paced list fail, and how (every kind of line is there).
MISSING = {5, 42, 79, 116, 153, 190, 227, 264}
BROKEN = {7, 48, 89, 130, 171, 212, 253, 294}
# Lines that repeat an earlier one (line: the one it repeats): a repeat
# right after, one far back, one across the middle of the list.
DUPLICATES = {51: 50, 120: 3, 200: 3, 201: 140}


# ------------------------------------------------------------ servers


@pytest.fixture(scope='module')
def site(tmp_path_factory):
  """A real nginx whose /paced/ location answers PACE requests a second."""
  from tests.fakes.nginx import Nginx, available
  if not available():
    pytest.skip('nginx is not installed (apt-get install nginx)')
  root = tmp_path_factory.mktemp('www')
  for i in range(IMAGES):
    write_image(root / f'i{i}.png', 300 + i, size=(12 + i, 10))
  (root / 'broken.png').write_bytes(b'not an image at all')
  with Nginx(root, pace=PACE) as server:
    yield server


class _GateHandler(http.server.BaseHTTPRequestHandler):
  """/open/<file>: the file at once; /gate/<file>: once server.gate is set;
  /slow/<seconds>/<file>: after a pause. A missing file is a 404 (after the
  wait). Every request's path (with its query) is logged."""

  protocol_version = 'HTTP/1.1'

  def log_message(self, *args):
    pass

  def do_GET(self):
    srv = self.server
    path = urllib.parse.urlsplit(self.path).path
    with srv.lock:
      srv.requests.append(self.path)
    kind, _, name = path.lstrip('/').partition('/')
    if kind == 'gate':
      srv.gate.wait(90)
    elif kind == 'slow':
      delay, _, name = name.partition('/')
      time.sleep(float(delay))
    full = os.path.join(srv.root, name)
    status, body = 200, b''
    if kind not in ('open', 'gate', 'slow') or not os.path.isfile(full):
      status, body = 404, b'not found'
    else:
      with open(full, 'rb') as f:
        body = f.read()
    self.send_response(status)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)


class _QuietServer(http.server.ThreadingHTTPServer):

  def handle_error(self, request, client_address):
    pass   # a killed job resets its connections: expected here


@pytest.fixture(scope='module')
def gated(tmp_path_factory):
  """A local HTTP server whose /gate/ answers wait until the test opens the
  gate: a job stops exactly where the test wants it to."""
  root = tmp_path_factory.mktemp('gated')
  for i in range(IMAGES):
    write_image(root / f'g{i}.png', 500 + i, size=(14, 9 + i))
  server = _QuietServer(('127.0.0.1', 0), _GateHandler)
  server.daemon_threads = True
  server.root = str(root)
  server.requests = []
  server.lock = threading.Lock()
  server.gate = threading.Event()
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  server.base = f'http://127.0.0.1:{server.server_address[1]}'
  yield server
  server.gate.set()
  server.shutdown()


# ------------------------------------------------------------ the lists


def _paced_lines(base):
  lines = []
  for i in range(LINES):
    if i in DUPLICATES:
      lines.append(lines[DUPLICATES[i]])
    elif i in MISSING:
      lines.append(f'{base}/paced/missing.png?n={i}')
    elif i in BROKEN:
      lines.append(f'{base}/paced/broken.png?n={i}')
    else:
      lines.append(f'{base}/paced/i{i % IMAGES}.png?n={i}')
  return lines


def _raw_list(lines):
  """The list as a user's editor may leave it: a BOM, CRLF on some lines,
  blank and whitespace-only lines between, no newline after the last."""
  out = [BOM]
  for i, line in enumerate(lines):
    out.append(line.encode() + (b'\r\n' if i % 10 == 3 else b'\n'))
    if i % 23 == 11:
      out.append(b'\n' if i % 2 else b'  \t\r\n')
  raw = b''.join(out)
  return raw[:-1] if raw.endswith(b'\n') and not raw.endswith(b'\r\n') \
      else raw


@pytest.fixture(scope='module')
def paced(site, tmp_path_factory, model_dirs):
  """The paced list (plain and .gz) and an uninterrupted run of it: the
  bytes every interrupted-then-resumed run must end with."""
  root = tmp_path_factory.mktemp('paced')
  lines = _paced_lines(site.base)
  raw = _raw_list(lines)
  listing = root / 'list.txt'
  listing.write_bytes(raw)
  packed = root / 'list.txt.gz'
  packed.write_bytes(gzip.compress(raw))
  out = root / 'reference' / 'result.txt'
  started = time.monotonic()
  summary = launcher.run(_argv(model_dirs, listing, out))
  took = time.monotonic() - started
  reference = (out.read_bytes(), (root / 'reference' /
                                  'result.txt.errors').read_bytes())
  # The reference itself: every line once, in the order of the list.
  _assert_in_input_order(lines, *reference)
  assert summary['lines_read'] == LINES and summary['failed'] == 16
  assert summary['resumed_lines'] == 0 and summary['processed_lines'] == LINES
  return dict(lines=lines, list=listing, gz=packed, reference=reference,
              seconds=took)


def _assert_in_input_order(lines, results, errors):
  """results + errors hold each line once, each file in the list's order
  (a line that failed goes to errors)."""
  bad = {l for i, l in enumerate(lines) if i in MISSING | BROKEN}
  echo = lambda data: [split_output_line(l)[0].decode()
                       for l in data.splitlines()]
  assert echo(results) == [l for l in lines if l not in bad]
  assert echo(errors) == [l for l in lines if l in bad]


def _assert_same(results, errors, reference):
  """Byte for byte; where not, the first line that differs is named."""
  for name, got, want in (('results', results, reference[0]),
                          ('errors', errors, reference[1])):
    if got == want:
      continue
    keep = os.environ.get('EV_RESUME_KEEP')
    if keep:   # for a post-mortem
      os.makedirs(keep, exist_ok=True)
      stamp = f'{time.time():.3f}'
      for tag, data in (('got', got), ('want', want)):
        with open(os.path.join(keep, f'{stamp}-{name}-{tag}'), 'wb') as f:
          f.write(data)
    g, w = got.splitlines(True), want.splitlines(True)
    first = next((i for i, (a, b) in enumerate(zip(g, w)) if a != b),
                 min(len(g), len(w)))
    raise AssertionError(
        f'{name} differ at line {first} of {len(w)} (got {len(g)} lines):\n'
        f'got  {g[first:first + 2]!r}\nwant {w[first:first + 2]!r}')


def _argv(model_dirs, listing, out, *extra):
  """The job's command line; extra -Dkey=value replace the defaults."""
  params = {'model_path': model_dirs['uint8'], 'input_oss_file': listing,
            'output_oss_file': out, 'max_error_ratio': 1,
            'fetch_threads': FETCH_THREADS, 'backend': 'tensorflow',
            # The report's thumbnails would be fetches of their own: the
            # tests count every fetch.
            'report': 'false',
            # Chunks of 20 lines, a whole number of batches: the gated
            # tests' counts (40 of 60 committed) follow from it.
            'batch_size': 4}
  for arg in extra:
    key, _, value = arg[len('-D'):].partition('=')
    params[key] = value
  return [f'-D{k}={v}' for k, v in params.items()]


# ------------------------------------------------------------ processes


class _Job:
  """An ev-predict process whose output goes to files (a pipe left unread
  could block it)."""

  def __init__(self, argv, folder, name):
    self.stderr_path = os.path.join(folder, f'{name}.stderr')
    self._err = open(self.stderr_path, 'wb')  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen([EV_PREDICT] + argv,
                                 stdin=subprocess.DEVNULL,
                                 stdout=self._err, stderr=self._err)
    self.started = time.monotonic()

  @property
  def pid(self):
    return self.proc.pid

  def wait(self, timeout=120):
    try:
      self.proc.wait(timeout)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
        self.proc.wait()
      self._err.close()
    return self.proc.returncode

  def stderr(self):
    with open(self.stderr_path, 'rb') as f:
      return f.read().decode('utf-8', 'replace')

  def ours(self):
    """Its own lines (not Beam's or TensorFlow's)."""
    return [l for l in self.stderr().splitlines()
            if l.startswith('ev-predict:')]


def _run(argv, folder, name, timeout=150):
  job = _Job(argv, folder, name)
  code = job.wait(timeout)
  return code, job


def _wait(predicate, timeout, what, job=None):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    if job is not None and job.proc.poll() is not None:
      raise AssertionError(f'the job ended before {what}:\n' +
                           job.stderr()[-3000:])
    time.sleep(0.05)
  raise AssertionError(f'timed out waiting for {what}')


def _workers(root):
  """Live SDK worker processes below pid root."""
  table = process_table()
  below, frontier = set(), {root}
  while frontier:
    frontier = {p for p, (pp, _) in table.items()
                if pp in frontier and p not in below}
    below |= frontier
  return [p for p in below if b'sdk_worker_main' in table[p][1] and
          b'/bin/sh' not in table[p][1]]


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      return f.read().rsplit(b')', 1)[1].split()[0] != b'Z'
  except OSError:
    return False


# ------------------------------------------------------------ the state


def _markers_local(state):
  folder = os.path.join(state, 'chunks')
  try:
    names = [n for n in os.listdir(folder) if n.endswith('.done')]
  except FileNotFoundError:
    return []
  found = []
  for name in names:
    try:
      with open(os.path.join(folder, name), 'rb') as f:
        found.append(json.loads(f.read()))
    except (OSError, ValueError):
      continue   # a marker is renamed into place: this one was just removed
  return found


def _committed(markers):
  return sum(m['lines'] for m in markers)


def _plan_local(state):
  with open(os.path.join(state, 'plan.json'), 'rb') as f:
    return json.loads(f.read())


def _refetched(requests, lines):
  """Images fetched more often than the list names them."""
  wanted = collections.Counter(urllib.parse.urlsplit(l).path + '?' +
                               urllib.parse.urlsplit(l).query for l in lines)
  got = collections.Counter(requests)
  missing = [p for p, n in wanted.items() if got[p] < n]
  assert not missing, missing[:5]
  return sum(max(0, got[p] - wanted[p]) for p in got)


def _bound(plan, workers, total):
  """What an interruption may fetch again: the lines of the chunks in
  flight (one being read and one being finished per worker, plus one) and
  the fetches in flight; never less than 1 % of the list."""
  in_flight = plan['chunk_lines'] * (workers + 1) + \
      2 * FETCH_THREADS * workers
  return max(-(-total // 100), in_flight)


def _report(name, **facts):
  # Measured figures for the report (pytest -s shows them).
  sys.stderr.write(f'\n[{name}] ' + ', '.join(
      f'{k}={v}' for k, v in facts.items()) + '\n')


# ------------------------------------------------------------ 1. SIGKILL


def _kill_at_half(job, committed, total, sig=signal.SIGKILL):
  """Waits until committed() covers about half of the list, sends sig."""
  _wait(lambda: committed() >= total // 2, 150,
        'half of the list to be committed', job)
  workers = _workers(job.pid)
  job.proc.send_signal(sig)
  return workers


@pytest.mark.parametrize('workers,which', [(1, 'list'), (2, 'gz')])
def test_sigkill_mid_job_then_rerun_continues(tmp_path, site, paced,
                                              model_dirs, workers, which):
  """kill -9 of the launcher at ~50 %: its worker processes exit on their
  own; the same command again fetches only what was not committed and
  ends with the uninterrupted run's bytes (the .gz list: the same lines)."""
  out = tmp_path / 'out' / 'result.txt'
  state = str(out) + '.ev-resume'
  argv = _argv(model_dirs, paced[which], out, f'-Dnum_worker={workers}')
  before = len(site.requests())
  started = time.monotonic()
  first = _Job(argv, tmp_path, 'first')
  pids = _kill_at_half(first, lambda: _committed(_markers_local(state)),
                       LINES)
  assert first.wait(30) == -signal.SIGKILL
  assert len(pids) == (workers if workers > 1 else 0), pids
  # A SIGKILLed launcher cannot stop its workers: they watch it and go.
  _wait(lambda: not any(map(_alive, pids)), 10, 'the workers to exit')
  killed_at = time.monotonic() - started
  markers = _markers_local(state)
  committed = _committed(markers)
  assert LINES // 2 <= committed < LINES
  plan = _plan_local(state)
  assert not out.exists()   # nothing is committed to the output before the end

  code, second = _run(argv, tmp_path, 'second')
  assert code == 0, second.stderr()[-3000:]
  took = time.monotonic() - started
  _assert_same(out.read_bytes(),
               (out.parent / 'result.txt.errors').read_bytes(),
               paced['reference'])
  summary = json.loads((out.parent / 'result.txt.summary.json').read_bytes())
  assert summary['resumed_lines'] == committed
  assert summary['processed_lines'] == LINES - committed
  assert summary['accounting_ok'] and summary['lines_read'] == LINES
  assert f'ev-predict: resuming: {committed} of {LINES} lines were ' \
      f'committed by an earlier run; processing the other ' \
      f'{LINES - committed}' in second.stderr()
  assert any(f'{LINES} lines ({committed} resumed, {LINES - committed} '
             'processed now)' in l for l in second.ours())
  assert not os.path.exists(state)
  assert sorted(os.listdir(out.parent)) == [
      'result.txt', 'result.txt.errors', 'result.txt.summary.json']
  refetched = _refetched(site.requests()[before:], paced['lines'])
  bound = _bound(plan, workers, LINES)
  _report(f'sigkill workers={workers} {which}', committed_at_kill=committed,
          refetched=refetched, bound=bound, chunk_lines=plan['chunk_lines'],
          killed_after_s=round(killed_at, 1), total_s=round(took, 1),
          uninterrupted_s=round(paced['seconds'], 1))
  assert refetched <= bound
  # A repeated line is two records, whichever run wrote each.
  results = out.read_bytes().splitlines()
  for line, repeats in collections.Counter(paced['lines']).items():
    if repeats > 1:
      assert sum(split_output_line(l)[0].decode() == line
                 for l in results) == repeats, line


# ------------------------------------------------------------ 2. on OSS


def _markers_oss(server, key):
  prefix = key + '.ev-resume/chunks/'
  found = []
  for name in server.keys('out'):
    if name.startswith(prefix) and name.endswith('.done'):
      data = server.get('out', name)
      if data is not None:
        found.append(json.loads(data))
  return found


def test_sigkill_with_output_on_oss_then_rerun_continues(tmp_path, site,
                                                         paced, model_dirs,
                                                         oss_env):
  """The same on the OSS double: the state folder lives beside the result
  on oss://, the rerun continues from it and leaves only the three files."""
  server = oss_env
  key = 'resume/result.txt'
  argv = _argv(model_dirs, paced['list'], f'oss://out/{key}',
               f'-DossHost={server.endpoint}')
  before = len(site.requests())
  started = time.monotonic()
  first = _Job(argv, tmp_path, 'first')
  _kill_at_half(first, lambda: _committed(_markers_oss(server, key)), LINES)
  assert first.wait(30) == -signal.SIGKILL
  committed = _committed(_markers_oss(server, key))
  assert LINES // 2 <= committed < LINES
  plan = json.loads(server.get('out', key + '.ev-resume/plan.json'))
  assert server.get('out', key) is None

  code, second = _run(argv, tmp_path, 'second')
  assert code == 0, second.stderr()[-3000:]
  _assert_same(server.get('out', key), server.get('out', key + '.errors'),
               paced['reference'])
  summary = json.loads(server.get('out', key + '.summary.json'))
  assert (summary['resumed_lines'], summary['processed_lines']) == \
      (committed, LINES - committed)
  assert [k for k in server.keys('out') if k.startswith('resume/')] == [
      key, key + '.errors', key + '.summary.json']
  assert not server.uploads('out')
  refetched = _refetched(site.requests()[before:], paced['lines'])
  bound = _bound(plan, 1, LINES)
  _report('sigkill oss', committed_at_kill=committed, refetched=refetched,
          bound=bound, total_s=round(time.monotonic() - started, 1))
  assert refetched <= bound


# ------------------------------------------------------------ 3. Ctrl-C


def test_ctrl_c_exits_130_and_rerun_completes(tmp_path, site, paced,
                                              model_dirs):
  out = tmp_path / 'out' / 'result.txt'
  state = str(out) + '.ev-resume'
  argv = _argv(model_dirs, paced['list'], out)
  first = _Job(argv, tmp_path, 'first')
  _kill_at_half(first, lambda: _committed(_markers_local(state)), LINES,
                sig=signal.SIGINT)
  assert first.wait(30) == 130, first.stderr()[-3000:]
  assert 'Traceback' not in first.stderr()
  committed = _committed(_markers_local(state))
  said = [l for l in first.ours() if 'interrupted' in l]
  assert len(said) == 1, first.stderr()[-3000:]
  prefix = ('ev-predict: interrupted by SIGINT; earlier output files left as '
            'they were; rerun the same command to continue (')
  assert said[0].startswith(prefix), said
  counted = int(said[0][len(prefix):].split()[0])
  assert said[0].endswith(f' of {LINES} lines are committed) (-Dresume=false '
                          'starts over)'), said
  # Counted while the worker threads still ran: one more chunk may be in.
  assert LINES // 2 <= counted <= committed < LINES
  assert not out.exists()

  # The rerun in this process (the command's own run(); the subprocess
  # reruns are the SIGKILL tests').
  summary = launcher.run(argv)
  _assert_same(out.read_bytes(),
               (out.parent / 'result.txt.errors').read_bytes(),
               paced['reference'])
  assert summary['resumed_lines'] == committed
  assert summary['processed_lines'] == LINES - committed
  assert not os.path.exists(state)


# ------------------------------------------------------------ 4. the key


def _gated_list(server, path, lines=60, gated_from=50):
  """lines images, those from gated_from on behind the gate. A few lines
  pass before the gate: they push the chunk before them through the stages
  (a stage passes a record on when the next one arrives)."""
  urls = [f'{server.base}/{"gate" if i >= gated_from else "open"}/'
          f'g{i % IMAGES}.png?n={i}' for i in range(lines)]
  if lines > 7:
    urls[7] = f'{server.base}/open/missing.png?n=7'
  path.write_text(''.join(u + '\n' for u in urls))
  return urls


def _stopped_at_gate(server, tmp_path, model_dirs, listing, out, committed,
                     *extra):
  """Runs the job until `committed` lines are in and the next chunk waits
  at the gate, then kill -9: a state folder to resume from."""
  server.gate.clear()
  state = str(out) + '.ev-resume'
  job = _Job(_argv(model_dirs, listing, out, *extra), tmp_path, 'stopped')
  _wait(lambda: _committed(_markers_local(state)) >= committed, 150,
        f'{committed} lines to be committed', job)
  job.proc.send_signal(signal.SIGKILL)
  assert job.wait(30) == -signal.SIGKILL
  assert _committed(_markers_local(state)) == committed
  return state


def _hits(server, urls):
  wanted = {urllib.parse.urlsplit(u).path + '?' + urllib.parse.urlsplit(u).query
            for u in urls}
  with server.lock:
    return sum(1 for r in server.requests if r in wanted)


def test_what_the_key_holds(tmp_path, gated, model_dirs, caplog):
  """Killed with 40 of 60 lines committed, the same state (copied beside
  four outputs) is resumed or dropped by what changed: a parameter that
  cannot change a line (-Dfetch_threads) resumes; -Dresume=false, an
  output-affecting parameter (-Dbackend) and an appended line start fresh,
  each saying why in one line."""
  listing = tmp_path / 'list.txt'
  urls = _gated_list(gated, listing)
  state = _stopped_at_gate(gated, tmp_path, model_dirs, listing,
                           tmp_path / 'a' / 'result.txt', 40)
  for name in 'bcd':
    (tmp_path / name).mkdir()
    shutil.copytree(state, tmp_path / name / 'result.txt.ev-resume')
  gated.gate.set()
  reference = launcher.run(_argv(model_dirs, listing,
                                 tmp_path / 'ref' / 'result.txt'))
  assert reference['resumed_lines'] == 0

  def files(name):
    return ((tmp_path / name / 'result.txt').read_bytes(),
            (tmp_path / name / 'result.txt.errors').read_bytes())

  def run(name, *extra):
    caplog.clear()
    hits = _hits(gated, urls[:40])
    summary = launcher.run(_argv(model_dirs, listing,
                                 tmp_path / name / 'result.txt', *extra))
    said = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(('ev-predict: starting fresh',
                                          'ev-predict: resuming'))]
    assert not (tmp_path / name / 'result.txt.ev-resume').exists()
    return summary, said, _hits(gated, urls[:40]) - hits

  caplog.set_level(logging.WARNING, logger='ev_predict')
  summary, said, refetched = run('b', '-Dfetch_threads=2')
  assert said == ['ev-predict: resuming: 40 of 60 lines were committed by '
                  'an earlier run; processing the other 20']
  assert (summary['resumed_lines'], refetched) == (40, 0)
  assert files('b') == files('ref')

  summary, said, refetched = run('c', '-Dresume=false')
  assert said == ['ev-predict: starting fresh: -Dresume=false']
  assert (summary['resumed_lines'], refetched) == (0, 40)
  assert files('c') == files('ref')

  summary, said, refetched = run('d', '-Dbackend=openvino')
  assert said == ['ev-predict: starting fresh: -Dbackend changed '
                  '(tensorflow -> openvino)']
  assert (summary['resumed_lines'], refetched) == (0, 40)
  assert summary['backends'] == {'openvino-f32': 59}
  _assert_in_order(urls, *files('d'), bad={7})

  # One more line: the list is another list (a subprocess: the line is on
  # the command's stderr).
  size = listing.stat().st_size
  with open(listing, 'a') as f:
    f.write(f'{gated.base}/open/g1.png?n=60\n')
  urls.append(f'{gated.base}/open/g1.png?n=60')
  hits = _hits(gated, urls[:40])
  code, job = _run(_argv(model_dirs, listing, tmp_path / 'a' / 'result.txt'),
                   tmp_path, 'appended')
  assert code == 0, job.stderr()[-3000:]
  fresh = [l for l in job.stderr().splitlines() if 'starting fresh' in l]
  assert len(fresh) == 1 and fresh[0].endswith(
      f'ev-predict: starting fresh: the file list changed (size {size} -> '
      f'{listing.stat().st_size} bytes)'), fresh
  assert _hits(gated, urls[:40]) - hits == 40
  _assert_in_order(urls, *files('a'), bad={7})
  assert not (tmp_path / 'a' / 'result.txt.ev-resume').exists()


def test_an_edited_label_map_starts_fresh(tmp_path, gated, model_dirs,
                                          caplog):
  """The label map (or a threshold file) keeps its name but not its
  content: resuming would mix old names and new in one file."""
  listing = tmp_path / 'list.txt'
  urls = _gated_list(gated, listing)
  labels = tmp_path / 'labels.txt'
  labels.write_text('cat\ndog\nfish\nbird\n')
  out = tmp_path / 'a' / 'result.txt'
  _stopped_at_gate(gated, tmp_path, model_dirs, listing, out, 40,
                   f'-Dlabel_map_path={labels}')
  gated.gate.set()
  labels.write_text('Katze\nHund\nFisch\nVogel\n')
  caplog.set_level(logging.WARNING, logger='ev_predict')
  summary = launcher.run(_argv(model_dirs, listing, out,
                               f'-Dlabel_map_path={labels}'))
  said = [r.getMessage() for r in caplog.records
          if r.getMessage().startswith(('ev-predict: starting fresh',
                                        'ev-predict: resuming'))]
  assert said == ["ev-predict: starting fresh: the class names changed "
                  "(-Dlabel_map_path, the model's labels.txt or "
                  "-Dthreshold_file)"]
  assert summary['resumed_lines'] == 0
  names = {split_output_line(l)[1]['class_name']
           for l in out.read_bytes().splitlines()}
  assert names <= {'Katze', 'Hund', 'Fisch', 'Vogel'}, names
  _assert_in_order(urls, out.read_bytes(),
                   (out.parent / 'result.txt.errors').read_bytes(), bad={7})


def _assert_in_order(urls, results, errors, bad):
  echo = lambda data: [split_output_line(l)[0].decode()
                       for l in data.splitlines()]
  assert echo(results) == [u for i, u in enumerate(urls) if i not in bad]
  assert echo(errors) == [u for i, u in enumerate(urls) if i in bad]


# ------------------------------------------------------------ 6. safety


def test_a_state_path_that_is_not_ours_is_refused(tmp_path, gated,
                                                  model_dirs, capsys):
  """<result>.ev-resume as a regular file, a folder holding a file
  ev-predict never writes, an empty folder or a symbolic link: exit 2,
  every byte left as it was."""
  listing = tmp_path / 'list.txt'
  _gated_list(gated, listing, lines=3, gated_from=3)
  out = tmp_path / 'o' / 'result.txt'
  out.parent.mkdir()
  out.write_bytes(b'an older result\n')
  state = tmp_path / 'o' / 'result.txt.ev-resume'
  state.write_bytes(b'my notes\n')
  assert launcher.launch(_argv(model_dirs, listing, out)) == 2
  err = capsys.readouterr().err
  assert f'ev-predict: error: {state} exists and is not a folder of ' \
      'ev-predict; move it away or give another output' in err
  assert state.read_bytes() == b'my notes\n'
  assert sorted(os.listdir(out.parent)) == ['result.txt', 'result.txt.ev-resume']
  assert out.read_bytes() == b'an older result\n'

  state.unlink()
  (state / 'chunks').mkdir(parents=True)
  manifest = b'{"format": "ev-predict-resume/1", "key": {}}'
  (state / 'manifest.json').write_bytes(manifest)
  (state / 'chunks' / 'keep-me.txt').write_bytes(b'mine\n')
  assert launcher.launch(_argv(model_dirs, listing, out)) == 2
  err = capsys.readouterr().err
  assert f"it holds {os.path.join('chunks', 'keep-me.txt')}" in err
  assert sorted(str(p.relative_to(state)) for p in state.rglob('*')) == [
      'chunks', 'chunks/keep-me.txt', 'manifest.json']
  assert (state / 'manifest.json').read_bytes() == manifest
  assert out.read_bytes() == b'an older result\n'

  # An empty folder of the user's, and a link (to an empty folder outside):
  # refused, kept, nothing written through the link.
  shutil.rmtree(state)
  state.mkdir()
  assert launcher.launch(_argv(model_dirs, listing, out)) == 2
  assert f'{state} is an empty folder ev-predict did not make' in \
      capsys.readouterr().err
  assert state.is_dir() and not os.listdir(state)
  state.rmdir()
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  state.symlink_to(elsewhere)
  assert launcher.launch(_argv(model_dirs, listing, out)) == 2
  assert f'{state} is a symbolic link' in capsys.readouterr().err
  assert state.is_symlink() and not os.listdir(elsewhere)
  assert out.read_bytes() == b'an older result\n'


def test_a_second_run_on_the_same_output_is_refused(tmp_path, gated,
                                                    model_dirs, capsys):
  """While a run waits at the gate, another launch with its output is
  refused (exit 2) and touches nothing; the first then ends as usual."""
  listing = tmp_path / 'list.txt'
  urls = _gated_list(gated, listing, lines=40, gated_from=30)
  out = tmp_path / 'o' / 'result.txt'
  state = str(out) + '.ev-resume'
  gated.gate.clear()
  argv = _argv(model_dirs, listing, out, '-Dfetch_timeout=120')
  first = _Job(argv, tmp_path, 'first')
  try:
    _wait(lambda: _committed(_markers_local(state)) >= 20, 150,
          'the first chunk to be committed', first)
    before = {p: open(os.path.join(state, p), 'rb').read()
              for p in ('manifest.json', 'plan.json')}
    assert launcher.launch(_argv(model_dirs, listing, out)) == 2
    err = capsys.readouterr().err
    assert (f'ev-predict: error: another ev-predict run (pid {first.pid} on '
            f'{os.uname().nodename}) is writing this output; wait for it to '
            'end or stop it') in err, err
    assert before == {p: open(os.path.join(state, p), 'rb').read()
                      for p in before}
  finally:
    gated.gate.set()
  assert first.wait(120) == 0, first.stderr()[-3000:]
  _assert_in_order(urls, out.read_bytes(),
                   (out.parent / 'result.txt.errors').read_bytes(), bad={7})
  assert not os.path.exists(state)


# ------------------------------------------------------------ 7. order


def test_results_in_input_order_with_one_and_two_workers(tmp_path, gated,
                                                         model_dirs):
  """Slow images early, a slow 404 before a fast one and a line that
  fails at once: each file in the list's order, and the same bytes from
  one worker and from two."""
  urls = [f'{gated.base}/open/g{i % IMAGES}.png?n={i}' for i in range(64)]
  for i in (0, 2, 3, 21, 45):
    urls[i] = f'{gated.base}/slow/1.5/g{i % IMAGES}.png?n={i}'
  urls[1] = f'{gated.base}/slow/1.2/missing.png?n=1'
  urls[12] = f'{gated.base}/open/missing.png?n=12'
  urls[10] = '{"no": "url"}'    # bad_line: fails before any fetch
  listing = tmp_path / 'list.txt'
  listing.write_text(''.join(u + '\n' for u in urls))
  outputs = []
  for workers in (1, 2):
    out = tmp_path / f'w{workers}' / 'result.txt'
    summary = launcher.run(_argv(model_dirs, listing, out,
                                 f'-Dnum_worker={workers}'))
    assert summary['workers'] == workers and summary['accounting_ok']
    outputs.append((out.read_bytes(),
                    (out.parent / 'result.txt.errors').read_bytes()))
    _assert_in_order(urls, *outputs[-1], bad={1, 10, 12})
  assert outputs[0] == outputs[1]


# ------------------------------------------------------------ 7. tables


def _table_argv(model_dirs, table, out, *extra):
  """A table job's command line: the list's, its list and output swapped
  for the table's."""
  return [a for a in _argv(model_dirs, 'unused', 'unused')
          if not a.startswith(('-Dinput_oss_file=', '-Doutput_oss_file='))] + [
              f'-Dinput_table={table}', f'-Doutput_table={out}',
              '-Dimage_col=url', *extra]


def test_a_table_job_resumes_and_knows_its_table(tmp_path, gated,
                                                 model_dirs, caplog):
  """A table job killed (kill -9) with 40 of 60 rows committed: the same
  command resumes, fetching none of those 40 again, and writes the tables
  an uninterrupted run writes; another -Dreserved_columns resumes too (it
  changes no result, only what the tables carry); a rewritten table starts
  fresh, saying why."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  urls = _gated_list(gated, tmp_path / 'unused.txt')
  table = tmp_path / 'in.parquet'
  pq.write_table(pa.table({'key': pa.array(range(60), pa.int64()),
                           'note': [f'n{i}' for i in range(60)],
                           'url': urls}), table, row_group_size=16)
  out = tmp_path / 'a' / 'out.parquet'
  state = str(out) + '.ev-resume'
  gated.gate.clear()
  job = _Job(_table_argv(model_dirs, table, out, '-Dreserved_columns=key'),
             tmp_path, 'stopped')
  _wait(lambda: _committed(_markers_local(state)) >= 40, 150,
        '40 rows to be committed', job)
  job.proc.send_signal(signal.SIGKILL)
  assert job.wait(30) == -signal.SIGKILL
  assert _committed(_markers_local(state)) == 40
  assert os.path.exists(os.path.join(state, 'table', 'list.jsonl'))
  for folder in 'bc':
    shutil.copytree(state, tmp_path / folder / 'out.parquet.ev-resume')
  gated.gate.set()
  reference = tmp_path / 'ref' / 'out.parquet'
  launcher.run(_table_argv(model_dirs, table, reference,
                           '-Dreserved_columns=key'))

  def run(folder, *extra):
    caplog.clear()
    hits = _hits(gated, urls[:40])
    summary = launcher.run(_table_argv(model_dirs, table,
                                       tmp_path / folder / 'out.parquet',
                                       *extra))
    said = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(('ev-predict: starting fresh',
                                          'ev-predict: resuming'))]
    assert sorted(os.listdir(tmp_path / folder)) == [
        'out.errors.parquet', 'out.parquet', 'out.parquet.summary.json']
    return summary, said, _hits(gated, urls[:40]) - hits

  caplog.set_level(logging.WARNING, logger='ev_predict')
  summary, said, refetched = run('a', '-Dreserved_columns=key')
  assert said == ['ev-predict: resuming: 40 of 60 lines were committed by '
                  'an earlier run; processing the other 20']
  assert (summary['resumed_lines'], refetched) == (40, 0)
  for name in ('out.parquet', 'out.errors.parquet'):
    assert pq.read_table(tmp_path / 'a' / name).equals(
        pq.read_table(reference.parent / name)), name
  ok = pq.read_table(reference).to_pylist()
  assert [r['key'] for r in ok] == [i for i in range(60) if i != 7]
  assert pq.read_table(reference.parent / 'out.errors.parquet').to_pylist() \
      == [{'key': 7, 'error': 'not_found',
           'message': f'HTTP 404 for {urls[7]}'}]

  summary, said, refetched = run('b', '-Dreserved_columns=note,key')
  assert (summary['resumed_lines'], refetched) == (40, 0)
  got = pq.read_table(tmp_path / 'b' / 'out.parquet')
  assert got.schema.names == ['note', 'key', 'result']
  assert got.column('result').to_pylist() == [r['result'] for r in ok]

  # The table rewritten (the same rows): another table, a fresh start.
  os.utime(table, (time.time() + 5, time.time() + 5))
  summary, said, refetched = run('c', '-Dreserved_columns=key')
  assert said == ['ev-predict: starting fresh: the input table changed '
                  '(its files, sizes or times)']
  assert (summary['resumed_lines'], refetched) == (0, 40)
  assert pq.read_table(tmp_path / 'c' / 'out.parquet').equals(
      pq.read_table(reference))
