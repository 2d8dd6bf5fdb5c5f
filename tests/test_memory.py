"""Memory is bounded: it does not grow with the number of lines, and huge
images cost at most a few decoded frames per decode thread.

Each job runs as its own process, started through a small Python launcher:
a process's peak RSS (ru_maxrss) also counts the memory of the process it
was forked from, so forking straight from this (large) test process would
measure the test, not the job.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

EV_PREDICT = os.path.join(os.path.dirname(sys.executable), 'ev-predict')
MIB = 1 << 20

_LAUNCHER = '''
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
err = proc.stderr.read()
_, status, usage = os.wait4(proc.pid, 0)
sys.stderr.buffer.write(err[-4000:])
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)
'''


def peak_rss(argv):
  """Runs ev-predict argv in a fresh process; returns its peak RSS (bytes)."""
  proc = subprocess.run([sys.executable, '-c', _LAUNCHER, EV_PREDICT, *argv],
                        capture_output=True, text=True, timeout=600,
                        check=False)
  code, peak = proc.stdout.split()
  assert code == '0', proc.stderr
  return int(peak)


def _job(tmp_path, model, name, lines, *extra):
  listing = tmp_path / f'{name}.txt'
  listing.write_text(''.join(l + '\n' for l in lines))
  out = tmp_path / name / 'result.txt'
  argv = [f'-Dmodel_path={model}', f'-Dinput_oss_file={listing}',
          f'-Doutput_oss_file={out}', '-Dmax_error_ratio=1', *extra]
  return argv, out


def _count(path):
  with open(path, 'rb') as f:
    return sum(1 for _ in f)


@pytest.mark.timeout(900)
def test_peak_memory_does_not_grow_with_lines(tmp_path, model_dirs):
  """50 000 lines peak within 64 MiB of 1 000: nothing holds the list (a
  materialized list of these records would take well over that)."""
  def lines(n):
    return [f'{tmp_path}/missing/folder/with/a/long/name/image_{i:07d}_'
            f'of_the_memory_test_{"x" * 60}.jpg' for i in range(n)]

  peaks = {}
  for n in (1_000, 50_000):
    argv, out = _job(tmp_path, model_dirs['uint8'], f'lines{n}', lines(n))
    peaks[n] = peak_rss(argv)
    assert _count(f'{out}.errors') == n and _count(out) == 0
  print(f'peak RSS: 1k lines {peaks[1_000] / MIB:.0f} MiB, '
        f'50k lines {peaks[50_000] / MIB:.0f} MiB')
  assert peaks[50_000] - peaks[1_000] < 64 * MIB, peaks


@pytest.mark.timeout(900)
def test_huge_images_cost_decode_threads_frames(tmp_path, model_dirs):
  """Twelve lines over 8000x6000 PNGs (48 Mpixel, 137 MiB decoded each) with
  two decode threads: the peak rises by at most two decoded frames per
  thread over the same job on small images. Holding the twelve decoded
  images at once would take 1.6 GiB."""
  width, height = 8000, 6000
  frame = width * height * 3
  x = np.arange(width, dtype=np.uint16)[None, :]
  y = np.arange(height, dtype=np.uint16)[:, None]
  big, small = [], []
  for i in range(3):
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (x // 31 + i) % 256
    rgb[..., 1] = (y // 17 + i) % 256
    rgb[..., 2] = ((x + y) // 53) % 256
    Image.fromarray(rgb).save(tmp_path / f'big{i}.png', compress_level=1)
    del rgb
    Image.fromarray(np.full((60, 80, 3), 50 * i, np.uint8)).save(
        tmp_path / f'small{i}.png')
    big.append(str(tmp_path / f'big{i}.png'))
    small.append(str(tmp_path / f'small{i}.png'))

  threads = 2
  peaks = {}
  for name, paths in (('small', small), ('big', big)):
    argv, out = _job(tmp_path, model_dirs['uint8'], name,
                     [paths[i % 3] for i in range(12)],
                     f'-Ddecode_threads={threads}', '-Dbatch_size=4')
    peaks[name] = peak_rss(argv)
    assert _count(out) == 12     # huge but valid: classified, not refused
  growth = peaks['big'] - peaks['small']
  print(f'peak RSS: small {peaks["small"] / MIB:.0f} MiB, 48 Mpixel '
        f'{peaks["big"] / MIB:.0f} MiB (+{growth / frame:.2f} frames)')
  assert growth <= threads * 2 * frame, (growth / MIB, peaks)
