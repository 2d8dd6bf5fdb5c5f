"""transforms/state.py (the list in chunks), CommitChunks (a chunk's lines in
input order, committed whole or not at all) and the empty list."""
import gzip
import json
import os
import random
import subprocess
import sys

import pytest

from ev_predict.transforms import state
from ev_predict.transforms.read import parse_line
from ev_predict.transforms.record import NOT_FOUND, Record
from ev_predict.transforms.write import CommitChunks

EV_PREDICT = os.path.join(os.path.dirname(sys.executable), 'ev-predict')

_PIECES = [b'a.jpg', b'  b.jpg  ', b'', b'   ', b'\t', b'\xef\xbb\xbf',
           b'\xef\xbb\xbf c.jpg', b'caf\xe9\xff.jpg', b'{"url": "x"}',
           b'd.jpg\r', b'\r', b'e e e']


def _non_blank(raw: bytes):
  """What transforms/read.py makes records of, in order (the oracle)."""
  return [l for l in raw.split(b'\n') if parse_line(l) is not None]


@pytest.mark.parametrize('seed', range(40))
def test_chunks_hold_every_non_blank_line_once_in_order(tmp_path, seed):
  rng = random.Random(seed)
  lines = [rng.choice(_PIECES) + (b'%d' % i if rng.random() < 0.7 else b'')
           for i in range(rng.randint(0, 120))]
  raw = b'\n'.join(lines) + rng.choice([b'', b'\n', b'\r\n', b'\n\n  '])
  name = 'list.txt.gz' if seed % 3 == 0 else 'list.txt'
  path = tmp_path / name
  path.write_bytes(gzip.compress(raw) if name.endswith('.gz') else raw)
  want = _non_blank(raw)
  chunk_lines = rng.randint(1, 9)
  plan = state.scan(str(path), chunk_lines)
  assert plan.total == len(want) == state.count_lines(str(path))
  assert all(c == chunk_lines for c in plan.counts[:-1])
  assert plan.offsets[0] == 0 and plan.offsets[-1] == len(raw)
  assert list(plan.offsets) == sorted(plan.offsets)
  got = [l for i in range(plan.chunks)
         for l in state.read_chunk(str(path), plan, i)]
  assert got == want
  assert state.ListPlan.from_json(json.loads(json.dumps(
      plan.to_json()))) == plan


def test_chunk_size_follows_the_list_and_the_workers():
  assert state.chunk_lines_for(0, 1) == 20
  assert state.chunk_lines_for(10_000, 1) == 50
  assert state.chunk_lines_for(10_000, 4) == 20
  assert state.chunk_lines_for(100_000_000, 1) == 5000
  # Whole batches: a chunk's last batch is padded, so 20 lines at batch 32
  # would classify 12 blank rows per chunk.
  assert state.chunk_lines_for(0, 1, 32) == 32
  assert state.chunk_lines_for(10_000, 1, 8) == 56
  assert state.chunk_lines_for(100_000_000, 1, 64) == 5056


def _commit(tmp_path, records, counts):
  fn = CommitChunks(None, counts, str(tmp_path / 'st'))
  fn.setup()
  fn.start_bundle()
  done = [i for r in records for i in fn.process(r)]
  return fn, done


def _record(chunk, index, ok=True):
  line = b'c%d-%d' % (chunk, index)
  if ok:
    return Record(line=line, chunk=chunk, index=index, probs=[0.25, 0.75])
  return Record(line=line, chunk=chunk, index=index, error=NOT_FOUND,
                message='gone')


def test_commit_chunks_writes_input_order_whatever_the_arrival(tmp_path):
  counts = (5, 3)
  records = [_record(c, i, ok=(i % 2 == 0)) for c, n in enumerate(counts)
             for i in range(n)]
  random.Random(7).shuffle(records)
  fn, done = _commit(tmp_path, records, counts)
  fn.finish_bundle()
  assert sorted(done) == [0, 1]
  folder = state.StateFolder(str(tmp_path / 'st'))
  plan = state.ListPlan(5, (0, 1, 2), counts)
  committed = state.committed(folder, plan)
  assert sorted(committed) == [0, 1]
  for c, n in enumerate(counts):
    ok, err = committed[c].files(folder)
    with open(ok, 'rb') as f:
      assert [l.split(b',')[0] for l in f.read().splitlines()] == [
          b'c%d-%d' % (c, i) for i in range(0, n, 2)]
    with open(err, 'rb') as f:
      assert f.read().splitlines() == [
          b'c%d-%d,  {"error": "not_found", "message": "gone"}' % (c, i)
          for i in range(1, n, 2)]
    assert committed[c].outcomes == {'ok': (n + 1) // 2,
                                     'not_found': n // 2}


def test_a_chunk_short_of_records_is_never_committed(tmp_path):
  counts = (3, 2)
  records = [_record(0, 0), _record(0, 2), _record(1, 0), _record(1, 1)]
  fn, done = _commit(tmp_path, records, counts)
  assert done == [1]
  with pytest.raises(RuntimeError, match='chunk 0 got 2 of 3'):
    fn.finish_bundle()
  folder = state.StateFolder(str(tmp_path / 'st'))
  assert not folder.is_done(0) and folder.is_done(1)


def test_a_record_twice_fails_the_bundle(tmp_path):
  fn, _ = _commit(tmp_path, [_record(0, 1)], (3,))
  with pytest.raises(RuntimeError, match='arrived twice'):
    list(fn.process(_record(0, 1)))


def test_a_committed_chunk_whose_file_was_cut_is_redone(tmp_path):
  fn, _ = _commit(tmp_path, [_record(0, 0), _record(0, 1)], (2,))
  fn.finish_bundle()
  folder = state.StateFolder(str(tmp_path / 'st'))
  plan = state.ListPlan(2, (0, 1), (2,))
  done = state.committed(folder, plan)
  ok, _ = done[0].files(folder)
  with open(ok, 'r+b') as f:
    f.truncate(10)
  assert state.committed(folder, plan) == {}


def _job(tmp_path, model_path, listing, *extra):
  out = tmp_path / 'out' / 'res.txt'
  return out, subprocess.run(
      [EV_PREDICT, f'-Dmodel_path={model_path}',
       f'-Dinput_oss_file={listing}', f'-Doutput_oss_file={out}', *extra],
      capture_output=True, text=True, timeout=300, check=False)


def test_an_empty_list_is_a_warning_and_empty_outputs(tmp_path, model_dirs):
  listing = tmp_path / 'empty.txt'
  listing.write_bytes(b'\n  \n\xef\xbb\xbf\n')
  out, proc = _job(tmp_path, model_dirs['uint8'], listing)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'ev-predict: warning: the file list {listing} has no lines' in \
      proc.stderr
  assert out.read_bytes() == b''
  assert (tmp_path / 'out' / 'res.txt.errors').read_bytes() == b''
  summary = json.loads((tmp_path / 'out' / 'res.txt.summary.json').read_text())
  assert summary['lines_read'] == 0 and summary['accounting_ok']
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'res.txt', 'res.txt.errors', 'res.txt.report.html',
      'res.txt.summary.json']


def test_an_empty_list_is_an_error_when_not_allowed(tmp_path, model_dirs):
  listing = tmp_path / 'empty.txt'
  listing.write_bytes(b'')
  out, proc = _job(tmp_path, model_dirs['uint8'], listing,
                   '-Dallow_empty=false')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f'ev-predict: error: the file list {listing} has no lines '
      '(-Dallow_empty=false)')
  assert os.listdir(out.parent) == []


def _batches(batch_size, counts, records):
  from ev_predict.transforms.inference import BatchByChunk
  fn = BatchByChunk(batch_size, counts)
  fn.start_bundle()
  out = [[r.line for r in b] for r in records for b in fn.process(r)]
  tail = [[r.line for r in w.value] for w in fn.finish_bundle()]
  return out, tail


def test_batches_are_cut_by_the_chunks_not_by_arrival():
  """A batch never spans two chunks, its last batch holds the rest, and a
  failed record goes on alone: a line's batch (and so its bits) depends on
  its chunk only, on any worker and in a resumed run."""
  records = [_record(0, 0), _record(0, 1, ok=False), _record(0, 2),
             _record(0, 3), _record(0, 4), _record(1, 0), _record(1, 1)]
  out, tail = _batches(2, [5, 2], records)
  assert out == [[b'c0-1'], [b'c0-0', b'c0-2'], [b'c0-3', b'c0-4'],
                 [b'c1-0', b'c1-1']]
  assert not tail
  # The same chunk 1 alone (a resumed run that skips chunk 0): same batches.
  assert _batches(2, [5, 2], records[5:])[0] == [[b'c1-0', b'c1-1']]
  # A chunk cut short upstream: what arrived is still passed on at the end.
  out, tail = _batches(2, [5, 2], records[:3])
  assert out == [[b'c0-1'], [b'c0-0', b'c0-2']] and tail == []
  out, tail = _batches(4, [5, 2], records[:3])
  assert out == [[b'c0-1']] and tail == [[b'c0-0', b'c0-2']]


def test_a_changed_batch_size_is_a_changed_key():
  """-Dbatch_size is not a results parameter, but the batch an image is
  classified in changes its last bits: a resumed run at another batch size
  (or another core count, which sets the default) starts fresh."""
  from ev_predict.pipeline import resume
  key = {'format': state.FORMAT, 'batch': 8, 'input_oss_file': 'l',
         'model_path': 'm', 'list': {}, 'model': [], 'parameters': {}}
  assert resume.differences(key, dict(key)) == []
  assert resume.differences(key, dict(key, batch=16)) == [
      'the batch size changed (8 -> 16; it changes the last bits of '
      'probabilities)']
