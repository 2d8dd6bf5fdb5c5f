"""The run report (issue #14): one self-contained HTML page per job, opened
in a real headless Chromium: no console error, no request leaves the page,
every picture loads, and the numbers in the DOM are the summary's and the
files'."""
import collections
import json
import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ev_predict.pipeline import cli, launcher
from ev_predict.transforms import format as fmt
from tests import models
from tests.browser import Browser
from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line
from tests.test_memory import MIB, peak_rss

ROOT = pathlib.Path(__file__).resolve().parents[1]
# CI keeps build/ as its artefacts folder.
SCREENSHOT = ROOT / 'build' / 'report-screenshot.png'
HOSTILE = '<img src=x onerror=alert(1)>'

# What the page says, as the browser sees it.
_READ_DOM = """(() => ({
  fields: Array.from(document.querySelectorAll('[data-field]')).map(
      e => [e.dataset.field, e.dataset.value, e.textContent]),
  classes: Object.fromEntries(Array.from(document.querySelectorAll(
      '[data-class-count]')).map(e => [e.dataset.classCount,
                                       e.textContent])),
  kinds: Object.fromEntries(Array.from(document.querySelectorAll(
      '[data-kind-count]')).map(e => [e.dataset.kindCount, e.textContent])),
  images: Array.from(document.images).map(
      i => [i.complete, i.naturalWidth, i.src.slice(0, 23)]),
  scripts: document.querySelectorAll('script').length,
  handlers: document.querySelectorAll('[onerror],[onload]').length,
  missing: Array.from(document.querySelectorAll('figure .none')).map(
      e => e.textContent),
  text: document.body.innerText,
}))()"""


def _job(tmp_path, lines, model, *extra, name='job'):
  listing = tmp_path / f'{name}.txt'
  listing.write_text(''.join(l + '\n' for l in lines))
  out = tmp_path / name / 'result.txt'
  summary = launcher.run([f'-Dmodel_path={model}', f'-Dinput_oss_file={listing}',
                          f'-Doutput_oss_file={out}', '-Dmax_error_ratio=1',
                          *extra])
  return out, summary


def _lookup(summary, key):
  value = summary
  for part in key.split('.', 1) if key.split('.', 1)[0] in (
      'failed_by_kind', 'backends') else [key]:
    value = value[part]
  return value


def _open(page):
  with Browser() as browser:
    browser.open(page.as_uri())
    dom = browser.evaluate(_READ_DOM)
    return dom, browser.problems(), browser


def _check_fields(dom, summary):
  seen = set()
  for key, value, text in dom['fields']:
    want = _lookup(summary, key)
    got = value if isinstance(want, str) else json.loads(value)
    assert got == want, (key, got, want)
    if isinstance(want, (int, float)) and not isinstance(want, bool):
      assert float(text.replace(',', '')) == pytest.approx(want, abs=5e-4), \
          (key, text)
    seen.add(key)
  for key in ('lines_read', 'succeeded', 'failed', 'wall_seconds',
              'processing_seconds', 'images_per_second', 'accounting_ok'):
    assert key in seen, key
  for kind in summary['failed_by_kind']:
    assert f'failed_by_kind.{kind}' in seen, kind


def test_a_jobs_report_in_a_real_browser(tmp_path, model_dirs):
  """A real job's own report (written beside its result): it loads with no
  console error and no request, every thumbnail is a loaded picture, the
  numbers are the summary's (and the classes those of the result file), a
  hostile file name is text, and the page is a screenshot in build/."""
  images = [write_image(tmp_path / f'p{i}.png', 40 + i, size=(48, 36))
            for i in range(30)]
  hostile = write_image(tmp_path / f'{HOSTILE}.png', 7, size=(30, 30))
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  lines = [hostile] + images + [str(tmp_path / f'{HOSTILE}gone.png'),
                                str(tmp_path / 'broken.png')]
  out, summary = _job(tmp_path, lines, model_dirs['uint8'], '-Dbatch_size=4')
  page = pathlib.Path(f'{out}.report.html')
  assert summary['report_file'] == str(page)
  assert page.stat().st_size < 3 * MIB
  with Browser() as browser:
    browser.open(page.as_uri())
    dom = browser.evaluate(_READ_DOM)
    assert browser.problems() == []
    browser.screenshot(str(SCREENSHOT))
  on_disk = json.loads(pathlib.Path(f'{out}.summary.json').read_text())
  _check_fields(dom, on_disk)
  classes = collections.Counter(split_output_line(l)[1]['class_name']
                                for l in read_lines(out))
  assert {k: int(v.replace(',', '')) for k, v in dom['classes'].items()} == \
      dict(classes)
  assert {k: int(v) for k, v in dom['kinds'].items()} == \
      summary['failed_by_kind'] == {'not_found': 1, 'decode': 1}
  # 24 borderline images and 4 per class shown: every one a loaded JPEG.
  assert len(dom['images']) == 24 + 4 * len(classes)
  assert all(ok and width > 0 and src == 'data:image/jpeg;base64,'
             for ok, width, src in dom['images']), dom['images']
  assert dom['missing'] == []
  assert (dom['scripts'], dom['handlers']) == (0, 0)
  assert HOSTILE in dom['text']
  assert f'{HOSTILE}gone.png' in dom['text'] and 'no such file' in dom['text']


def test_the_report_command_and_a_thumbnail_that_cannot_be_had(
    tmp_path, model_dirs, capsys):
  """`ev-predict report OUTPUT --out FILE` for a finished job: an image
  removed since shows why it is missing; --thumbnails 0 fetches nothing;
  -Dreport=false writes none; a directory where the report goes is exit 2
  before any work."""
  images = [write_image(tmp_path / f'q{i}.png', 90 + i) for i in range(6)]
  out, summary = _job(tmp_path, images, model_dirs['uint8'], '-Dreport=false')
  assert 'report_file' not in summary or summary['report_file'] is None
  assert not os.path.exists(f'{out}.report.html')
  os.remove(images[2])
  target = tmp_path / 'elsewhere' / 'r.html'
  assert cli.main(['report', str(out), '--out', str(target)]) == 0
  assert capsys.readouterr().err.endswith(f'ev-predict: report {target}\n')
  dom, problems, _ = _open(target)
  assert problems == []
  assert any(m.startswith('not_found: no such file') for m in dom['missing'])
  assert all(ok and width > 0 for ok, width, _ in dom['images'])
  assert cli.main(['report', str(out), '--out', str(target),
                   '--thumbnails', '0']) == 0
  dom, problems, _ = _open(target)
  assert (problems, dom['images']) == ([], [])
  assert set(dom['missing']) == {'thumbnails off'}
  # Refusals: one line, exit 2.
  capsys.readouterr()
  assert cli.main(['report', str(tmp_path / 'nothing.txt')]) == 2
  assert 'OUTPUT must be the result file' in capsys.readouterr().err
  assert cli.main(['report', str(out), '--out', str(tmp_path)]) == 2
  assert 'is a directory' in capsys.readouterr().err
  # Only a report of ours is replaced: never the job's own files.
  for own in (out, pathlib.Path(f'{out}.errors'),
              pathlib.Path(f'{out}.summary.json')):
    before = own.read_bytes()
    assert cli.main(['report', str(out), '--out', str(own)]) == 2
    assert 'exists and is not an ev-predict report' in \
        capsys.readouterr().err
    assert own.read_bytes() == before
  (tmp_path / 'job2').mkdir()
  os.mkdir(tmp_path / 'job2' / 'result.txt.report.html')
  listing = tmp_path / 'job.txt'
  code = cli.main([f'-Dmodel_path={model_dirs["uint8"]}',
                   f'-Dinput_oss_file={listing}',
                   f'-Doutput_oss_file={tmp_path / "job2" / "result.txt"}'])
  assert code == 2
  assert '(the run report) is a directory' in capsys.readouterr().err
  assert os.listdir(tmp_path / 'job2') == ['result.txt.report.html']


def test_a_multilabel_report(tmp_path):
  """Label frequency, labels per image and co-occurrence, as the result
  file has them."""
  model = models.save_multilabel_model(str(tmp_path / 'model'))
  lines = []
  for i, level in enumerate([13, 77, 128, 230] * 4):
    Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(
        tmp_path / f'g{i}.png')
    lines.append(str(tmp_path / f'g{i}.png'))
  out, _ = _job(tmp_path, lines, model, '-Dmodel_type=multilabel_classifier')
  dom, problems, _ = _open(pathlib.Path(f'{out}.report.html'))
  assert problems == []
  labels = collections.Counter(n for l in read_lines(out)
                               for n in split_output_line(l)[1]['class_names'])
  assert {k: int(v) for k, v in dom['classes'].items()} == dict(labels)
  assert 'Labels per image and co-occurrence' in dom['text']
  assert all(ok and width > 0 for ok, width, _ in dom['images'])


def test_a_table_jobs_report(tmp_path, model_dirs):
  images = [write_image(tmp_path / f't{i}.png', 200 + i) for i in range(8)]
  pq.write_table(pa.table({'id': pa.array(range(8), pa.int64()),
                           'url': images}), tmp_path / 'in.parquet')
  out = tmp_path / 'o' / 'out.parquet'
  launcher.run([f'-Dmodel_path={model_dirs["uint8"]}',
                f'-Dinput_table={tmp_path / "in.parquet"}', '-Dimage_col=url',
                '-Dreserved_columns=id,url', f'-Doutput_table={out}'])
  dom, problems, _ = _open(pathlib.Path(f'{out}.report.html'))
  assert problems == []
  classes = collections.Counter(
      json.loads(r)['class_name'] for r in
      pq.read_table(out).column('result').to_pylist())
  assert {k: int(v) for k, v in dom['classes'].items()} == dict(classes)
  assert dom['images'] and all(ok and w > 0 for ok, w, _ in dom['images'])
  assert 'id=0' in dom['text']


def test_report_on_oss(tmp_path, model_dirs, oss_env):
  """A job on oss:// writes its report there; thumbnails come through the
  OSS file system."""
  server = oss_env
  for i in range(5):
    path = write_image(tmp_path / f'o{i}.png', 400 + i)
    with open(path, 'rb') as f:
      server.put('data', f'img/{i}.png', f.read())
  server.put('data', 'list.txt', ''.join(
      f'oss://data/img/{i}.png\n' for i in range(5)).encode())
  launcher.run([f'-Dmodel_path={model_dirs["uint8"]}',
                '-Dinput_oss_file=oss://data/list.txt',
                '-Doutput_oss_file=oss://data/out/result.txt',
                f'-DossHost={server.endpoint}'])
  page = tmp_path / 'report.html'
  page.write_bytes(server.get('data', 'out/result.txt.report.html'))
  dom, problems, _ = _open(page)
  assert problems == []
  assert len(dom['images']) == 5 + 4 * len(dom['classes'])
  assert all(ok and w > 0 for ok, w, _ in dom['images'])
  # A summary edited to name another OSS endpoint: `ev-predict report`
  # never sends a request (signed with this user's key) there.
  import socket  # pylint: disable=import-outside-toplevel
  decoy = socket.socket()
  decoy.bind(('127.0.0.1', 0))
  decoy.listen(8)
  decoy.settimeout(0.5)
  summary = json.loads(server.get('data', 'out/result.txt.summary.json'))
  summary['parameters']['ossHost'] = f'127.0.0.1:{decoy.getsockname()[1]}'
  server.put('data', 'out/result.txt.summary.json',
             json.dumps(summary).encode())
  assert cli.main(['report', 'oss://data/out/result.txt', '--ossHost',
                   server.endpoint, '--out', str(tmp_path / 'r2.html')]) == 0
  with pytest.raises(socket.timeout):
    decoy.accept()
  decoy.close()
  dom, problems, _ = _open(tmp_path / 'r2.html')
  assert problems == [] and dom['classes']


@pytest.mark.timeout(900)
def test_report_memory_and_size_are_flat_in_the_lines(tmp_path):
  """20k and 400k result lines of a 100-class model: the report's peak
  memory grows by little and its page stays well under a few MB."""
  labels = [f'class_{i:03d}' for i in range(100)]
  formatter = fmt.Formatter(labels)
  rng = np.random.default_rng(0)
  sizes = {}
  peaks = {}
  for n in (20_000, 400_000):
    out = tmp_path / f'r{n}' / 'result.txt'
    out.parent.mkdir()
    with open(out, 'wb') as f:
      for start in range(0, n, 10_000):
        logits = rng.normal(0, 2, (10_000, 100)).astype(np.float32)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        f.write(''.join(
            f'/images/{start + i:08d}.jpg{fmt.SEPARATOR.decode()}'
            f'{formatter.result(probs[i])}\n'
            for i in range(min(10_000, n - start))).encode())
    pathlib.Path(f'{out}.errors').write_bytes(
        b'/images/gone.jpg,  {"error": "not_found", "message": "gone"}\n')
    pathlib.Path(f'{out}.summary.json').write_text(json.dumps({
        'lines_read': n + 1, 'succeeded': n, 'failed': 1,
        'failed_by_kind': {'not_found': 1}, 'parameters': {},
        'error_file': f'{out}.errors'}))
    peaks[n] = peak_rss(['report', str(out), '--thumbnails', '0'])
    sizes[n] = pathlib.Path(f'{out}.report.html').stat().st_size
  print(f'report: peak RSS {peaks[20_000] / MIB:.0f} -> '
        f'{peaks[400_000] / MIB:.0f} MiB, page {sizes[20_000] / 1024:.0f} -> '
        f'{sizes[400_000] / 1024:.0f} KiB')
  assert peaks[400_000] - peaks[20_000] < 32 * MIB, peaks
  assert sizes[400_000] < 2 * MIB


def test_the_timeline_is_bounded_and_drawn():
  """However long the run, at most Timeline.MAX points, the first and the
  last kept; the page draws them as throughput over the run."""
  from ev_predict.pipeline.status import Timeline  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms import report, report_page  # pylint: disable=import-outside-toplevel
  timeline = Timeline()
  for second in range(100_000):
    timeline.add(float(second), second * 3)
  timeline.add(100_000.5, 300_001, last=True)
  points = timeline.points
  assert len(points) <= Timeline.MAX
  assert points[0] == (0.0, 0) and points[-1] == (100_000.5, 300_001)
  assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(points, points[1:]))
  page = report_page.render({'run_id': 'x', 'timeline': {
      'points': [list(p) for p in points]}}, report.Stats(), 'out.txt')
  assert 'Throughput over the run' in page and '<svg' in page


def _edited_copy(tmp_path, out, name, result=None, errors=None, **fields):
  """A copy of a job's files with one thing edited, as a hand (or an
  attacker with write access to the output's folder) might."""
  folder = tmp_path / name
  folder.mkdir()
  copy = folder / 'result.txt'
  copy.write_bytes(out.read_bytes() if result is None else result)
  pathlib.Path(f'{copy}.errors').write_bytes(
      pathlib.Path(f'{out}.errors').read_bytes() if errors is None else errors)
  summary = json.loads(pathlib.Path(f'{out}.summary.json').read_text())
  summary.update(result_file=str(copy), error_file=f'{copy}.errors')
  summary.update(fields)
  pathlib.Path(f'{copy}.summary.json').write_text(json.dumps(summary))
  return copy


def test_the_report_command_trusts_nothing_it_reads(tmp_path, model_dirs,
                                                   capsys):
  """A summary and result file on disk may be hand-edited or hostile: the
  report reads only OUTPUT's siblings (a secret named as the error file
  never reaches the page), never opens a FIFO, counts a wrongly shaped
  result line as unreadable, refuses a summary of the wrong shape (exit 2)
  and keeps its memory bounded by what it shows."""
  from ev_predict.pipeline import report as cmd  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms import report  # pylint: disable=import-outside-toplevel
  images = [write_image(tmp_path / f'h{i}.png', 30 + i) for i in range(3)]
  out, _ = _job(tmp_path, images + [str(tmp_path / 'gone.png')],
                model_dirs['uint8'], '-Dreport=false')
  secret = tmp_path / 'private.txt'
  secret.write_text('root:x:0:0:TOPSECRET\n' * 3)

  def report_of(copy, *args):
    capsys.readouterr()
    code = cli.main(['report', str(copy), '--thumbnails', '0', *args])
    return code, capsys.readouterr().err

  # 1. The error file must be beside OUTPUT, or named by the user.
  copy = _edited_copy(tmp_path, out, 'secret', error_file=str(secret))
  code, err = report_of(copy)
  assert code == 2 and 'not beside' in err and '--errors' in err, err
  assert not os.path.exists(f'{copy}.report.html')
  code, err = report_of(copy, '--errors', f'{copy}.errors')
  assert code == 0, err
  page = pathlib.Path(f'{copy}.report.html').read_text()
  assert 'TOPSECRET' not in page and 'gone.png' in page
  # A link beside OUTPUT names any file: OUTPUT, its errors, never read.
  linked = _edited_copy(tmp_path, out, 'linked')
  os.remove(f'{linked}.errors')
  os.symlink(secret, f'{linked}.errors')
  code, err = report_of(linked)
  assert code == 2 and 'is a link' in err, err
  os.remove(f'{linked}.errors')
  pathlib.Path(f'{linked}.errors').write_bytes(b'')
  os.rename(linked, tmp_path / 'linked' / 'real.txt')
  os.symlink(secret, linked)
  code, err = report_of(linked)
  assert code == 2 and 'is a link' in err, err
  # 2. FIFOs: as --out, as the job's own report path, as an input.
  fifo = tmp_path / 'out.fifo'
  os.mkfifo(fifo)
  code, err = report_of(copy, '--out', str(fifo))
  assert code == 2 and 'not a regular file' in err, err
  fifo_job = _edited_copy(tmp_path, out, 'fifo')
  os.remove(f'{fifo_job}.errors')
  os.mkfifo(f'{fifo_job}.errors')
  code, err = report_of(fifo_job)
  assert code == 2 and 'is not a regular file' in err, err
  # 3. Result lines of the wrong shape are unreadable, counted, no crash.
  line = f'{images[0]}{fmt.SEPARATOR.decode()}'
  bodies = ['{"class": 0, "class_name": "a", "class_probs": [0.1, 0.9]}',
            '{"class": 0, "class_name": "a", "class_probs": {"a": NaN}}',
            '{"class": 0, "class_name": "a", "class_probs": {"a": "x"}}',
            '{"classes": [1], "class_names": 5, "probs": [0.9]}',
            '{"classes": [1], "class_names": ["a"], "probs": [true]}',
            '{"class_probs": {"a": 0.5}}',
            '{"class": 0, "class_name": "bad\\udc80\\u0000name", '
            '"class_probs": {"bad": 0.25}}']
  shaped = _edited_copy(
      tmp_path, out, 'shapes',
      result=''.join(line + b + '\n' for b in bodies).encode(),
      errors=b'/x.png,  {"error": {"k": 1}, "message": "m\\ud800"}\n')
  code, err = report_of(shaped)
  assert code == 0, err
  dom, problems, _ = _open(pathlib.Path(f'{shaped}.report.html'))
  assert problems == []
  assert dom['kinds'] == {'unreadable': '6', 'unknown': '1'}
  assert dom['classes'] == {'bad\ufffd\ufffdname': '1'}
  # 4. A summary of the wrong shape is exit 2, in one line.
  for name, fields in (('strs', {'succeeded': 'many'}),
                       ('kinds', {'failed_by_kind': ['a']}),
                       ('points', {'timeline': {'points': [['a', 'b']]}}),
                       ('params', {'parameters': {'threshold': [1]}})):
    code, err = report_of(_edited_copy(tmp_path, out, name, **fields))
    assert code == 2 and 'is not an ev-predict summary (' in err, (name, err)
  # 5. Small refusals.
  assert report_of(copy, '--out=')[0] == 2
  assert report_of(copy, '--thumbnails', '1001')[0] == 2
  code, err = report_of(copy, '--out', f'{copy}.errors/r.html')
  assert code == 2 and 'is a file, not a folder' in err, err
  # A 256 MiB line (no newline) is one unreadable line, held 8 MiB at most.
  long = _edited_copy(tmp_path, out, 'long', result=b'')
  with open(long, 'wb') as f:
    f.truncate(256 << 20)
  peak = peak_rss(['report', str(long), '--thumbnails', '0'])
  assert peak < 400 * MIB, peak / MIB
  # 6. An untrusted summary never lets a remote OUTPUT's page picture
  # local files or private addresses; the job's own summary is the job's.
  lax = {'allow_local_files': 'true', 'block_private_networks': 'false'}
  remote = cmd._fetch_config(lax, False, 'oss://b/out.txt')  # pylint: disable=protected-access
  assert (remote.allow_local_files, remote.block_private_networks) == \
      (False, True)
  own = cmd._fetch_config(lax, True, 'oss://b/out.txt')  # pylint: disable=protected-access
  assert (own.allow_local_files, own.block_private_networks) == (True, False)
  # 7. Memory is bounded by what the page shows, not by distinct classes
  # (a dense histogram each was 8 KiB a class), and classes are capped.
  import tracemalloc  # pylint: disable=import-outside-toplevel
  stats = report.Stats()
  tracemalloc.start()
  for i in range(5000):
    stats.add(report.Item(True, f'{i}', b'x', {
        'class_name': f'c{i}' + 'L' * 5000, 'class_probs': {'x': 0.9}}))
  per_class = tracemalloc.get_traced_memory()[0] / 5000
  tracemalloc.stop()
  assert per_class < 2048, per_class
  assert max(map(len, stats.classes)) <= 200
  capped = report.Stats(lowest=0, per_class=0)
  for i in range(report.MAX_CLASSES + 10):
    capped.add(report.Item(True, '', None, {'class_name': f'c{i}',
                                            'class_probs': {'x': 0.5}}))
  assert (len(capped.classes), capped.folded) == (report.MAX_CLASSES, 10)
