"""transforms/write.py on local files: output names, shard concatenation,
line counts, the three-file commit and its roll-back, the clean-up of dead
runs (only ours), and the summary's accounting. End-to-end behaviour (OSS,
refused outputs, interrupted jobs) is in test_output_safety/test_interrupts.
"""
import json
import os
import socket
import subprocess

import pytest
from apache_beam.io.filesystems import FileSystems

from ev_predict.transforms import write
from ev_predict.transforms.write import OutputPaths

RUN = '20260102-030405-0a1b2c3d'
OTHER = '20250101-000000-deadbeef'
_MB8 = 8 << 20   # larger than any one read a streaming copy makes


def _files(folder):
  """{name: bytes} of the plain files in folder, and '<dir>/' for folders."""
  found = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if os.path.isdir(path):
      found[name + '/'] = sorted(os.listdir(path))
    else:
      with open(path, 'rb') as f:
        found[name] = f.read()
  return found


def _put(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


def test_output_paths_for_run():
  paths = OutputPaths.for_run('/o/res.txt', None, RUN)
  assert paths.targets == ('/o/res.txt', '/o/res.txt.errors',
                           '/o/res.txt.summary.json')
  assert paths.state == '/o/res.txt.ev-resume'
  assert paths.run_id == RUN
  assert paths.staging('/o/res.txt.errors') == f'/o/res.txt.errors.tmp-{RUN}'
  assert paths.backup('/o/res.txt') == f'/o/res.txt.bak-{RUN}'
  # The run's markers live in the job's state folder, one name per run.
  assert os.path.dirname(paths.journal) == paths.state
  assert os.path.dirname(paths.staging_marker) == paths.state
  assert paths.staging_marker != paths.journal
  assert RUN in paths.journal and RUN in paths.staging_marker
  given = OutputPaths.for_run('oss://b/r.txt', 'oss://c/e.txt', RUN)
  assert given.targets == ('oss://b/r.txt', 'oss://c/e.txt',
                           'oss://b/r.txt.summary.json')
  assert given.state == 'oss://b/r.txt.ev-resume'
  assert given.journal == f'oss://b/r.txt.ev-resume/commit-{RUN}'


def test_concatenate_joins_files_in_the_order_given(tmp_path):
  shards = []
  for i, data in ((2, b'c1\nc2\n'), (0, b''), (10, b'k\n'), (1, b'b\xff\0'),
                  (3, os.urandom(_MB8 + 3))):
    shards.append(str(tmp_path / f'c{i:08d}.ok'))
    _put(shards[-1], data)
  target = str(tmp_path / 'out.tmp')
  write.concatenate_in_order(shards, target)
  want = b''.join(open(s, 'rb').read() for s in shards)
  with open(target, 'rb') as f:
    assert f.read() == want
  assert len(want) > _MB8


def test_concatenate_of_no_files_is_an_empty_file(tmp_path):
  target = tmp_path / 'empty.tmp'
  write.concatenate_in_order([], str(target))
  assert target.read_bytes() == b''


@pytest.mark.parametrize('data, want', [
    (b'', (0, 0)),
    (b'\n', (1, 1)),
    (b'a\nb\n', (2, 4)),
    (b'a\nb', (2, 3)),                       # no final newline
    (b'a\r\n\r\nb\n', (3, 7)),
    (b'x' * 15 + b'\n', None),
])
def test_count_lines(tmp_path, data, want):
  if want is None:
    # Past one read, with a newline exactly at the 8 MiB mark and none at
    # the end: the last line still counts once.
    data = data * (_MB8 // 16) + b'tail'
    want = (_MB8 // 16 + 1, len(data))
  path = tmp_path / 'f'
  path.write_bytes(data)
  assert write.count_lines(str(path)) == want


def _staged(tmp_path, old=True, errors=None):
  """A run whose three files are staged; old targets present when old."""
  paths = OutputPaths.for_run(str(tmp_path / 'res.txt'), errors, RUN)
  os.makedirs(paths.state)
  for target in paths.targets:
    if old:
      _put(target, b'old ' + os.path.basename(target).encode())
    _put(paths.staging(target), b'new ' + os.path.basename(target).encode())
  return paths


def _contents(paths):
  return [open(t, 'rb').read().split()[0] if os.path.exists(t) else None
          for t in paths.targets]


@pytest.mark.parametrize('old', [True, False])
def test_commit_replaces_all_three(tmp_path, old):
  paths = _staged(tmp_path, old=old,
                  errors=str(tmp_path / 'elsewhere' / 'e.txt'))
  write.commit(paths)
  assert _contents(paths) == [b'new'] * 3
  assert open(paths.errors, 'rb').read() == b'new e.txt'
  # No staged file, backup or journal left; the run's folder stays (the
  # launcher removes it after the commit).
  assert sorted(_files(tmp_path)) == [
      'elsewhere/', 'res.txt', 'res.txt.ev-resume/',
      'res.txt.summary.json']
  assert _files(tmp_path / 'elsewhere') == {'e.txt': b'new e.txt'}
  assert os.listdir(paths.state) == []


def test_commit_without_a_staged_file_changes_nothing(tmp_path):
  paths = _staged(tmp_path)
  os.remove(paths.staging(paths.summary))
  before = _files(tmp_path)
  with pytest.raises(IOError, match='is missing'):
    write.commit(paths)
  assert _files(tmp_path) == before


@pytest.mark.parametrize('failing', [1, 2, 3, 4, 5, 6])
def test_failed_commit_leaves_the_old_three(tmp_path, monkeypatch, failing):
  """The n-th rename of the commit fails: whatever moved is moved back,
  the staged files go, and the error is raised."""
  paths = _staged(tmp_path)
  rename = FileSystems.rename
  calls = []

  def flaky(src, dest):
    calls.append(src)
    if len(calls) == failing:
      raise OSError('disk on fire')
    return rename(src, dest)

  monkeypatch.setattr(FileSystems, 'rename', staticmethod(flaky))
  with pytest.raises(OSError, match='disk on fire'):
    write.commit(paths)
  assert _contents(paths) == [b'old'] * 3
  monkeypatch.undo()
  assert len(calls) >= failing
  assert sorted(_files(tmp_path)) == [
      'res.txt', 'res.txt.errors', 'res.txt.ev-resume/',
      'res.txt.summary.json']


def test_failed_commit_removes_new_files_where_none_was(tmp_path,
                                                        monkeypatch):
  paths = _staged(tmp_path, old=False)
  rename = FileSystems.rename
  calls = []

  def flaky(src, dest):
    calls.append(src)
    if len(calls) == 3:   # result and errors are in, the summary fails
      raise OSError('disk on fire')
    return rename(src, dest)

  monkeypatch.setattr(FileSystems, 'rename', staticmethod(flaky))
  with pytest.raises(OSError):
    write.commit(paths)
  monkeypatch.undo()
  assert _contents(paths) == [None] * 3
  assert sorted(_files(tmp_path)) == ['res.txt.ev-resume/']


def _died_in_commit(tmp_path, moved_in, old=(True, True, True)):
  """What a run that died inside commit() leaves: the journal, backups of
  the old targets, the first `moved_in` new files in place, the rest
  staged."""
  paths = OutputPaths.for_run(str(tmp_path / 'res.txt'), None, RUN)
  _put(paths.journal, b'committing\n')
  for target, had in zip(paths.targets, old):
    if had:
      _put(paths.backup(target), b'old ' + os.path.basename(target).encode())
  for i, target in enumerate(paths.targets):
    new = b'new ' + os.path.basename(target).encode()
    _put(target if i < moved_in else paths.staging(target), new)
  return paths


@pytest.mark.parametrize('moved_in', [0, 1, 2])
def test_roll_back_inside_a_commit_restores_the_old_three(tmp_path,
                                                          moved_in):
  paths = _died_in_commit(tmp_path, moved_in)
  write.roll_back(paths)
  assert _contents(paths) == [b'old'] * 3
  assert sorted(_files(tmp_path)) == [
      'res.txt', 'res.txt.errors', 'res.txt.ev-resume/',
      'res.txt.summary.json']


def test_roll_back_removes_a_new_file_that_had_no_old_one(tmp_path):
  paths = _died_in_commit(tmp_path, 1, old=(False, True, True))
  write.roll_back(paths)
  assert _contents(paths) == [None, b'old', b'old']


def test_roll_back_after_every_file_moved_in_finishes_the_commit(tmp_path):
  paths = _died_in_commit(tmp_path, 3)
  write.roll_back(paths)
  assert _contents(paths) == [b'new'] * 3
  assert not [n for n in os.listdir(tmp_path) if '.bak-' in n]


def test_roll_back_without_a_journal_only_removes_staged_files(tmp_path):
  """No commit was under way: the targets are someone's current files, and
  a backup-looking name is not ours to restore."""
  paths = _staged(tmp_path)
  _put(paths.backup(paths.result), b'not from a commit')
  write.roll_back(paths)
  assert _contents(paths) == [b'old'] * 3
  assert sorted(_files(tmp_path)) == [
      'res.txt', f'res.txt.bak-{RUN}', 'res.txt.errors',
      'res.txt.ev-resume/', 'res.txt.summary.json']


def _dead_pid():
  child = subprocess.Popen(['true'])
  child.wait()
  return child.pid


def test_finish_dead_commits_cleans_up_only_dead_runs_of_this_output(
    tmp_path):
  result = str(tmp_path / 'res.txt')
  current = OutputPaths.for_run(result, None, RUN)
  os.makedirs(current.state)
  # Died inside its commit: the old result comes back, its staged files go.
  died = OutputPaths.for_run(result, None, '20250101-000000-00000008')
  _put(died.journal, b'committing\n')
  _put(died.staging_marker, b'staging\n')
  _put(died.backup(result), b'old result\n')
  _put(result, b'half-committed result\n')
  _put(died.staging(current.errors), b'staged\n')
  _put(died.staging(current.summary), b'staged\n')
  # Died while staging: its staged files go, nothing else.
  staging = OutputPaths.for_run(result, None, '20250101-000000-00000009')
  _put(staging.staging_marker, b'staging\n')
  _put(staging.staging(result), b'staged\n')
  # Not ours: a staged-looking file of a run with no marker, another
  # output's, this run's own marker, and a name that is no run id.
  _put(f'{result}.tmp-20250101-000000-0000000a', b'someone\'s\n')
  _put(current.staging_marker, b'staging\n')
  _put(str(tmp_path / 'other.txt.tmp-20250101-000000-00000009'), b'x\n')
  _put(os.path.join(current.state, 'commit-manual'), b'x\n')
  before = _files(tmp_path)

  found = write.finish_dead_commits(current)

  assert found == ['20250101-000000-00000008', '20250101-000000-00000009']
  after = _files(tmp_path)
  assert after.pop('res.txt') == b'old result\n'
  gone = {'res.txt.bak-20250101-000000-00000008',
          'res.txt.errors.tmp-20250101-000000-00000008',
          'res.txt.summary.json.tmp-20250101-000000-00000008',
          'res.txt.tmp-20250101-000000-00000009'}
  want = {k: v for k, v in before.items() if k not in gone}
  want.pop('res.txt')
  want['res.txt.ev-resume/'] = ['commit-manual', f'staging-{RUN}']
  assert after == want


def _summary(counts, lines_read, written=None, wall=2.0):
  return write.summarize(counts, lines_read, 100.0, 100.0 + wall, written)


def test_summarize_counts_by_outcome():
  got = _summary({'ok': 6, 'not_found': 1, 'decode': 2, 'bad_line': 1}, 10,
                 written=(6, 4))
  assert got == {
      'lines_read': 10, 'records': 10, 'succeeded': 6, 'failed': 4,
      'failed_by_kind': {'bad_line': 1, 'decode': 2, 'not_found': 1},
      'error_ratio': 0.4, 'accounting_ok': True, 'wall_seconds': 2.0,
      'images_per_second': 3.0, 'processing_seconds': 2.0,
      'processing_images_per_second': 3.0, 'resumed_lines': 0,
      'processed_lines': 10}
  assert list(got['failed_by_kind']) == ['bad_line', 'decode', 'not_found']


@pytest.mark.parametrize('counts, lines_read, written', [
    ({'ok': 3, 'fetch': 1}, 5, None),       # a line with no record
    ({'ok': 3, 'fetch': 1}, 3, None),       # a record with no line
    ({'ok': 3, 'fetch': 1}, 4, (3, 2)),     # a line too many in a file
    ({'ok': 3, 'fetch': 1}, 4, (2, 1)),     # a line lost on the way
    ({'ok': 3, 'fetch': 1}, 4, (1, 3)),     # right total, wrong files
])
def test_summarize_accounting_fails_on_any_mismatch(counts, lines_read,
                                                    written):
  assert not _summary(counts, lines_read, written)['accounting_ok']
  assert _summary(counts, 4, (3, 1))['accounting_ok']


def test_summarize_an_empty_job():
  got = _summary({}, 0, (0, 0), wall=0)
  assert (got['records'], got['failed'], got['error_ratio'],
          got['accounting_ok'], got['images_per_second']) == (
              0, 0, 0.0, True, 0.0)
  assert got['failed_by_kind'] == {}
  assert got['wall_seconds'] >= 0
  assert _summary({'ok': 0, 'decode': 3}, 3)['error_ratio'] == 1.0
  assert _summary({'ok': 2, 'decode': 1}, 3)['error_ratio'] == \
      round(1 / 3, 6)
