"""transforms/merge.py on crafted files: splitting output lines whose input
line looks like output itself, selecting a retry's lines, and merging a
retry into a job's files in input order, with duplicates, hostile and
non-UTF-8 lines; anything that does not line up is a MergeError and leaves
no output behind."""
import collections
import gzip
import random

import numpy as np
import pytest

from ev_predict.transforms import merge
from ev_predict.transforms.format import SEPARATOR, Formatter
from ev_predict.transforms.merge import MergeError
from ev_predict.transforms.record import Record

FMT = Formatter(['cat', 'dog, {"class": 1}'])
TRANSIENT = ('timeout', 'fetch')

# Input lines that look like output lines, or are not UTF-8.
HOSTILE = [
    b'http://h/a.jpg, {"error": "timeout", "message": "x"}',
    b'http://h/b.jpg, {"error": "x"}',
    b'/data/c.jpg, {"class": 1, "class_name": "dog", "class_probs": {}}',
    b'/data/\xff\xfe odd, {"error": "fetch", "message": "\xff"}.png',
    b'{"url": "http://h/d.jpg", "note": ", {\\"error\\": \\"x\\"}"}',
]


def result(line: bytes, p: float = 0.25) -> bytes:
  return FMT(Record(line=line, probs=np.array([p, 1 - p], np.float32)))[1]


def error(line: bytes, kind: str, message: str = 'it failed') -> bytes:
  return FMT(Record(line=line).fail(kind, message))[1]


def put(path, lines, end=b'\n'):
  path.write_bytes(b''.join(l + end for l in lines))
  return str(path)


def read(path):
  with open(path, 'rb') as f:
    data = f.read()
  assert not data or data.endswith(b'\n')
  return data.splitlines()


# ------------------------------------------------------------ split


@pytest.mark.parametrize('line', HOSTILE + [b'plain.jpg', b'a, b,c', b','])
def test_split_finds_the_real_separator(line):
  for record in (result(line), error(line, 'fetch'),
                 error(line, 'decode', 'quotes " and , {"error": "x"} in it'),
                 error(line, 'bad_line', '\\", {"error": "timeout"}')):
    value, part = merge.split_output_line(record)
    assert value == line
    assert record == line + SEPARATOR + part
    assert merge.split_output_line(record + b'\n') == (value, part)


def test_split_accepts_more_spaces_after_the_comma():
  line = HOSTILE[0]
  for record in (result(line), error(line, 'timeout')):
    wide = record.replace(line + SEPARATOR, line + b',   ', 1)
    assert merge.split_output_line(wide) == merge.split_output_line(record)
  part = merge.split_output_line(error(line, 'timeout'))[1]
  assert merge.parse_output_line(line + b', ' + part) == (line, 'timeout')


def test_parse_tells_results_from_errors():
  assert merge.parse_output_line(result(HOSTILE[1])) == (HOSTILE[1], 'ok')
  assert merge.parse_output_line(error(HOSTILE[2], 'not_found')) == (
      HOSTILE[2], 'not_found')


@pytest.mark.parametrize('line', [
    b'', b'just a line', b'x, {"error": "fetch"', b'x, {"error": "fetch"} ',
    b'x, ["not", "an object"]', b'x,{"error": "fetch", "message": ""}',
    b'x, {"error": "fetch", "message": "\xff"}'])
def test_split_refuses_what_is_no_output_line(line):
  with pytest.raises(MergeError):
    merge.split_output_line(line)


@pytest.mark.parametrize('line', [
    b'x, {"error": "fetch"}', b'x, {"error": 3, "message": "m"}',
    b'x, {"class": 1}', b'x, {"message": "m"}'])
def test_parse_refuses_objects_of_no_kind(line):
  with pytest.raises(MergeError):
    merge.parse_output_line(line)


# ------------------------------------------------------------ select


def test_select_gives_the_lines_of_the_kinds_in_order(tmp_path):
  lines = [error(HOSTILE[0], 'timeout'), error(b'a', 'not_found'),
           error(HOSTILE[3], 'fetch'), error(b'a', 'fetch'),
           error(b'a', 'fetch', 'again')]
  errors = put(tmp_path / 'errors', lines)
  assert list(merge.select(errors, TRANSIENT)) == [
      HOSTILE[0], HOSTILE[3], b'a', b'a']
  assert list(merge.select(errors, ['not_found'])) == [b'a']
  assert not list(merge.select(errors, ['decode']))


def test_select_refuses_a_result_in_the_error_file(tmp_path):
  errors = put(tmp_path / 'errors', [error(b'a', 'fetch'), result(b'b')])
  with pytest.raises(MergeError, match='line 2 of the error file'):
    list(merge.select(errors, TRANSIENT))


# ------------------------------------------------------------ merge


class Job:
  """A list and the four files of a job and its retry, made from the truth:
  each line's outcome in the job and, for a retried line, in the retry."""

  def __init__(self, tmp_path, lines, first, second=None, kinds=TRANSIENT,
               raw=None):
    self.tmp, self.lines, self.kinds = tmp_path, lines, kinds
    self.first = first
    retried = [i for i, o in enumerate(first) if o in kinds]
    second = list(second or ['ok'] * len(retried))
    assert len(second) == len(retried)
    self.final = list(first)
    for i, outcome in zip(retried, second):
      self.final[i] = outcome
    self.second = dict(zip(retried, second))
    self.list = str(tmp_path / 'list.txt')
    (tmp_path / 'list.txt').write_bytes(
        raw if raw is not None else b''.join(l + b'\n' for l in lines))
    self.old_r = put(tmp_path / 'r', [self.record(i, o, 1) for i, o in
                                      enumerate(first) if o == 'ok'])
    self.old_e = put(tmp_path / 'e', [self.record(i, o, 1) for i, o in
                                      enumerate(first) if o != 'ok'])
    new = [(i, self.second[i]) for i in retried]
    self.new_r = put(tmp_path / 'nr', [self.record(i, o, 2) for i, o in new
                                       if o == 'ok'])
    self.new_e = put(tmp_path / 'ne', [self.record(i, o, 2) for i, o in new
                                       if o != 'ok'])
    self.out_r, self.out_e = str(tmp_path / 'out_r'), str(tmp_path / 'out_e')

  def record(self, i, outcome, run):
    # Records of identical lines are identical within a run: which of
    # them a merge takes cannot show, only where it puts them.
    line = self.lines[i]
    if outcome == 'ok':
      return result(line, 0.25 if run == 1 else 0.75)
    return error(line, outcome, f'run {run}')

  def merge(self, **changes):
    args = dict(input_list=self.list, old_results=self.old_r,
                old_errors=self.old_e, new_results=self.new_r,
                new_errors=self.new_e, out_results=self.out_r,
                out_errors=self.out_e, kinds=self.kinds)
    args.update(changes)
    return merge.merge(**args)

  def expected(self):
    results, errors = [], []
    for i, outcome in enumerate(self.final):
      run = 2 if i in self.second else 1
      (results if outcome == 'ok' else errors).append(
          self.record(i, outcome, run))
    return results, errors


def test_merge_puts_each_retried_record_in_its_place(tmp_path):
  lines = [b'a.jpg', HOSTILE[0], b'c.jpg', HOSTILE[1], HOSTILE[3], b'f.jpg',
           HOSTILE[4], b'h.jpg']
  first = ['ok', 'timeout', 'not_found', 'fetch', 'fetch', 'ok', 'decode',
           'timeout']
  job = Job(tmp_path, lines, first, second=['ok', 'ok', 'timeout', 'ok'])
  counts = job.merge()
  results, errors = job.expected()
  assert read(job.out_r) == results
  assert read(job.out_e) == errors
  assert [merge.split_output_line(l)[0] for l in results] == [
      b'a.jpg', HOSTILE[0], HOSTILE[1], b'f.jpg', b'h.jpg']
  assert counts == {
      'lines_read': 8, 'succeeded': 5, 'failed': 3,
      'failed_by_kind': {'decode': 1, 'not_found': 1, 'timeout': 1},
      'retried': 4, 'recovered': 3, 'result_lines': 5, 'error_lines': 3,
      'result_bytes': sum(len(l) + 1 for l in results),
      'error_bytes': sum(len(l) + 1 for l in errors)}


def test_the_list_is_read_as_the_job_read_it(tmp_path):
  """BOM, CRLF, blank and space-only lines, surrounding whitespace: the
  records hold the lines stripped (read.parse_line)."""
  lines = [b'a.jpg', b'b c.jpg', HOSTILE[3]]
  raw = (b'\xef\xbb\xbf a.jpg\r\n\r\n   \n\tb c.jpg  \r\n' + HOSTILE[3])
  job = Job(tmp_path, lines, ['fetch', 'ok', 'timeout'], raw=raw)
  job.merge()
  assert (read(job.out_r), read(job.out_e)) == job.expected()


def test_a_gzip_list(tmp_path):
  lines = [b'a', b'b', b'c']
  raw = gzip.compress(b'a\nb\nc\n')
  job = Job(tmp_path, lines, ['ok', 'fetch', 'ok'], raw=raw)
  gz = tmp_path / 'list.txt.gz'
  gz.write_bytes(raw)
  job.merge(input_list=str(gz))
  assert (read(job.out_r), read(job.out_e)) == job.expected()


def test_identical_failed_lines_get_a_new_record_each(tmp_path):
  lines = [b'x', b'y', b'x', b'x']
  job = Job(tmp_path, lines, ['fetch', 'ok', 'fetch', 'timeout'],
            second=['ok', 'fetch', 'ok'])
  counts = job.merge()
  assert (read(job.out_r), read(job.out_e)) == job.expected()
  assert (counts['retried'], counts['recovered']) == (3, 2)
  assert read(job.out_e) == [error(b'x', 'fetch', 'run 2')]


@pytest.mark.parametrize('first', [
    # The first x failed, then z: only reading x's error first lines up.
    ['fetch', 'fetch', 'ok'],
    # The first x succeeded, then z: only reading its result first does.
    ['ok', 'ok', 'fetch'],
    ['fetch', 'ok', 'ok'], ['ok', 'fetch', 'fetch']])
def test_identical_lines_with_different_outcomes(tmp_path, first):
  """x's result and error are both at hand for the first x: which one is
  its record shows only later."""
  job = Job(tmp_path, [b'x', b'z', b'x'], first)
  job.merge()
  assert (read(job.out_r), read(job.out_e)) == job.expected()


def test_a_list_of_one_line_repeated(tmp_path):
  first = ['ok', 'fetch', 'timeout', 'not_found'] * 2500
  job = Job(tmp_path, [b'same.jpg'] * len(first), first,
            second=['ok', 'fetch'] * 2500)
  counts = job.merge()
  assert counts['lines_read'] == 10000
  assert (counts['succeeded'], counts['recovered']) == (5000, 2500)
  # Which of identical lines failed cannot be told: the same records.
  assert sorted(read(job.out_r)) == sorted(job.expected()[0])
  assert sorted(read(job.out_e)) == sorted(job.expected()[1])


def _interleaves(values, a, b):
  """Whether values is an interleaving of the sequences a and b (DP)."""
  reach = {0}
  for i, v in enumerate(values):
    reach = {j + 1 for j in reach if j < len(a) and a[j] == v} | {
        j for j in reach if i - j < len(b) and b[i - j] == v}
  return (len(a) in reach) and len(values) == len(a) + len(b)


@pytest.mark.parametrize('seed', range(40))
def test_random_lists_with_duplicates(tmp_path, seed):
  rng = random.Random(seed)
  lines = [rng.choice([b'p', b'q', b'r', HOSTILE[0], HOSTILE[3]])
           for _ in range(rng.randint(0, 30))]
  kinds = ['ok', 'ok', 'fetch', 'timeout', 'not_found']
  first = [rng.choice(kinds) for _ in lines]
  second = [rng.choice(kinds) for o in first if o in TRANSIENT]
  job = Job(tmp_path, lines, first, second)
  counts = job.merge()
  results, errors = job.expected()
  got_r, got_e = read(job.out_r), read(job.out_e)
  # The same records, laid out as one of the interleavings the files
  # allow: which of identical lines failed cannot be told from them.
  assert sorted(got_r) == sorted(results)
  assert sorted(got_e) == sorted(errors)
  assert _interleaves(lines, [merge.split_output_line(l)[0] for l in got_r],
                      [merge.split_output_line(l)[0] for l in got_e])
  if len(set(lines)) == len(lines):
    assert (got_r, got_e) == (results, errors)
  assert counts['lines_read'] == len(lines)
  assert counts['succeeded'] + counts['failed'] == len(lines)


def test_check_counts_a_job_that_lines_up(tmp_path):
  job = Job(tmp_path, [b'x', b'z', b'x', b'y'], ['fetch', 'fetch', 'ok', 'ok'])
  assert merge.check(job.list, job.old_r, job.old_e) == {
      'lines': 4, 'results': 2, 'errors': 2}


# ------------------------------------------------------------ mismatches


def _lines_of(path):
  return read(path)


def _mismatches(job, tmp_path):
  """(what changed, merge arguments) that must not line up."""
  lines = job.lines
  old_r, old_e = _lines_of(job.old_r), _lines_of(job.old_e)
  new_r, new_e = _lines_of(job.new_r), _lines_of(job.new_e)
  cases = {
      'a line added to the list': dict(input_list=put(
          tmp_path / 'l1', lines[:2] + [b'new.jpg'] + lines[2:])),
      'a line removed from the list': dict(input_list=put(
          tmp_path / 'l2', lines[:1] + lines[2:])),
      'a line changed in the list': dict(input_list=put(
          tmp_path / 'l3', [lines[0] + b'x'] + lines[1:])),
      # Two results (a result and an error side by side would line up
      # either way: the list's identity guards that, pipeline/retry.py).
      'two lines swapped in the list': dict(input_list=put(
          tmp_path / 'l4', [lines[4]] + lines[1:4] + [lines[0]] + lines[5:])),
      'a result missing': dict(old_results=put(tmp_path / 'r1', old_r[1:])),
      'a result twice': dict(old_results=put(
          tmp_path / 'r2', old_r[:1] + old_r)),
      'an error in the result file': dict(old_results=put(
          tmp_path / 'r3', old_r + [old_e[0]])),
      'a result in the error file': dict(old_errors=put(
          tmp_path / 'e1', old_e + [old_r[0]])),
      'the files swapped': dict(old_results=job.old_e, old_errors=job.old_r),
      'a line that is no record': dict(old_errors=put(
          tmp_path / 'e2', [b'garbage'] + old_e[1:])),
      'a retry record missing': dict(new_results=put(
          tmp_path / 'n1', new_r[1:])),
      'a retry record too many': dict(new_errors=put(
          tmp_path / 'n2', new_e + new_e[:1])),
      'a retry record for another line': dict(new_results=put(
          tmp_path / 'n3', [result(b'other.jpg')] + new_r[1:])),
      'retry records of another kind selection': dict(kinds=['fetch']),
  }
  return cases


def test_every_mismatch_is_a_merge_error_and_leaves_nothing(tmp_path):
  lines = [b'a.jpg', HOSTILE[0], b'c.jpg', HOSTILE[3], b'e.jpg', b'f.jpg']
  job = Job(tmp_path, lines, ['ok', 'timeout', 'fetch', 'not_found', 'ok',
                              'fetch'], second=['ok', 'fetch', 'ok'])
  job.merge()  # as made, it lines up
  assert (read(job.out_r), read(job.out_e)) == job.expected()
  for path in (job.out_r, job.out_e):
    (tmp_path / path).unlink()
  for what, changes in _mismatches(job, tmp_path).items():
    with pytest.raises(MergeError):
      job.merge(**changes)
      pytest.fail(what)
    assert not (tmp_path / 'out_r').exists(), what
    assert not (tmp_path / 'out_e').exists(), what


def test_the_error_names_the_line(tmp_path):
  job = Job(tmp_path, [b'a.jpg', b'b.jpg', b'c.jpg'], ['ok', 'fetch', 'ok'])
  with pytest.raises(MergeError, match=r"line 3 \(b'new.jpg'\) has no record"):
    job.merge(input_list=put(tmp_path / 'l', [b'a.jpg', b'b.jpg',
                                              b'new.jpg']))
  with pytest.raises(MergeError, match='records left over'):
    job.merge(input_list=put(tmp_path / 'l', [b'a.jpg', b'b.jpg']))
  with pytest.raises(MergeError):
    merge.check(put(tmp_path / 'l', [b'a.jpg']), job.old_r, job.old_e)


def test_existing_outputs_are_never_overwritten(tmp_path):
  job = Job(tmp_path, [b'a.jpg'], ['fetch'])
  (tmp_path / 'out_e').write_bytes(b'mine\n')
  with pytest.raises(MergeError, match='exists'):
    job.merge()
  assert (tmp_path / 'out_e').read_bytes() == b'mine\n'
  assert not (tmp_path / 'out_r').exists()


def test_memory_does_not_hold_the_files(tmp_path):
  """About 20 MB of files (long lines, in pairs): the merge holds none of them,
  only a chunk per file and a small window of the readings it has open."""
  import tracemalloc  # pylint: disable=import-outside-toplevel
  n = 5000
  lines = [b'http://h/%s/%d.jpg' % (b'x' * 2000, i // 2) for i in range(n)]
  rng = random.Random(1)
  first = [rng.choice(['ok', 'ok', 'ok', 'fetch']) for _ in lines]
  job = Job(tmp_path, lines, first)
  size = sum((tmp_path / f).stat().st_size for f in ('r', 'e', 'list.txt'))
  assert size > 19 << 20
  tracemalloc.start()
  counts = job.merge()
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert counts['lines_read'] == n and counts['recovered'] == first.count(
      'fetch')
  assert peak < 2 << 20, peak
  assert collections.Counter(read(job.out_r)) == collections.Counter(
      job.expected()[0])


def test_merge_over_oss(tmp_path, oss_env):
  """The same merge with every file on OSS (the fake server, real oss2)."""
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=C0415
  lines = [b'a.jpg', HOSTILE[0], b'x', HOSTILE[3], b'x']
  job = Job(tmp_path, lines, ['ok', 'timeout', 'fetch', 'not_found', 'ok'],
            second=['ok', 'fetch'])
  remote = {}
  for name in ('list.txt', 'r', 'e', 'nr', 'ne'):
    remote[name] = f'oss://out/merge/{name}'
    with FileSystems.create(remote[name]) as f:
      f.write((tmp_path / name).read_bytes())
  out_r, out_e = 'oss://out/merge/out_r', 'oss://out/merge/out_e'
  counts = job.merge(input_list=remote['list.txt'], old_results=remote['r'],
                     old_errors=remote['e'], new_results=remote['nr'],
                     new_errors=remote['ne'], out_results=out_r,
                     out_errors=out_e)
  got = []
  for path in (out_r, out_e):
    with FileSystems.open(path) as f:
      got.append(f.read().splitlines())
  assert tuple(got) == job.expected()
  assert list(merge.select(remote['e'], ['not_found'])) == [HOSTILE[3]]
  assert (counts['retried'], counts['recovered']) == (2, 1)
  # A mismatch on OSS leaves no output object behind either.
  with pytest.raises(MergeError):
    job.merge(input_list=remote['r'], old_results=remote['r'],
              old_errors=remote['e'], new_results=remote['nr'],
              new_errors=remote['ne'], out_results=out_r + '2',
              out_errors=out_e + '2')
  assert not FileSystems.exists(out_r + '2')
  assert not FileSystems.exists(out_e + '2')
