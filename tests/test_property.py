"""Property test of the whole pipeline on seeded, hostile file lists.

Each case draws a file list from a seed: good images, missing files, text and
truncated images, paths and URLs with bytes that are not UTF-8, duplicated and
blank lines, base64 and JSON lines, over local files, a real nginx (HTTP/1.1
keep-alive, 4xx/5xx and redirect bodies left on the connection) and base64.
Every good image is a different class of tests.models.save_identity_model, so
each result names the image it came from. The job must then:

  1. give every non-blank line exactly one record (result + error file, the
     echoed lines byte for byte, duplicates twice);
  2. give every line the outcome it was built for: its image's class, with
     probabilities bit-equal to a direct call of the model, or its error kind;
  3. write the same lines as each line processed alone through the stage
     functions (read, fetch, decode, model, format), messages included where
     the reference can format them;
  4. report a summary that agrees with the files.

A failure names the seed; EV_PROPERTY_SEEDS=1,2,3 runs other seeds (workers
and image type alternate). The file list is kept in the test's tmp_path.
"""
import base64
import collections
import dataclasses
import io
import json
import os
import random
import urllib.parse
from typing import List, Optional, Union

import numpy as np
import pytest
from PIL import Image

from tests import models
from tests.helpers import run_job
from ev_predict.transforms import inference, read
from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import DecodeConfig, decode_image, prepare_record
from ev_predict.transforms.fetch import FetchConfig, Fetcher, needs_fetch
from ev_predict.transforms.format import Formatter

NUM_CLASSES = 128
RETRIES = 1           # a 5xx is retried once: both paths stay short
DECODE = DecodeConfig(size=(models.SIZE, models.SIZE))
FETCH = FetchConfig(retries=RETRIES, pool_size=32)


def _cases():
  seeds = os.environ.get('EV_PROPERTY_SEEDS')
  if seeds:
    return [(int(s), 1 + i % 2, ('url', 'url', 'base64')[i % 3])
            for i, s in enumerate(seeds.split(','))]
  return [(1001, 1, 'url'), (2002, 2, 'url'), (3003, 1, 'base64'),
          (4004, 2, 'url'), (5005, 2, 'base64')]


@dataclasses.dataclass
class Entry:
  """One input line and what it must become: a class id or an error kind."""
  line: bytes
  expect: Union[int, str]
  image: Optional[bytes] = None     # the encoded image behind a class id
  how: str = ''                     # which generator made it (for messages)


class World:
  """Writes the files a case needs and draws its lines."""

  def __init__(self, seed: int, image_type: str, local, web_root: str,
               web_base: str):
    self.rng = random.Random(seed)
    self.image_type = image_type
    self.local = os.fsencode(str(local))
    self.web_root = os.fsencode(web_root)
    self.web_base = web_base.encode()
    self.tag = os.path.basename(web_root)
    self.web_prefix = b'/' + self.tag.encode()
    self._ids = iter(self.rng.sample(range(NUM_CLASSES), NUM_CLASSES))
    self._n = 0

  # -- files ---------------------------------------------------------------

  def _name(self, folder: bytes, suffix: bytes, odd: bool = False) -> bytes:
    self._n += 1
    # Bytes that are not UTF-8 in the middle of the name, the way old
    # Latin-1 or GBK file systems leave them (a space only on disk: a URL
    # with a raw space is another question).
    middle = b'' if not odd else self.rng.choice(
        [b'\xff', b'\xfe\xff'] + [b'caf\xe9 '] * (folder == self.local))
    return b'f%03d-%s%s' % (self._n, middle, suffix)

  def image(self, class_id: int) -> bytes:
    """A near-solid image: red is the class, green and blue are noise."""
    rng = np.random.default_rng(self.rng.getrandbits(32))
    width, height = self.rng.randint(8, 48), self.rng.randint(8, 48)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    arr[..., 0] = models.identity_red(class_id, NUM_CLASSES)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format=self.rng.choice(
        ['PNG', 'PNG', 'BMP', 'TIFF']))
    return out.getvalue()

  def _write(self, folder: bytes, data: bytes, odd: bool = False,
             suffix: bytes = b'.png') -> bytes:
    name = self._name(folder, suffix, odd)
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(data)
    return name

  def good(self):
    class_id = next(self._ids)
    return class_id, self.image(class_id)

  def truncated(self) -> bytes:
    data = self.image(0)
    return data[:len(data) // 2]

  def broken(self) -> bytes:
    return self.rng.choice([b'this is not an image\n', self.truncated(),
                            b'', b'<svg xmlns="http://www.w3.org/2000/svg"/>'])

  # -- lines ---------------------------------------------------------------

  def local_good(self) -> Entry:
    class_id, data = self.good()
    odd = self.rng.random() < 0.3
    path = os.path.join(self.local, self._write(self.local, data, odd))
    if not odd and self.rng.random() < 0.3:
      path = b'file://' + urllib.parse.quote(path).encode()
    return Entry(path, class_id, data, 'local good')

  def local_missing(self) -> Entry:
    odd = self.rng.random() < 0.5
    name = self._name(self.local, b'.png', odd)
    return Entry(os.path.join(self.local, name), rec.NOT_FOUND,
                 how='local missing')

  def local_broken(self) -> Entry:
    path = os.path.join(self.local, self._write(
        self.local, self.broken(), self.rng.random() < 0.3))
    return Entry(path, rec.DECODE, how='local broken')

  def _web_line(self, name: bytes, via: bytes = b'') -> bytes:
    return self.web_base + via + self.web_prefix + b'/' + name

  def http_good(self) -> Entry:
    class_id, data = self.good()
    odd = self.rng.random() < 0.2
    name = self._write(self.web_root, data, odd)
    via = b'' if odd else self.rng.choice(
        [b'', b'', b'/redirect', b'/redirect-301', b'/redirect-307',
         b'/chain/3'])
    line = self._web_line(name, via)
    if not odd and self.rng.random() < 0.2:
      line += b'?v=%d&size=big' % self.rng.randint(1, 9)
    return Entry(line, class_id, data, f'http good via {via.decode()!r}')

  def http_missing(self) -> Entry:
    odd = self.rng.random() < 0.3
    via = b'' if odd else self.rng.choice([b'', b'/redirect'])
    name = self._name(self.web_root, b'.png', odd)
    return Entry(self._web_line(name, via), rec.NOT_FOUND,
                 how='http missing')

  def http_broken(self) -> Entry:
    return Entry(self._web_line(self._write(self.web_root, self.broken())),
                 rec.DECODE, how='http broken')

  def http_status(self) -> Entry:
    code, kind = self.rng.choice([
        (404, rec.NOT_FOUND), (404, rec.NOT_FOUND), (410, rec.NOT_FOUND),
        (403, rec.FORBIDDEN), (401, rec.FORBIDDEN), (400, rec.FETCH),
        (500, rec.FETCH), (503, rec.FETCH)])
    # The query names the case: its requests can be told from another's.
    line = b'%s/status/%d?case=%s' % (self.web_base, code, self.tag.encode())
    return Entry(line, kind, how=f'http {code}')

  def json_url(self) -> Entry:
    entry = self.rng.choice([self.local_good, self.http_good,
                             self.local_missing])()
    try:
      url = entry.line.decode('utf-8')
    except UnicodeDecodeError:
      # JSON text cannot hold bytes that are not UTF-8: a bad line.
      return Entry(b'{"url": "%s"}' % entry.line, rec.BAD_LINE,
                   how='json raw bytes')
    line = json.dumps({'url': url, 'id': self._n}).encode()
    return dataclasses.replace(entry, line=line, how='json ' + entry.how)

  def json_image(self) -> Entry:
    class_id, data = self.good()
    return Entry(json.dumps({'image': base64.b64encode(data).decode()})
                 .encode(), class_id, data, 'json image')

  def json_bad(self) -> Entry:
    return Entry(self.rng.choice([
        b'{"url":', b'{"nothing": 1}', b'{"url": ""}', b'{"image": "@@@"}',
        b'{"url": 7}', b'{"url": ["x.png"]}', b'{}']),
                 rec.BAD_LINE, how='json bad')

  def b64_good(self) -> Entry:
    class_id, data = self.good()
    style = self.rng.choice(['plain', 'data', 'urlsafe', 'unpadded'])
    text = base64.b64encode(data)
    if style == 'data':
      text = b'data:image/png;base64,' + text
    elif style == 'urlsafe':
      text = base64.urlsafe_b64encode(data)
    elif style == 'unpadded':
      text = text.rstrip(b'=')
    return Entry(text, class_id, data, f'base64 {style}')

  def b64_broken(self) -> Entry:
    return Entry(base64.b64encode(self.broken() or b'x'), rec.DECODE,
                 how='base64 broken image')

  def b64_invalid(self) -> Entry:
    return Entry(self.rng.choice([
        b'!!!not base64!!!', b'iVBORw0KGgo\xff\xfe', b'data:image/png;base64,',
        os.path.join(self.local, b'a.png')]), rec.BAD_LINE,
                 how='base64 invalid')

  def draw(self, count: int) -> List[Entry]:
    if self.image_type == 'base64':
      kinds = [(self.b64_good, 5), (self.b64_broken, 2), (self.b64_invalid, 2),
               (self.json_url, 3), (self.json_image, 1), (self.json_bad, 1)]
    else:
      kinds = [(self.local_good, 4), (self.local_missing, 2),
               (self.local_broken, 2), (self.http_good, 5),
               (self.http_missing, 2), (self.http_broken, 1),
               (self.http_status, 3), (self.json_url, 2),
               (self.json_image, 1), (self.json_bad, 1)]
    makers = [m for m, weight in kinds for _ in range(weight)]
    entries = [self.rng.choice(makers)() for _ in range(count)]
    # The same line twice is two records.
    entries += [self.rng.choice(entries) for _ in range(count // 10)]
    self.rng.shuffle(entries)
    return entries

  def listing(self, entries: List[Entry]) -> bytes:
    """The file list: CRLF and LF endings, blank and whitespace lines."""
    out = []
    for entry in entries:
      if self.rng.random() < 0.08:
        out.append(self.rng.choice([b'', b'   ', b'\t', b' \t ']) + b'\n')
      out.append(entry.line + self.rng.choice([b'\n', b'\n', b'\r\n']))
    return b''.join(out)


# -- the one-at-a-time reference ---------------------------------------------

def _safe(stage, record, kind, needs=lambda record: True):
  """As transforms.parallel.ThreadedMap runs a stage: failed records, and
  good ones needs says have no work for it, pass."""
  if not record.ok or not needs(record):
    return record
  try:
    return stage(record)
  except Exception as e:  # pylint: disable=broad-except
    return record.fail(kind, f'{type(e).__name__}: {e}')


def reference(raw_lines, image_type, model_path, formatter):
  """[(outcome, output line or None, echoed line)] for each line processed
  alone; None where the Formatter cannot write the line (its message is then
  not compared, only its kind)."""
  records = []
  for raw in raw_lines:
    record = read.parse_line(raw, image_type)
    if record is None:
      continue
    # A fresh Fetcher per line: no connection is shared with another line.
    record = _safe(Fetcher(FETCH), record, rec.FETCH, needs=needs_fetch)
    record = _safe(lambda r: prepare_record(r, DECODE, False), record,
                   rec.DECODE)
    records.append(record)
  ready = [i for i, r in enumerate(records) if r.ok]
  if ready:
    # The identity model is exact, so one call for all equals calls one by
    # one (tests/models.py).
    probs = inference.to_probabilities(models.direct_call(
        model_path, np.stack([records[i].tensor for i in ready])))
    for i, p in zip(ready, probs):
      records[i] = records[i].but(tensor=None, probs=p)
  out = []
  for record in records:
    try:
      out.append(formatter(record))
    except Exception:  # pylint: disable=broad-except
      out.append((record.error, None, record.line))
      continue
    out[-1] += (record.line,)
  return out


def split(line: bytes):
  """Output line -> (echoed line, body)."""
  for marker in (b',  {"class": ', b',  {"error": '):
    idx = line.rfind(marker)
    if idx >= 0:
      return line[:idx], json.loads(
          line[idx + 3:].decode('utf-8', 'surrogateescape'))
  raise AssertionError(f'not an output line: {line[:300]!r}')


def _short(value):
  """A long base64 line, shortened for a failure message."""
  if isinstance(value, tuple):
    return tuple(map(_short, value))
  if isinstance(value, bytes) and len(value) > 160:
    return value[:120] + b'...' + value[-30:]
  return value


def _diff(name, got, want, limit=12):
  got, want = collections.Counter(got), collections.Counter(want)
  if got == want:
    return []
  extra, missing = list((got - want).elements()), list((want - got).elements())
  return [f'{name}: {len(extra)} unexpected, {len(missing)} missing\n'
          f'    unexpected: {list(map(_short, extra[:limit]))!r}\n'
          f'    missing:    {list(map(_short, missing[:limit]))!r}']


@pytest.fixture(scope='module')
def identity_model(tmp_path_factory):
  return models.save_identity_model(
      str(tmp_path_factory.mktemp('models') / 'identity'), NUM_CLASSES)


@pytest.mark.parametrize('seed,workers,image_type', _cases(),
                         ids=lambda v: str(v))
def test_hostile_file_list(tmp_path, identity_model, nginx, seed, workers,
                           image_type):
  case = f'seed={seed} num_worker={workers} image_type={image_type}'
  print(f'property case: {case} (replay: EV_PROPERTY_SEEDS={seed})')
  web = os.path.join(nginx.root, f'case-{seed}-{workers}-{image_type}')
  os.makedirs(web, exist_ok=True)
  (tmp_path / 'local').mkdir()
  world = World(seed, image_type, tmp_path / 'local', web, nginx.base)
  entries = world.draw(world.rng.randint(40, 70))
  raw = world.listing(entries)
  lines = [e.line for e in entries]
  labels = inference.load_labels(identity_model, None, NUM_CLASSES)

  def requests():
    # Only this case's: a failed job elsewhere may still be fetching.
    return [p for p in nginx.requests() if world.tag in p]

  ref = reference(raw.split(b'\n'), image_type, identity_model,
                  Formatter(labels))
  ref_requests = requests()

  try:
    results, errors, summary = run_job(
        tmp_path, None, identity_model, raw=raw, num_worker=workers,
        image_type=image_type, fetch_retries=RETRIES, max_restarts=0,
        # The report's thumbnails are requests of their own.
        report='false')
  except Exception as e:  # pylint: disable=broad-except
    # Reported as what it is: not one line got its record.
    pytest.fail(f'{case}: 1. records per line: the job failed, no line got '
                f'a record: {type(e).__name__}: {str(e)[:1500]}',
                pytrace=False)
  problems = []

  # 1. Every non-blank line, exactly once, echoed byte for byte.
  outputs = [split(l) for l in results + errors]
  problems += _diff('1. records per line', [o[0] for o in outputs], lines)

  # 2. Every line has the outcome it was built for; a result carries its own
  # image's class and the model's exact probabilities for that image.
  designed = {e.line: e for e in entries}
  outcome = [(line, body['class'] if 'class' in body else body['error'])
             for line, body in outputs]
  problems += _diff('2. outcome per line', outcome,
                    [(e.line, e.expect) for e in entries])
  images = {e.line: e.image for e in entries if e.image is not None}
  direct = dict(zip(images, models.direct_call(identity_model, np.stack(
      [decode_image(d, DECODE) for d in images.values()])))) if images else {}
  wrong = []
  for line, body in outputs:
    if 'class' not in body or line not in direct:
      continue
    got = np.array(list(body['class_probs'].values()), np.float64)
    if list(body['class_probs']) != labels or \
        body['class_name'] != labels[body['class']] or \
        not np.array_equal(got, direct[line].astype(np.float64)):
      wrong.append((_short(line), designed[line].how, body['class']))
  if wrong:
    problems.append(f'2. probabilities not the direct call\'s for '
                    f'{len(wrong)} results: {wrong[:12]!r}')

  # 3. The same lines as the one-at-a-time reference.
  problems += _diff('3. result lines vs reference', results,
                    [l for kind, l, _ in ref if kind == 'ok'])
  exact = {echo for kind, l, echo in ref if kind != 'ok' and l is not None}

  def key(line, kind):
    return line if split(line)[0] in exact else (split(line)[0], kind)

  problems += _diff(
      '3. error lines vs reference',
      [key(l, split(l)[1]['error']) for l in errors],
      [l if l is not None else (echo, kind)
       for kind, l, echo in ref if kind != 'ok'])

  # A stale body read as the next answer costs a retry that the lines above
  # may not show: the job asks nginx exactly what the lines asked alone.
  problems += _diff('3. HTTP requests vs reference',
                    requests()[len(ref_requests):],
                    ref_requests)

  # 4. The summary agrees with the files.
  kinds = collections.Counter(split(l)[1]['error'] for l in errors)
  want = {'lines_read': len(lines), 'records': len(lines),
          'succeeded': len(results), 'failed': len(errors),
          'failed_by_kind': dict(sorted(kinds.items())),
          'accounting_ok': True}
  got = {k: summary.get(k) for k in want}
  if got != want:
    problems.append(f'4. summary {got} != files {want}')

  assert not problems, (
      f'{case}: {len(lines)} lines, file list {tmp_path}/job.txt\n' +
      '\n'.join(problems))
