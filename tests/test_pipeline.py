"""End to end on DirectRunner: mixed file lists, exact records, probabilities
equal to direct calls of the model's signature on the same tensors."""
import base64
import collections
import json
import os
import socket
import time
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from tests import models
from tests.conftest import write_image
from tests.helpers import run_job, split_output_line
from ev_predict.transforms.decode import DecodeConfig, decode_image
from ev_predict.transforms.inference import to_probabilities

SIZE = DecodeConfig(size=(models.SIZE, models.SIZE), draft=True)


def expected_probs(model_path, image_path, scale=None):
  with open(image_path, 'rb') as f:
    pixels = decode_image(f.read(), SIZE)[None]
  if scale is not None:
    pixels = pixels.astype(np.float32) * scale
  return models.direct_call(model_path, pixels)[0]


def check_result(body, probs, labels):
  assert list(body) == ['class', 'class_name', 'class_probs']
  assert list(body['class_probs']) == labels
  got = np.array(list(body['class_probs'].values()))
  np.testing.assert_allclose(got, probs, atol=1e-6, rtol=0)
  assert body['class'] == int(np.argmax(got))
  assert body['class_name'] == labels[body['class']]


def test_mixed_file_list(tmp_path, model_dirs, http_server):
  model = model_dirs['uint8']
  odd_dir = tmp_path / 'odd dir'
  odd_dir.mkdir()
  odd = write_image(odd_dir / 'a b,c ü "q".jpg', 1)
  viafile = write_image(tmp_path / 'file url #2.png', 2)
  web = write_image(f'{http_server.root}/img3.jpg', 3)
  flaky = write_image(f'{http_server.root}/img4.png', 4)
  jsonimg = write_image(tmp_path / 'json.webp', 5, fmt='WEBP')
  (tmp_path / 'text.jpg').write_text('this is not an image')
  base = http_server.base
  file_url = 'file://' + urllib.parse.quote(viafile)
  json_line = json.dumps({'url': jsonimg, 'id': 7})
  good = {
      odd: odd, file_url: viafile, f'{base}/img3.jpg?size=big&x=1': web,
      f'{base}/flaky/img4.png': flaky, json_line: jsonimg,
  }
  bad = {
      f'{base}/status/404': 'not_found',
      f'{base}/status/403': 'forbidden',
      f'{base}/status/500': 'fetch',
      f'{base}/redirect-loop': 'fetch',
      f'{base}/short/img3.jpg': 'fetch',
      str(tmp_path / 'missing.jpg'): 'not_found',
      str(tmp_path / 'text.jpg'): 'decode',
      '{"url": "x.jpg"': 'bad_line',
      '{"nothing": 1}': 'bad_line',
      'ftp://example.invalid/x.jpg': 'unsupported',
  }
  lines = list(good) + list(bad) + [odd]   # a duplicate line: two records
  raw = b'\xef\xbb\xbf' + b'\r\n\r\n'.join(
      l.encode('utf-8') for l in lines) + b'\r\n  \n\t\n'

  # No report: its thumbnails are fetches of their own (hits counted below).
  results, errors, summary = run_job(
      tmp_path, None, model, raw=raw, fetch_retries=3, report='false')

  # Every non-blank line exactly once (twice for the duplicate).
  seen = collections.Counter(
      split_output_line(l)[0].decode('utf-8') for l in results + errors)
  assert seen == collections.Counter(lines)
  assert summary['lines_read'] == len(lines) == summary['records']
  assert summary['accounting_ok']
  assert summary['succeeded'] == len(results) == len(good) + 1
  by_line = {}
  for l in errors:
    line, body = split_output_line(l)
    assert set(body) == {'error', 'message'} and body['message']
    by_line[line.decode('utf-8')] = body['error']
  assert by_line == bad
  assert summary['failed_by_kind'] == dict(collections.Counter(bad.values()))
  for l in results:
    line, body = split_output_line(l)
    check_result(body, expected_probs(model, good[line.decode('utf-8')]),
                 models.LABELS)
  # The flaky endpoint failed twice and then served: retried, not lost.
  assert http_server.hits['/flaky/img4.png'] == 3
  assert http_server.hits['/status/404'] == 1   # no retry on 404


def test_base64_lines_and_json_image(tmp_path, model_dirs):
  model = model_dirs['uint8']
  paths = [write_image(tmp_path / f'{i}.png', 10 + i) for i in range(3)]
  encoded = [base64.b64encode(open(p, 'rb').read()).decode() for p in paths]
  lines = [encoded[0], 'data:image/png;base64,' + encoded[1],
           json.dumps({'image': encoded[2], 'k': 'v'}), '!!!not base64!!!']
  results, errors, _ = run_job(tmp_path, lines, model, image_type='base64')
  assert len(results) == 3 and len(errors) == 1
  assert split_output_line(errors[0]) == (
      b'!!!not base64!!!', {'error': 'bad_line', 'message': pytest.approx(
          split_output_line(errors[0])[1]['message'])})
  assert split_output_line(errors[0])[1]['error'] == 'bad_line'
  for l in results:
    line, body = split_output_line(l)
    path = paths[lines.index(line.decode())]
    check_result(body, expected_probs(model, path), models.LABELS)


def test_float_logits_model_gets_softmax_and_scaling(tmp_path, model_dirs):
  model = model_dirs['float']
  paths = [write_image(tmp_path / f'{i}.jpg', 20 + i) for i in range(4)]
  results, errors, _ = run_job(tmp_path, paths, model, pixel_scale='0-1')
  assert not errors and len(results) == 4
  for l in results:
    line, body = split_output_line(l)
    with open(line.decode(), 'rb') as f:
      pixels = decode_image(f.read(), SIZE)[None].astype(np.float32) / 255
    logits = models.direct_call(model, pixels)
    assert (logits < 0).any()   # really logits: softmax had to be applied
    check_result(body, to_probabilities(logits)[0],
                 [str(i) for i in range(4)])


def test_string_model_gets_encoded_bytes(tmp_path, model_dirs):
  model = model_dirs['string']
  paths = [write_image(tmp_path / f'{i}.png', 30 + i) for i in range(3)]
  (tmp_path / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
  results, errors, _ = run_job(tmp_path, paths + [str(tmp_path / 'bad.png')],
                               model, batch_size=2)
  assert len(results) == 3 and len(errors) == 1
  assert split_output_line(errors[0])[1]['error'] == 'decode'
  for l in results:
    line, body = split_output_line(l)
    with open(line.decode(), 'rb') as f:
      probs = models.direct_call(model, np.array([f.read()], dtype=object))
    check_result(body, probs[0], models.LABELS)


def test_truncated_image_inside_string_model_isolated(tmp_path, model_dirs):
  """The model decodes itself; a corrupt image fails its batch, which is then
  retried one by one: only that line becomes an inference error."""
  model = model_dirs['string']
  paths = [write_image(tmp_path / f'{i}.png', 40 + i, size=(64, 64))
           for i in range(3)]
  data = open(paths[1], 'rb').read()
  with open(paths[1], 'wb') as f:
    f.write(data[:len(data) // 2])
  results, errors, _ = run_job(tmp_path, paths, model, batch_size=8)
  assert len(results) == 2 and len(errors) == 1
  line, body = split_output_line(errors[0])
  assert line.decode() == paths[1]
  assert body['error'] == 'inference'


def test_output_is_replaced_atomically_on_rerun(tmp_path, model_dirs):
  model = model_dirs['uint8']
  paths = [write_image(tmp_path / f'{i}.png', 50 + i) for i in range(2)]
  first, _, _ = run_job(tmp_path, paths, model, name='same')
  second, _, _ = run_job(tmp_path, paths[:1], model, name='same')
  assert len(first) == 2 and len(second) == 1


def test_timeouts_and_size_caps(tmp_path, model_dirs, http_server):
  model = model_dirs['uint8']
  small = write_image(f'{http_server.root}/small.png', 60, size=(10, 10))
  big = write_image(f'{http_server.root}/big.png', 61, size=(300, 300))
  wide = tmp_path / 'wide.png'
  Image.new('L', (5000, 5000)).save(wide)   # tiny file, 25 Mpx
  base = http_server.base
  lines = {
      f'{base}/small.png': 'ok',
      f'{base}/slow/3/small.png': 'timeout',
      f'{base}/big.png': 'too_large',
      big: 'too_large',
      str(wide): 'too_large',
  }
  results, errors, summary = run_job(
      tmp_path, list(lines), model, fetch_timeout=0.5, fetch_retries=1,
      max_image_bytes=os.path.getsize(big) - 1, max_image_pixels=1_000_000)
  got = {split_output_line(l)[0].decode(): split_output_line(l)[1]['error']
         for l in errors}
  got.update({split_output_line(l)[0].decode(): 'ok' for l in results})
  assert got == lines
  assert summary['failed_by_kind'] == {'timeout': 1, 'too_large': 3}
  assert http_server.hits['/slow/3/small.png'] == 2   # one retry
  assert os.path.getsize(small) < os.path.getsize(big)


def test_hosts_that_do_not_answer(tmp_path, model_dirs):
  """A host that accepts connections but never replies, and a port where
  nothing listens: error records after the retries, within the timeouts."""
  silent = socket.socket()
  silent.bind(('127.0.0.1', 0))
  silent.listen(16)          # the kernel accepts; nobody ever answers
  closed = socket.socket()
  closed.bind(('127.0.0.1', 0))   # bound, never listening: refused
  try:
    lines = {
        f'http://127.0.0.1:{silent.getsockname()[1]}/a.jpg': 'timeout',
        f'http://127.0.0.1:{closed.getsockname()[1]}/b.jpg': 'fetch',
    }
    started = time.monotonic()
    results, errors, summary = run_job(
        tmp_path, list(lines), model_dirs['uint8'], name='silent',
        fetch_timeout=0.5, fetch_retries=1)
    elapsed = time.monotonic() - started
  finally:
    silent.close()
    closed.close()
  got = {split_output_line(l)[0].decode(): split_output_line(l)[1]['error']
         for l in errors}
  assert not results and got == lines
  assert summary['accounting_ok']
  assert elapsed < 60      # two 0.5 s reads plus backoff, not a hang


def test_redirects_and_private_networks(tmp_path, model_dirs, http_server):
  model = model_dirs['uint8']
  write_image(f'{http_server.root}/r.png', 80)
  base = http_server.base
  lines = [f'{base}/redirect/r.png', f'{base}/redirect-file',
           f'{base}/redirect-loop']
  results, errors, _ = run_job(tmp_path, lines, model, name='redir')
  kinds = {split_output_line(l)[0].decode(): split_output_line(l)[1]['error']
           for l in errors}
  assert len(results) == 1
  assert split_output_line(results[0])[0].decode() == lines[0]
  assert kinds == {lines[1]: 'forbidden', lines[2]: 'fetch'}
  # For untrusted lists: loopback is refused before any request is sent.
  before = http_server.hits.get('/r.png', 0)
  results, errors, _ = run_job(tmp_path, [f'{base}/r.png'], model,
                               name='private', block_private_networks='true')
  assert not results
  body = split_output_line(errors[0])[1]
  assert body['error'] == 'forbidden' and 'non-public' in body['message']
  assert http_server.hits.get('/r.png', 0) == before


def test_odd_bytes_and_very_long_lines_echo_verbatim(tmp_path, model_dirs):
  """A path with bytes that are not UTF-8 is read and echoed byte for byte;
  a 100 KB line becomes one error record with a bounded message."""
  model = model_dirs['uint8']
  odd = os.fsencode(str(tmp_path)) + b'/caf\xe9 \xff.png'
  write_image(odd.decode('utf-8', 'surrogateescape'), 90)
  long_line = b'/nowhere/' + b'x' * 100_000 + b'.jpg'
  raw = odd + b'\n' + long_line + b'\n'
  results, errors, summary = run_job(tmp_path, None, model, raw=raw,
                                     name='bytes')
  assert [split_output_line(l)[0] for l in results] == [odd]
  assert len(errors) == 1
  line, body = split_output_line(errors[0])
  # ENAMETOOLONG is the line's own fault: bad_line, never retried (it was a
  # retried 'fetch'; found from outside).
  assert line == long_line and body['error'] == 'bad_line', body
  assert len(body['message']) <= 500
  assert summary['accounting_ok'] and summary['records'] == 2


def test_top_k_and_the_separator_in_a_real_job(tmp_path, model_dirs):
  model = model_dirs['uint8']
  paths = [write_image(tmp_path / f'{i}.png', 20 + 30 * i) for i in range(4)]
  full, _, _ = run_job(tmp_path, paths, model, name='full')
  top, _, summary = run_job(tmp_path, paths, model, name='top', top_k=2)
  assert summary['succeeded'] == 4
  for path, full_line, top_line in zip(paths, full, top):
    # PAI's line: the path, a comma and two spaces, then the JSON.
    assert top_line.startswith(path.encode() + b',  {"class": ')
    assert full_line.startswith(path.encode() + b',  {"class": ')
    _, body = split_output_line(full_line)
    check_result(body, expected_probs(model, path), list(body['class_probs']))
    _, kept = split_output_line(top_line)
    ranked = sorted(body['class_probs'].items(), key=lambda kv: -kv[1])
    assert list(kept['class_probs'].items()) == ranked[:2]
    assert (kept['class'], kept['class_name']) == (body['class'],
                                                   body['class_name'])
