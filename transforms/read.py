"""Read the file list: one record per non-blank line, whatever the line holds,
read chunk by chunk (transforms/state.py)."""
import base64
import binascii
import json
from typing import Optional

import apache_beam as beam

from ev_predict.transforms import progress, state
from ev_predict.transforms.record import BAD_LINE, Record

URL = 'url'
BASE64 = 'base64'

_BOM = b'\xef\xbb\xbf'


def parse_line(raw: bytes, image_type: str = URL) -> Optional[Record]:
  """Turns one raw line into a record; None only for a blank line."""
  line = raw.strip()
  if line.startswith(_BOM):
    line = line[len(_BOM):].strip()
  if not line:
    return None
  record = Record(line=line)
  if line.startswith(b'{'):
    return _parse_json_line(record)
  if image_type == BASE64:
    return _with_base64(record, line)
  # Paths may hold bytes that are not UTF-8; surrogateescape keeps them
  # addressable on a local file system.
  return record.but(source=line.decode('utf-8', 'surrogateescape'))


def _parse_json_line(record: Record) -> Record:
  try:
    obj = json.loads(record.line.decode('utf-8'))
  except (UnicodeDecodeError, ValueError) as e:
    return record.fail(BAD_LINE, f'invalid JSON object line: {e}')
  if not isinstance(obj, dict):
    return record.fail(BAD_LINE, 'JSON line is not an object')
  if obj.get('empty') is True and 'row' in obj:
    # A table row whose image cell is null or blank (transforms/table.py).
    return record.fail(BAD_LINE, 'the image cell is empty')
  if isinstance(obj.get('url'), str) and obj['url'].strip():
    return record.but(source=obj['url'].strip())
  if isinstance(obj.get('image'), str):
    return _with_base64(record, obj['image'].encode('ascii', 'replace'))
  return record.fail(
      BAD_LINE, 'JSON line needs a non-empty "url" or "image" string')


def _with_base64(record: Record, text: bytes) -> Record:
  text = text.strip()
  if text.startswith(b'data:'):
    # A data URI: the payload follows the first comma.
    _, _, text = text.partition(b',')
  text = b''.join(text.split())
  if not text:
    return record.fail(BAD_LINE, 'empty base64 payload')
  padded = text + b'=' * (-len(text) % 4)
  try:
    altchars = b'-_' if (b'-' in text or b'_' in text) else None
    data = base64.b64decode(padded, altchars=altchars, validate=True)
  except (binascii.Error, ValueError) as e:
    return record.fail(BAD_LINE, f'invalid base64: {e}')
  return record.but(data=data)


class ReadChunks(beam.DoFn):
  """Chunk index -> its records, each knowing its place (chunk, index).

  A chunk already committed (by an earlier attempt of this job: a runner
  retrying a task, a restarted launcher) is skipped, not read again."""

  def __init__(self, path: str, plan: state.ListPlan, folder: str,
               image_type: str = URL):
    self._path = path
    self._plan = plan
    self._folder = folder
    self._image_type = image_type

  def setup(self):
    self._state = state.StateFolder(self._folder)
    self._progress = progress.reporter(self._state.progress)

  def process(self, index: int):
    if self._state.is_done(index):
      return
    self._progress.phase('processing')
    # Bytes, not str: a list with a stray non-UTF-8 line must not fail the
    # read; the line is echoed back verbatim in its record.
    for i, raw in enumerate(state.read_chunk(self._path, self._plan, index)):
      record = parse_line(raw, self._image_type)
      yield record.but(chunk=index, index=i)
