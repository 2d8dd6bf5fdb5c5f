"""transforms/read.py: every non-blank line of a file list becomes exactly one
record, whatever it holds; a line that cannot be parsed is a bad_line record,
never an exception."""
import base64
import gzip
import os

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.util import assert_that, equal_to

from ev_predict.transforms import state
from ev_predict.transforms.read import BASE64, URL, ReadChunks, parse_line
from ev_predict.transforms.record import BAD_LINE

PNG = b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 3   # bytes, not an image
PNG_B64 = base64.b64encode(PNG)


def _ok(record):
  assert record is not None and record.ok, record
  return record


def _bad(record, needle=''):
  assert record is not None and record.error == BAD_LINE, record
  assert needle in record.message
  assert '\n' not in record.message and len(record.message) <= 500
  assert record.data is None
  return record


@pytest.mark.parametrize('raw', [b'', b'\n', b'  \t \r\n', b'\r',
                                 b'\xef\xbb\xbf', b'\xef\xbb\xbf  \r\n'])
@pytest.mark.parametrize('image_type', [URL, BASE64])
def test_blank_lines_make_no_record(raw, image_type):
  assert parse_line(raw, image_type) is None


@pytest.mark.parametrize('raw, line', [
    (b'/data/a b.jpg\n', b'/data/a b.jpg'),
    (b'  http://h/x.jpg?a=1&b=2 \r\n', b'http://h/x.jpg?a=1&b=2'),
    (b'\xef\xbb\xbfoss://bucket/k.png\r\n', b'oss://bucket/k.png'),
    (b'\xef\xbb\xbf  file:///t/x.jpg', b'file:///t/x.jpg'),
    (b'\tcaf\xc3\xa9/\xe5\x9b\xbe.jpg\n', 'café/图.jpg'.encode()),
])
def test_url_lines_name_their_source(raw, line):
  record = _ok(parse_line(raw))
  # The line is echoed in the output: stripped, BOM gone, bytes kept.
  assert record.line == line
  assert record.source == line.decode('utf-8')
  assert record.data is None


def test_url_line_with_bytes_that_are_not_utf8_keeps_them():
  """A local path may hold any bytes: the source names the same file."""
  raw = b'/data/caf\xe9-\xff\xfe.jpg\n'
  record = _ok(parse_line(raw))
  assert record.line == raw.strip()
  assert os.fsencode(record.source) == raw.strip()


@pytest.mark.parametrize('text', [
    PNG_B64,
    PNG_B64.rstrip(b'='),                              # padding left off
    base64.urlsafe_b64encode(PNG),                     # - and _ alphabet
    base64.urlsafe_b64encode(PNG).rstrip(b'='),
    b'data:image/png;base64,' + PNG_B64,               # a data URI
    b' '.join(PNG_B64[i:i + 76] for i in range(0, len(PNG_B64), 76)),
])
def test_base64_lines_carry_their_bytes(text):
  assert base64.urlsafe_b64encode(PNG) != PNG_B64  # the alphabets differ
  record = _ok(parse_line(text + b'\r\n', BASE64))
  assert record.data == PNG
  assert record.source is None
  assert record.line == text


@pytest.mark.parametrize('text, needle', [
    (b'!!!not base64!!!', 'invalid base64'),
    (PNG_B64[:40] + b'\xff\xfe' + PNG_B64[40:], 'invalid base64'),
    (b'QU=JD', 'invalid base64'),          # padding inside the data
    (b'QUJDR', 'invalid base64'),          # one character too many
    (b'data:image/png;base64,', 'empty base64 payload'),
    (b'data:image/png;base64,@@@@', 'invalid base64'),
])
def test_bad_base64_lines_are_bad_line_records(text, needle):
  record = _bad(parse_line(text + b'\n', BASE64), needle)
  assert record.line == text


def test_url_lines_are_not_decoded_as_base64():
  record = _ok(parse_line(PNG_B64))
  assert record.data is None and record.source == PNG_B64.decode()


@pytest.mark.parametrize('image_type', [URL, BASE64])
def test_json_lines(image_type):
  url = _ok(parse_line(b'{"url": "  /d/x.jpg ", "id": 7}', image_type))
  assert url.source == '/d/x.jpg' and url.data is None
  assert url.line == b'{"url": "  /d/x.jpg ", "id": 7}'
  image = _ok(parse_line(b'{"image": "' + PNG_B64 + b'"}\r\n', image_type))
  assert image.data == PNG and image.source is None
  # "url" wins when both are given.
  both = _ok(parse_line(b'{"url": "a.jpg", "image": "QUJD"}', image_type))
  assert both.source == 'a.jpg' and both.data is None
  utf8 = _ok(parse_line('{"url": "/d/图 é.jpg"}'.encode(), image_type))
  assert utf8.source == '/d/图 é.jpg'


@pytest.mark.parametrize('raw, needle', [
    (b'{"url": "x.jpg"', 'invalid JSON object line'),
    (b'{"url": "/x/\xff.jpg"}', 'invalid JSON object line'),
    (b'{"nothing": 1}', 'needs a non-empty "url" or "image"'),
    (b'{"url": "  "}', 'needs a non-empty "url" or "image"'),
    (b'{"url": 5}', 'needs a non-empty "url" or "image"'),
    (b'{"image": ""}', 'empty base64 payload'),
    (b'{"image": "QUJ\xc3\xa9"}', 'invalid base64'),
    (b'{"image": "\xff"}', 'invalid JSON object line'),
])
@pytest.mark.parametrize('image_type', [URL, BASE64])
def test_bad_json_lines_are_bad_line_records(raw, needle, image_type):
  record = _bad(parse_line(raw + b'\n', image_type), needle)
  assert record.line == raw


def _run(path, image_type, expected, chunk_lines=7):
  """Reads the list chunk by chunk (chunks of chunk_lines lines, spread
  over bundles in any order); the records, put in (chunk, index) order,
  are expected's, in input order."""
  plan = state.scan(str(path), chunk_lines)
  assert plan.total == len(expected)
  folder = str(path) + '.state'
  with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
    records = (p
               | beam.Create(list(range(plan.chunks))[::-1])
               | beam.Reshuffle()
               | beam.ParDo(ReadChunks(str(path), plan, folder, image_type)))
    # The source as bytes: a str holding surrogates has no coder.
    placed = (records
              | beam.Map(lambda r: ((r.chunk, r.index), (
                  r.line, r.source and os.fsencode(r.source), r.data,
                  r.error)))
              | beam.combiners.ToList()
              | beam.Map(lambda kvs: [v for _, v in sorted(kvs)]))
    assert_that(placed, equal_to([expected]))


def test_read_file_list_gives_one_record_per_non_blank_line(tmp_path):
  """A gzip list (Beam picks the codec by extension) with CRLF, a BOM,
  blank lines, non-UTF-8 bytes, duplicates and no final newline."""
  paths = [f'/data/img-{i:04d}.jpg'.encode() for i in range(1500)]
  odd = [b'/data/caf\xe9 \xff.jpg', b'{"url": "/x/\xff.jpg"}',
         b'{"image": "' + PNG_B64 + b'"}', b'{"broken"', paths[0]]
  body = [paths[0]] + odd + [b'', b'   ', b'\t'] + paths[1:]
  raw = b'\xef\xbb\xbf' + b'\r\n'.join(body) + b'\r\n\r\n' + b'/data/last.jpg'
  listing = tmp_path / 'list.txt.gz'
  listing.write_bytes(gzip.compress(raw))

  special = {odd[1]: (odd[1], None, None, BAD_LINE),
             odd[2]: (odd[2], None, PNG, None),
             odd[3]: (odd[3], None, None, BAD_LINE)}
  expected = [special.get(l, (l, l, None, None))
              for l in body if l.strip()]
  expected.append((b'/data/last.jpg', b'/data/last.jpg', None, None))
  assert len(expected) == 1 + len(odd) + 1499 + 1
  _run(listing, URL, expected)


def test_read_file_list_base64(tmp_path):
  lines = [PNG_B64, base64.urlsafe_b64encode(PNG[::-1]), b'@@', b'']
  listing = tmp_path / 'list.txt'
  listing.write_bytes(b'\n'.join(lines) + b'\n')
  _run(listing, BASE64, [
      (lines[0], None, PNG, None), (lines[1], None, PNG[::-1], None),
      (b'@@', None, None, BAD_LINE)], chunk_lines=1)
