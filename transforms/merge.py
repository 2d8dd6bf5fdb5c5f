"""Merging a retry into a job's outputs, streamed, over any Beam file system.

A job's result and error files list their lines in input order, each line
``<input line>, <JSON object>``; a retry job (pipeline/retry.py) ran again the
lines of some error kinds and wrote its own two files, in the order of those
lines. merge() walks the input list and writes one result and one error file
in input order: every line keeps its record, except a retried one, which takes
its record from the retry.

Which record belongs to which line is decided, never assumed:

- An output line has one split into ``<input line>`` and a JSON object: the
  last ``,`` + spaces + ``{`` after which the rest is exactly one JSON object
  (an input line may itself hold ``, {"error": ...``; the object cannot end
  inside it, and a ``{`` inside a JSON string is escaped out of any other
  reading). So every record names its line's bytes, and a result has
  ``class``, an error ``error``.
- Result and error files are each in input order, so the input list is an
  interleaving of the two. Where identical lines have different outcomes, the
  files can be read in two ways for a while ([X, Z, X] with X failed once:
  which X?); both readings are followed until one fails (at most
  MAX_READINGS at once, MAX_PENDING steps), and identical lines are
  interchangeable, so any reading that lasts to the end is a right one.
  Consecutive identical lines are taken as one run, so a list of one line
  repeated is one step, not a branching.

Memory stays bounded whatever the sizes: every file is read as a stream (the
decisions in a first reading, keeping a 16-byte digest per line in the window
of open readings, the copying in a second), and only one line is ever held
whole. Anything that does not line up (a line without its record, a record
without its line, a record of the wrong kind, more or fewer retry records) is a
MergeError, and the partial outputs are removed: a merged file never loses or
duplicates a line.
"""
import collections
import hashlib
import json
import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ev_predict.transforms import read, storage

OK = 'ok'
_CHUNK = 1 << 16
# ',' + one or more spaces + '{': we write two (format.SEPARATOR, PAI's
# line); one or more are accepted.
_SEPARATOR = re.compile(rb',( +)\{')
# Open readings of the files at once, and steps (runs of identical lines)
# a choice between readings may stay open; beyond either, refuse.
MAX_READINGS = 64
MAX_PENDING = 100_000


class MergeError(ValueError):
  """The files do not line up (the list or a file changed, or they are not
  of one job); nothing merged is kept."""


# ------------------------------------------------------------ one output line


def split_output_line(line: bytes) -> Tuple[bytes, bytes]:
  """``<input line>, <JSON>`` -> (input line, JSON object's bytes); raises
  MergeError for anything else. For an error line the split is the last
  ``, {"error": "`` (a message's quotes are escaped); for a result line the
  separator before the final JSON object."""
  value, part, _ = _split(line)
  return value, part


def parse_output_line(line: bytes) -> Tuple[bytes, str]:
  """(input line, outcome): 'ok' for a result, else the error kind."""
  value, _, obj = _split(line)
  outcome = _outcome(obj)
  if outcome is None:
    raise MergeError(f'neither a result nor an error: {_preview(line)}')
  return value, outcome


def _split(line: bytes) -> Tuple[bytes, bytes, dict]:
  if line.endswith(b'\n'):
    line = line[:-1]
  for match in reversed(list(_SEPARATOR.finditer(line))):
    part = line[match.end() - 1:]
    obj = _object(part)
    if obj is not None:
      return line[:match.start()], part, obj
  raise MergeError(f'not an output line ("<input line>, <JSON object>"): '
                   f'{_preview(line)}')


def _object(part: bytes) -> Optional[dict]:
  """part as a JSON object, if it is exactly one."""
  # A '{' inside a JSON string is followed by an escaped quote: no object
  # starts there (and json need not be asked).
  if not part.endswith(b'}') or part[1:2] not in (b'"', b'}', b' '):
    return None
  try:
    obj = json.loads(part.decode('utf-8'))
  except (UnicodeDecodeError, ValueError, RecursionError):
    return None
  return obj if isinstance(obj, dict) else None


def _outcome(obj: Optional[dict]) -> Optional[str]:
  if obj is None:
    return None
  if 'error' in obj:
    kind = obj['error']
    return kind if isinstance(kind, str) and kind and kind != OK and \
        set(obj) == {'error', 'message'} else None
  return OK if 'class_probs' in obj and (
      'class' in obj or 'classes' in obj) else None


def _preview(data: bytes, limit: int = 80) -> str:
  return repr(data[:limit]) + ('...' if len(data) > limit else '')


# ------------------------------------------------------------ reading


def _lines(path: str, compression: str) -> Iterator[bytes]:
  """A file's lines without their b'\\n' (as Beam's text reader splits),
  streamed; one line is held at a time."""
  with FileSystems.open(path, compression_type=compression) as f:
    pending: List[bytes] = []
    while True:
      chunk = f.read(_CHUNK)
      if not chunk:
        break
      start = 0
      while True:
        end = chunk.find(b'\n', start)
        if end < 0:
          pending.append(chunk[start:])
          break
        pending.append(chunk[start:end])
        yield b''.join(pending)
        pending = []
        start = end + 1
    tail = b''.join(pending)
    if tail:
      yield tail


def _input_values(path: str) -> Iterator[Tuple[int, bytes]]:
  """(line number, line) of each non-blank line of a file list, the line as
  its record holds it (transforms/read.py parse_line: stripped, no BOM)."""
  # The list is read as the job read it: compression from the extension.
  for number, raw in enumerate(_lines(path, CompressionTypes.AUTO), 1):
    record = read.parse_line(raw)
    if record is not None:
      yield number, record.line


def _output_lines(path: str) -> Iterator[bytes]:
  # Outputs are plain bytes whatever their names (transforms/write.py).
  return _lines(path, CompressionTypes.UNCOMPRESSED)


class _File:
  """Which file a record came from, for messages and kind checks."""

  def __init__(self, path: str, name: str, results: bool):
    self.path, self.name, self.results = path, name, results

  def records(self) -> Iterator[Tuple[int, bytes, str]]:
    """(line number, input line, outcome) of each line, checked: a result
    file holds results only, an error file errors only."""
    for number, line in enumerate(_output_lines(self.path), 1):
      yield (number, *self.check(number, line))

  def check(self, number: int, line: bytes) -> Tuple[bytes, str]:
    try:
      value, outcome = parse_output_line(line)
    except MergeError as e:
      raise MergeError(f'{self.where(number)}: {e}') from None
    if (outcome == OK) != self.results:
      raise MergeError(f'{self.where(number)} is '
                       f'{"an error" if self.results else "a result"}: '
                       f'{_preview(line)}')
    return value, outcome

  def where(self, number: int) -> str:
    return f'line {number} of the {self.name} {self.path}'


def select(error_file: str, kinds: Iterable[str]) -> Iterator[bytes]:
  """The input lines of the errors of the given kinds, in the error file's
  order (a retry's list). MergeError for a line that is not an error."""
  kinds = frozenset(kinds)
  for _, value, kind in _File(error_file, 'error file', False).records():
    if kind in kinds:
      yield value


# ------------------------------------------------------------ lining up


_Run = collections.namedtuple('_Run', 'digest count number preview')


def _runs(items: Iterable[Tuple[int, bytes]]) -> Iterator[_Run]:
  """Consecutive identical values as one run (digest, count, line number
  of its first, a preview of the value)."""
  run = None
  for number, value in items:
    digest = hashlib.blake2b(value, digest_size=16).digest()
    if run is not None and run.digest == digest:
      run = run._replace(count=run.count + 1)
      continue
    if run is not None:
      yield run
    run = _Run(digest, 1, number, _preview(value))
  if run is not None:
    yield run


class _Stream:
  """The runs of one record file, read once; kept from the earliest run an
  open reading still needs."""

  def __init__(self, runs: Iterator[_Run], name: str):
    self._runs, self.name = runs, name
    self._kept = collections.deque()
    self._base = 0
    self._done = False

  def run(self, index: int) -> Optional[_Run]:
    while not self._done and index >= self._base + len(self._kept):
      nxt = next(self._runs, None)
      if nxt is None:
        self._done = True
      else:
        self._kept.append(nxt)
    i = index - self._base
    return self._kept[i] if i < len(self._kept) else None

  def forget(self, index: int) -> None:
    while self._base < index and self._kept:
      self._kept.popleft()
      self._base += 1

  def head(self, index: int, offset: int) -> str:
    run = self.run(index)
    if run is None:
      return f'the {self.name} has no more lines'
    return (f'the {self.name}\'s next is line {run.number + offset}, for '
            f'{run.preview}')


class _Reading:
  """One way of reading the files: (run, offset) in each; splits taken."""
  __slots__ = ('state', 'parent', 'split')

  def __init__(self, state, parent, split):
    self.state, self.parent, self.split = state, parent, split


def _advance(index: int, offset: int, taken: int, run: Optional[_Run]):
  offset += taken
  if run is not None and offset == run.count:
    return index + 1, 0
  return index, offset


def _splits(count: int, in_a: int, in_b: int) -> List[int]:
  """How many of count identical lines the first file can give: all of its
  identical records at hand, or all but the second file's. Any other split
  leaves the same line at both heads, which the next (different) line
  cannot take."""
  options = []
  if 0 <= count - in_a <= in_b:
    options.append(in_a)
  if 0 <= count - in_b <= in_a and count - in_b not in options:
    options.append(count - in_b)
  return options


def _settle(reading: _Reading) -> List[Tuple[int, int]]:
  """The splits since the last settled step; reading becomes the root."""
  splits = []
  node = reading
  while node.parent is not None:
    splits.append(node.split)
    node = node.parent
  reading.parent = reading.split = None
  return splits[::-1]


def _align(values: Iterator[_Run], a: _Stream, b: _Stream,
           what: str) -> Iterator[Tuple[int, int]]:
  """For each run of identical values, in order: how many of its records
  come from a and how many from b (a's first)."""
  live = [_Reading((0, 0, 0, 0), None, None)]
  pending = 0
  for run in values:
    following = {}
    for reading in live:
      ia, oa, ib, ob = reading.state
      ra, rb = a.run(ia), b.run(ib)
      in_a = ra.count - oa if ra is not None and ra.digest == run.digest else 0
      in_b = rb.count - ob if rb is not None and rb.digest == run.digest else 0
      for x in _splits(run.count, in_a, in_b):
        state = (*_advance(ia, oa, x, ra), *_advance(ib, ob, run.count - x, rb))
        if state not in following:
          following[state] = _Reading(state, reading, (x, run.count - x))
    if not following:
      ia, oa, ib, ob = live[0].state
      raise MergeError(
          f'{what}: line {run.number} ({run.preview}) has no record where '
          f'one is due: {a.head(ia, oa)}; {b.head(ib, ob)}')
    live = list(following.values())
    pending += len(live)
    if len(live) == 1:
      yield from _settle(live[0])
      pending = 0
    elif len(live) > MAX_READINGS or pending > MAX_PENDING:
      raise MergeError(
          f'{what}: too many identical lines with different outcomes to line '
          f'up (at line {run.number}, {run.preview})')
    a.forget(min(r.state[0] for r in live))
    b.forget(min(r.state[2] for r in live))
  ends = [r for r in live
          if a.run(r.state[0]) is None and b.run(r.state[2]) is None]
  if not ends:
    ia, oa, ib, ob = live[0].state
    raise MergeError(f'{what}: records left over after the last line: '
                     f'{a.head(ia, oa)}; {b.head(ib, ob)}')
  yield from _settle(ends[0])


def _record_runs(source: _File) -> Iterator[_Run]:
  return _runs((n, value) for n, value, _ in source.records())


def check(input_list: str, results: str, errors: str) -> Dict[str, int]:
  """Whether a job's two files hold exactly one record per non-blank line
  of its list, in its order: {'lines', 'results', 'errors'} or
  MergeError."""
  counts = {'lines': 0, 'results': 0, 'errors': 0}
  r_file = _File(results, 'result file', True)
  e_file = _File(errors, 'error file', False)
  for x, y in _align(_runs(_input_values(input_list)),
                     _Stream(_record_runs(r_file), r_file.name),
                     _Stream(_record_runs(e_file), e_file.name),
                     f'the input list {input_list}'):
    counts['lines'] += x + y
    counts['results'] += x
    counts['errors'] += y
  return counts


# ------------------------------------------------------------ merging


class _Writer:

  def __init__(self, path: str):
    self.path = path
    self.lines = self.bytes = 0
    self._f = FileSystems.create(
        path, compression_type=CompressionTypes.UNCOMPRESSED)

  def write(self, line: bytes) -> None:
    self._f.write(line + b'\n')
    self.lines += 1
    self.bytes += len(line) + 1

  def close(self) -> None:
    self._f.close()


def _next(lines: Iterator[bytes], source: _File, number: int) -> bytes:
  line = next(lines, None)
  if line is None:
    raise MergeError(f'{source.path} ended early (at line {number}); it '
                     'changed while it was merged')
  return line


def merge(input_list: str, old_results: str, old_errors: str,
          new_results: str, new_errors: str, out_results: str,
          out_errors: str, kinds: Iterable[str]) -> Dict:
  """Writes out_results and out_errors (new files): for each non-blank line
  of input_list, in order, its record from old_results or old_errors, or,
  for an error of one of kinds, its record from the retry's new_results or
  new_errors (in the order of those errors). Returns the counts:
  lines_read, succeeded, failed, failed_by_kind, retried, recovered,
  result_lines/error_lines, result_bytes/error_bytes. MergeError when
  anything does not line up; the outputs are then removed."""
  kinds = frozenset(kinds)
  for path in (out_results, out_errors):
    if FileSystems.exists(path):
      raise MergeError(f'{path} exists; merge writes new files only')
  written = []
  try:
    for path in (out_results, out_errors):
      written.append(_Writer(path))
    counts = _merge(input_list, old_results, old_errors, new_results,
                    new_errors, written[0], written[1], kinds)
    for w in written:
      w.close()
  except BaseException:
    for w in written:
      try:
        w.close()
      except Exception:  # pylint: disable=broad-except
        pass  # the first error is the one to report
      _remove(w.path)
    raise
  counts.update(result_lines=written[0].lines, error_lines=written[1].lines,
                result_bytes=written[0].bytes, error_bytes=written[1].bytes)
  return counts


def _remove(path: str) -> None:
  try:
    if FileSystems.exists(path):
      storage.for_path(path).delete_object(path)
  except Exception:  # pylint: disable=broad-except
    pass


def _merge(input_list, old_results, old_errors, new_results, new_errors,
           out_results: _Writer, out_errors: _Writer, kinds) -> Dict:
  old_r = _File(old_results, 'result file', True)
  old_e = _File(old_errors, 'error file', False)
  new_r = _File(new_results, 'retry\'s result file', True)
  new_e = _File(new_errors, 'retry\'s error file', False)
  # Decisions: which file each line's record is in (first reading of the
  # files), and the same for each retried line among the retry's files.
  lines_plan = _align(_runs(_input_values(input_list)),
                      _Stream(_record_runs(old_r), old_r.name),
                      _Stream(_record_runs(old_e), old_e.name),
                      f'the input list {input_list}')
  retried = _runs((n, value) for n, value, kind in old_e.records()
                  if kind in kinds)
  retry_plan = (side for x, y in _align(
      retried, _Stream(_record_runs(new_r), new_r.name),
      _Stream(_record_runs(new_e), new_e.name),
      f'the retried lines of {old_errors}') for side in [0] * x + [1] * y)
  # The copying (second reading).
  results, errors = _output_lines(old_results), _output_lines(old_errors)
  retry_files = ((_output_lines(new_results), new_r, out_results),
                 (_output_lines(new_errors), new_e, out_errors))
  numbers = collections.Counter()
  by_kind = collections.Counter()
  lines = succeeded = retried_count = recovered = 0
  for x, y in lines_plan:
    lines += x + y
    for _ in range(x):
      numbers[old_r] += 1
      out_results.write(_next(results, old_r, numbers[old_r]))
      succeeded += 1
    for _ in range(y):
      numbers[old_e] += 1
      line = _next(errors, old_e, numbers[old_e])
      value, kind = old_e.check(numbers[old_e], line)
      if kind not in kinds:
        out_errors.write(line)
        by_kind[kind] += 1
        continue
      retried_count += 1
      side = next(retry_plan, None)
      if side is None:
        raise MergeError(f'the retry has fewer records than the {retried_count}'
                         f' retried lines of {old_errors}')
      lines_in, source, out = retry_files[side]
      numbers[source] += 1
      new_line = _next(lines_in, source, numbers[source])
      new_value, new_kind = source.check(numbers[source], new_line)
      if new_value != value:
        raise MergeError(f'{source.where(numbers[source])} is for '
                         f'{_preview(new_value)}, not {_preview(value)}')
      out.write(new_line)
      if new_kind == OK:
        succeeded += 1
        recovered += 1
      else:
        by_kind[new_kind] += 1
  if next(retry_plan, None) is not None:
    raise MergeError(f'the retry has more records than the retried lines of '
                     f'{old_errors}')
  for lines_in, source in ((results, old_r), (errors, old_e),
                           (retry_files[0][0], new_r),
                           (retry_files[1][0], new_e)):
    if next(lines_in, None) is not None:
      raise MergeError(f'{source.path} has more lines than were merged; it '
                       'changed while it was merged')
  return {
      'lines_read': lines,
      'succeeded': succeeded,
      'failed': sum(by_kind.values()),
      'failed_by_kind': dict(sorted(by_kind.items())),
      'retried': retried_count,
      'recovered': recovered,
  }
