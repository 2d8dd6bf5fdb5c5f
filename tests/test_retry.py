"""`ev-predict retry OUTPUT` end to end on DirectRunner: a job whose images
are served by a real HTTP server that answers 503 on the first run and 200
later (and by nginx, for images that appear after the job), then the retry;
its result file equals an uninterrupted good run's byte for byte, its error
file holds only what is still failing, and everything it refuses leaves the
job's files as they were."""
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.parse

import pytest

from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line
from ev_predict.pipeline import cli, launcher

# One backend, so that two runs give the same bytes ('auto' may choose per
# run).
_FIXED = {'backend': 'tensorflow', 'max_error_ratio': '1'}


class _Handler(http.server.BaseHTTPRequestHandler):
  """/img/<name>: 503 while name is in server.down, else the file."""

  def log_message(self, *args):
    pass

  def do_GET(self):
    srv = self.server
    name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
    name = name[len('/img/'):]
    with srv.lock:
      srv.hits[name] = srv.hits.get(name, 0) + 1
      down = name in srv.down
    full = os.path.join(srv.root, name)
    if down:
      status, body = 503, b'busy'
    elif os.path.isfile(full):
      with open(full, 'rb') as f:
        status, body = 200, f.read()
    else:
      status, body = 404, b'not found'
    self.send_response(status)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)


@pytest.fixture
def flaky(tmp_path):
  """A server whose images in .down answer 503 until taken out of it."""
  root = tmp_path / 'served'
  root.mkdir()
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  server.daemon_threads = True
  server.root, server.down, server.hits = str(root), set(), {}
  server.lock = threading.Lock()
  threading.Thread(target=server.serve_forever, daemon=True).start()
  server.base = f'http://127.0.0.1:{server.server_address[1]}/img'
  yield server
  server.shutdown()
  server.server_close()


def _job(tmp_path, name, lines, model, **params):
  """Runs a job in-process over lines; returns its result path."""
  listing = tmp_path / f'{name}.txt'
  listing.write_bytes(b''.join(l.encode() + b'\n' for l in lines))
  out = tmp_path / name / 'result.txt'
  argv = [f'-Dmodel_path={model}', f'-Dinput_oss_file={listing}',
          f'-Doutput_oss_file={out}']
  argv += [f'-D{k}={v}' for k, v in {**_FIXED, **params}.items()]
  launcher.run(argv)
  return str(out)


def _files(out):
  """{name: bytes} of the job's three files."""
  found = {}
  for path in (out, out + '.errors', out + '.summary.json'):
    with open(path, 'rb') as f:
      found[os.path.basename(path)] = f.read()
  return found


def _kinds(out):
  return [split_output_line(l)[1]['error']
          for l in read_lines(out + '.errors')]


def _summary(out):
  with open(out + '.summary.json', encoding='utf-8') as f:
    return json.load(f)


def _retry(capsys, out, *args):
  capsys.readouterr()
  code = cli.main(['retry', out, *args])
  return code, capsys.readouterr().err


def _nothing_left(out):
  folder = os.path.dirname(out)
  assert not os.path.exists(out + '.retry')
  assert not [n for n in os.listdir(folder)
              if '.tmp-' in n or '.shards-' in n or '.bak-' in n]


def _same_but_last_bits(got: bytes, want: bytes, retried):
  got_lines, want_lines = got.splitlines(), want.splitlines()
  assert len(got_lines) == len(want_lines)
  for g, w in zip(got_lines, want_lines):
    (g_line, g_json), (w_line, w_json) = (split_output_line(g),
                                          split_output_line(w))
    assert g_line == w_line
    if g_line.decode() not in retried:
      assert g == w
      continue
    g_out, w_out = g_json, w_json
    assert (g_out['class'], g_out['class_name']) == (w_out['class'],
                                                     w_out['class_name'])
    assert list(g_out['class_probs']) == list(w_out['class_probs'])
    for name, p in w_out['class_probs'].items():
      assert g_out['class_probs'][name] == pytest.approx(p, rel=1e-5,
                                                         abs=1e-7)


def _dead_marker(out):
  """A retry folder left by a retry whose launcher is gone."""
  proc = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  os.makedirs(out + '.retry')
  with open(out + '.retry/retry.json', 'w', encoding='utf-8') as f:
    json.dump({'tool': 'ev-predict retry', 'output': out,
               'host': os.uname().nodename, 'boot_id': '', 'pid':
               int(proc.stdout), 'start': 1}, f)
  with open(out + '.retry/list.txt', 'wb') as f:
    f.write(b'stale\n')


def test_retry_recovers_transient_failures_in_place(tmp_path, model_dirs,
                                                    flaky, nginx, capsys):
  model = model_dirs['uint8']
  for i in range(6):
    write_image(f'{flaky.root}/{i}.png', 200 + i)
  not_image = tmp_path / 'text.jpg'
  not_image.write_text('not an image')
  down = ['1.png', '3.png', '5.png']
  lines = [f'{flaky.base}/0.png', f'{flaky.base}/1.png',
           f'{nginx.base}/status/404', f'{flaky.base}/2.png',
           f'{flaky.base}/3.png', str(not_image),
           f'{flaky.base}/1.png',     # a duplicate of a failing line
           f'{flaky.base}/4.png', f'{flaky.base}/5.png']
  flaky.down.update(down)
  # No report: its thumbnails are fetches of their own, and the hits below
  # count the job's and the retry's.
  out = _job(tmp_path, 'job', lines, model, fetch_retries=0, report='false')
  assert sorted(_kinds(out)) == ['decode', 'fetch', 'fetch', 'fetch',
                                 'fetch', 'not_found']
  job_summary = _summary(out)
  # A retry that died left its folder: this one takes it over.
  _dead_marker(out)

  flaky.down.clear()
  code, err = _retry(capsys, out)
  assert code == 0, err
  assert 'retried 4 line(s) (timeout, fetch): 4 recovered, 0 failed again' \
      in err
  assert {n: flaky.hits[n] for n in down} == {'1.png': 4, '3.png': 2,
                                              '5.png': 2}
  # What a job that never failed writes: the same lines in the same order,
  # byte for byte where a line was not retried. A recovered line was
  # classified in another batch row than the reference gave it, and the CPU
  # kernels treat rows of a tile and of its remainder differently: its
  # probabilities may differ in the last bits, its class never.
  reference = _job(tmp_path, 'reference', lines, model, fetch_retries=0)
  got, want = _files(out), _files(reference)
  _same_but_last_bits(got['result.txt'], want['result.txt'],
                      retried={l for l in lines
                               if l.rsplit('/', 1)[-1] in down})
  assert got['result.txt.errors'] == want['result.txt.errors']
  assert _kinds(out) == ['not_found', 'decode']
  summary = json.loads(got['result.txt.summary.json'])
  assert {k: summary[k] for k in (
      'lines_read', 'records', 'succeeded', 'failed', 'failed_by_kind',
      'accounting_ok', 'result_lines', 'error_lines', 'retried', 'recovered',
      'retry_errors')} == {
          'lines_read': 9, 'records': 9, 'succeeded': 7, 'failed': 2,
          'failed_by_kind': {'decode': 1, 'not_found': 1},
          'accounting_ok': True, 'result_lines': 7, 'error_lines': 2,
          'retried': 4, 'recovered': 4, 'retry_errors': ['timeout', 'fetch']}
  assert summary['result_bytes'] == len(got['result.txt'])
  assert summary['error_bytes'] == len(got['result.txt.errors'])
  for key in ('run_id', 'parameters', 'input_size', 'input_mtime'):
    assert summary[key] == job_summary[key]
  _nothing_left(out)
  # Again: nothing to retry, and nothing is touched.
  before = {p: os.stat(p).st_mtime_ns for p in (out, out + '.errors')}
  code, err = _retry(capsys, out)
  assert code == 0 and 'nothing to retry: no timeout or fetch errors' in err
  assert _files(out) == got
  assert {p: os.stat(p).st_mtime_ns for p in before} == before


def test_retry_of_chosen_kinds_only(tmp_path, model_dirs, flaky, nginx,
                                    capsys):
  """-Dretry_errors=not_found: images that appeared since the job are
  classified; a line still failing with another kind is not retried."""
  model = model_dirs['uint8']
  # nginx's root is the session's: names of this test's own.
  write_image(f'{nginx.root}/retry-here.png', 300)
  write_image(f'{flaky.root}/busy.png', 301)
  flaky.down.add('busy.png')
  lines = [f'{nginx.base}/retry-here.png', f'{nginx.base}/retry-later-1.png',
           f'{flaky.base}/busy.png', f'{nginx.base}/retry-later-2.png']
  out = _job(tmp_path, 'job', lines, model, fetch_retries=0)
  assert _kinds(out) == ['not_found', 'fetch', 'not_found']
  write_image(f'{nginx.root}/retry-later-1.png', 302)
  write_image(f'{nginx.root}/retry-later-2.png', 303)

  code, err = _retry(capsys, out, '-Dretry_errors=not_found',
                     '-Dfetch_timeout=20')
  assert code == 0, err
  assert 'retried 2 line(s) (not_found): 2 recovered' in err
  assert flaky.hits['busy.png'] == 1   # not asked again
  reference = _job(tmp_path, 'reference', lines, model, fetch_retries=0)
  assert _files(out)['result.txt'] == _files(reference)['result.txt']
  assert read_lines(out + '.errors') == read_lines(reference + '.errors')
  assert _kinds(out) == ['fetch']
  assert _summary(out)['failed_by_kind'] == {'fetch': 1}
  _nothing_left(out)


def test_what_a_retry_refuses_leaves_the_files(tmp_path, model_dirs, flaky,
                                               capsys):
  model = model_dirs['uint8']
  write_image(f'{flaky.root}/a.png', 400)
  flaky.down.add('b.png')
  lines = [f'{flaky.base}/a.png', f'{flaky.base}/b.png']
  out = _job(tmp_path, 'job', lines, model, fetch_retries=0)
  files = _files(out)
  listing = tmp_path / 'job.txt'

  def refused(needle, *args):
    code, err = _retry(capsys, out, *args)
    assert code == 2 and needle in err, err
    assert _files(out) == files
    assert flaky.hits['b.png'] == 1   # the job's one request

  refused('cannot change in a retry', '-Dmodel_path=/elsewhere')
  refused('cannot be given to a retry', f'-Dinput_oss_file={listing}')
  refused('-Dretry_errors takes comma-separated values among',
          '-Dretry_errors=fetch,nope')
  code, err = _retry(capsys, out, '-Dretry_errors=decode')
  assert code == 0 and 'nothing to retry' in err and _files(out) == files
  # A folder of someone else's where the retry's would be.
  os.makedirs(out + '.retry')
  (tmp_path / 'job' / 'result.txt.retry' / 'notes').write_text('mine')
  refused('is not an ev-predict retry folder')
  assert os.listdir(out + '.retry') == ['notes']
  os.remove(out + '.retry/notes')
  os.rmdir(out + '.retry')
  # A summary edited to name an error file elsewhere (the same bytes, so
  # the size check passes): the retry would replace it, so it is refused
  # unless the user names that file.
  victim = tmp_path / 'elsewhere' / 'theirs.errors'
  victim.parent.mkdir()
  victim.write_bytes(files['result.txt.errors'])
  edited = dict(_summary(out), error_file=str(victim))
  with open(out + '.summary.json', 'w', encoding='utf-8') as f:
    json.dump(edited, f)
  code, err = _retry(capsys, out)
  assert code == 2 and 'which is not beside' in err and \
      f'-Derror_oss_file={victim}' in err, err
  code, err = _retry(capsys, out, f'-Derror_oss_file={out}.errors')
  assert code == 2 and 'but the job\'s error file is' in err, err
  assert victim.read_bytes() == files['result.txt.errors']
  assert flaky.hits['b.png'] == 1
  with open(out + '.summary.json', 'wb') as f:
    f.write(files['result.txt.summary.json'])
  # The job's error file a link (to that file elsewhere): what a retry
  # replaces would be what the link names.
  os.rename(out + '.errors', tmp_path / 'kept.errors')
  os.symlink(victim, out + '.errors')
  code, err = _retry(capsys, out)
  assert code == 2 and 'is a link' in err, err
  assert victim.read_bytes() == files['result.txt.errors']
  os.remove(out + '.errors')
  os.rename(tmp_path / 'kept.errors', out + '.errors')
  # The job's files changed, or its list did.
  with open(out + '.errors', 'ab') as f:
    f.write(b'x\n')
  code, err = _retry(capsys, out)
  assert code == 2 and 'changed since the job' in err, err
  with open(out + '.errors', 'wb') as f:
    f.write(files['result.txt.errors'])
  os.utime(listing, ns=(0, 0))
  refused('the file list changed since the job')
  os.remove(out + '.summary.json')
  code, err = _retry(capsys, out)
  assert code == 2 and 'summary.json not found' in err
  assert not os.path.exists(out + '.retry')
