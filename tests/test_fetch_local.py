"""Local paths: only regular files are read; anything that could block or
never end is refused without a read."""
import contextlib
import io
import os
import shutil
import socket
import stat
import tempfile
import threading
import time

import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from tests.conftest import write_image
from tests.helpers import run_job, split_output_line
from ev_predict.transforms import fetch
from ev_predict.transforms.fetch import FetchConfig, Fetcher, FetchError


@contextlib.contextmanager
def _stdin_pipe():
  """fd 0 becomes a pipe with a writer that never writes (as under a
  scheduler), so /dev/stdin blocks a reader until the writer closes."""
  saved = os.dup(0)
  r, w = os.pipe()
  os.dup2(r, 0)
  os.close(r)
  try:
    yield
  finally:
    os.dup2(saved, 0)
    os.close(saved)
    os.close(w)


@contextlib.contextmanager
def _unix_socket(folder):
  # sun_path holds 108 bytes: a pytest tmp_path can be longer.
  path = os.path.join(folder, 'sock')
  with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.bind(path)
    s.listen(1)
    yield path


def _release(fifos):
  """Unblocks a reader stuck in open() or read() on these FIFOs."""
  for path in fifos:
    try:
      fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
      os.close(fd)
    except OSError:
      pass


def test_special_files_are_refused_and_the_job_ends(tmp_path, model_dirs):
  image = write_image(tmp_path / 'ok.jpg', 1)
  link = tmp_path / 'link.jpg'
  link.symlink_to(image)
  fifo = str(tmp_path / 'fifo.jpg')
  os.mkfifo(fifo)
  fifo_link = tmp_path / 'fifo-link.jpg'
  fifo_link.symlink_to(fifo)
  folder = tmp_path / 'folder.jpg'
  folder.mkdir()
  big = tmp_path / 'big.jpg'
  with open(big, 'wb') as f:
    f.truncate(1 << 30)   # sparse: reading it would take seconds
  short = tempfile.mkdtemp(prefix='evp-')
  expected = {
      image: 'ok', str(link): 'ok',
      fifo: 'unsupported', f'file://{fifo}': 'unsupported',
      str(fifo_link): 'unsupported', '/dev/stdin': 'unsupported',
      '/dev/zero': 'unsupported', '/dev/null': 'unsupported',
      str(folder): 'unsupported', str(big): 'too_large',
      str(tmp_path / 'missing.jpg'): 'not_found',
  }
  outcome = {}
  with _stdin_pipe(), _unix_socket(short) as sock:
    expected[sock] = 'unsupported'

    def job():
      results, errors, _ = run_job(tmp_path, list(expected),
                                   model_dirs['uint8'],
                                   max_image_bytes=1 << 20, fetch_retries=0)
      outcome['results'], outcome['errors'] = results, errors

    start = time.monotonic()
    runner = threading.Thread(target=job, daemon=True)
    runner.start()
    runner.join(120)
    stuck = runner.is_alive()
    if stuck:
      _release([fifo])
  shutil.rmtree(short)
  assert not stuck, 'the job blocked on a special file'
  assert time.monotonic() - start < 120
  got = {split_output_line(l)[0].decode(): 'ok' for l in outcome['results']}
  messages = {}
  for l in outcome['errors']:
    line, body = split_output_line(l)
    got[line.decode()] = body['error']
    messages[line.decode()] = body['message']
  assert got == expected
  assert 'not a regular file (a FIFO)' in messages[fifo]
  assert 'not a regular file (a socket)' in messages[sock]
  assert 'not a regular file (a character device)' in messages['/dev/zero']
  assert 'not a regular file (a directory)' in messages[str(folder)]
  assert f'{1 << 30} bytes exceeds' in messages[str(big)]


def test_a_fifo_swapped_in_after_the_check_cannot_block(tmp_path,
                                                        monkeypatch):
  """stat says regular file, open meets a FIFO (replaced in between): the
  non-blocking open returns and fstat refuses it."""
  regular = write_image(tmp_path / 'ok.jpg', 2)
  fifo = str(tmp_path / 'swapped.jpg')
  os.mkfifo(fifo)
  real_stat = os.stat
  monkeypatch.setattr(fetch.os, 'stat', lambda p, *a, **k: real_stat(
      regular if p == fifo else p, *a, **k))
  fetcher = Fetcher(FetchConfig())
  outcome = []

  def read():
    try:
      fetcher.read(fifo)
    except FetchError as e:
      outcome.append(e)

  runner = threading.Thread(target=read, daemon=True)
  runner.start()
  runner.join(10)
  if runner.is_alive():
    _release([fifo])
    pytest.fail('open() blocked on the FIFO')
  assert outcome and outcome[0].kind == 'unsupported'
  assert 'FIFO' in str(outcome[0])
  assert stat.S_ISFIFO(real_stat(fifo).st_mode)


class _Endless(io.RawIOBase):
  """A stream that never ends: 16 KiB every 20 ms."""

  def readable(self):
    return True

  def readinto(self, buffer):
    time.sleep(0.02)
    n = min(len(buffer), 16 << 10)
    buffer[:n] = b'\0' * n
    return n


class _EndlessFileSystem(LocalFileSystem):
  """A Beam file system without read_object (the generic path)."""

  @classmethod
  def scheme(cls):
    return 'endless-test'

  def open(self, path, mime_type='application/octet-stream',
           compression_type=None):
    return io.BufferedReader(_Endless(), buffer_size=16 << 10)


def test_other_file_systems_read_under_the_deadline():
  fetcher = Fetcher(FetchConfig(read_timeout=0.5, max_bytes=64 << 20))
  outcome = []

  def read():
    try:
      fetcher.read('endless-test://x/y.jpg')
    except FetchError as e:
      outcome.append(e)

  start = time.monotonic()
  runner = threading.Thread(target=read, daemon=True)
  runner.start()
  runner.join(30)
  assert not runner.is_alive(), 'the read ignored the deadline'
  # The deadline is checked between 64 KiB reads (80 ms each here).
  assert time.monotonic() - start < 5
  assert outcome[0].kind == 'timeout' and outcome[0].transient
