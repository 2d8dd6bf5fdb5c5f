"""The launcher's live view of a job: lines done of the total, images per
second, the time left and failures by kind, read from the workers' progress
files (transforms/progress.py) by a daemon thread about once a second.

On a terminal it is one bar drawn with rich, redrawn at every read and left
finished on exit. Otherwise (a log file, a pipe, a CI console) it is plain
lines, every `interval` seconds and at every phase change, each starting
with "ev-predict: ":

  ev-predict: reading file list
  ev-predict: loading model (2 workers)
  ev-predict: 45,000/100,000 lines (45.0%), 251 img/s, ETA 3m39s, failed 12 (not_found 10, timeout 2)

The rate is this run's: the records its workers did over the time since the
first of them (a resumed run's earlier lines count in done, not in the rate).
Nothing here raises from the thread: a failed read shows the last state.
"""
import collections
import os
import sys
import threading
import time
from typing import Callable, Dict, Optional

from ev_predict.transforms.progress import Snapshot, read_all

PREFIX = 'ev-predict: '
PLAIN_INTERVAL = 15.0
# A rate over less processing time than this is noise, not a rate.
_MIN_ELAPSED = 1.0
_JOIN_TIMEOUT = 5.0


def format_duration(seconds: float) -> str:
  """3m39s; 45s; 2h05m."""
  s = max(0, int(round(seconds)))
  if s < 60:
    return f'{s}s'
  if s < 3600:
    return f'{s // 60}m{s % 60:02d}s'
  return f'{s // 3600}h{s % 3600 // 60:02d}m'


def format_rate(rate: float) -> str:
  return f'{rate:,.0f}' if rate >= 10 else f'{rate:.1f}'


def failures_text(counts: Dict[str, int]) -> Optional[str]:
  """'failed 12 (not_found 10, timeout 2)': the most frequent kind first."""
  failed = {k: n for k, n in counts.items() if k != 'ok' and n}
  if not failed:
    return None
  kinds = sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))
  return (f'failed {sum(failed.values()):,} ('
          + ', '.join(f'{k} {n:,}' for k, n in kinds) + ')')


def workers_phase(phases: Dict[str, str]) -> Optional[str]:
  """'loading model (2 workers)', or several phases, the commonest first."""
  if not phases:
    return None
  tally = collections.Counter(phases.values()).most_common()
  return ', '.join(f'{text} ({n} worker{"s" if n != 1 else ""})'
                   for text, n in tally)


class Timeline:
  """(seconds, lines done) samples, at most MAX of them however long the
  run: when full, every other one goes and the spacing doubles."""
  MAX = 240

  def __init__(self, spacing: float = 1.0):
    self.points: list = []
    self._spacing = spacing

  def add(self, t: float, done: int, last: bool = False) -> None:
    if self.points and not last and t - self.points[-1][0] < self._spacing:
      return
    if self.points and last and t - self.points[-1][0] < self._spacing:
      self.points[-1] = (round(t, 2), done)   # the end, in place of the last
      return
    self.points.append((round(t, 2), done))
    if len(self.points) > self.MAX:
      self.points = self.points[::2] + ([self.points[-1]]
                                        if len(self.points) % 2 == 0 else [])
      self._spacing *= 2


class Monitor:
  """A context manager: the live view while the job runs.

  progress_folder: where the workers' Reporters write; total: the job's
  lines; resumed: lines an earlier run already did (shown as done, not in
  the rate). stream: sys.stderr by default; tty: draw a bar (default: the
  stream is a terminal); interval: seconds between plain lines (15);
  clock/wall: the launcher's monotonic and wall clocks (a worker's first
  record is a wall time); poll: seconds between reads.
  """

  def __init__(self, progress_folder: str, total: int, resumed: int = 0,
               stream=None, tty: Optional[bool] = None,
               interval: Optional[float] = None,
               clock: Callable[[], float] = time.monotonic,
               wall: Callable[[], float] = time.time, poll: float = 1.0):
    self.folder = progress_folder
    self.total = total
    self.resumed = resumed
    self.stream = sys.stderr if stream is None else stream
    if tty is None:
      try:
        tty = self.stream.isatty()
      except (AttributeError, ValueError):
        tty = False
    self.tty = tty
    self.interval = PLAIN_INTERVAL if interval is None else interval
    self.poll = poll
    self._clock = clock
    self._wall = wall
    self._snap = Snapshot()
    # _lock: the state and every write to the stream (the thread's and
    # phase()'s), so lines never interleave and none follows __exit__.
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._closed = False
    self._phase: Optional[str] = None           # what is shown
    self._worker_phases: frozenset = frozenset()
    self._start_at: Optional[float] = None      # clock at the first record
    self._entered_at = 0.0
    self._next_line = 0.0
    self._last_shown = (0, {})                  # (done, counts) last printed
    self._bar = None
    self._task = None
    self._drawn = None
    self._timeline = Timeline()

  # -- the interface -------------------------------------------------------
  def __enter__(self) -> 'Monitor':
    self._entered_at = self._clock()
    self._started_wall = self._wall()
    self._next_line = self._entered_at + self.interval
    self._last_shown = (self._done(), {})
    if self.tty:
      self._start_bar()
    self._thread = threading.Thread(target=self._run, name='ev-predict-status',
                                    daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> bool:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(_JOIN_TIMEOUT)
    self._tick(final=True)
    with self._lock:
      self._closed = True
      if self._bar is not None:
        try:
          self._bar.stop()
        except Exception:  # pylint: disable=broad-except
          pass
    return False

  def phase(self, text: str) -> None:
    """The launcher's phase ('reading file list', 'starting workers'),
    shown at once."""
    with self._lock:
      self._show_phase(text)

  def snapshot(self) -> Snapshot:
    """The last snapshot read."""
    with self._lock:
      return self._snap

  def timeline(self) -> dict:
    """Lines done over this run's time, for the run report."""
    with self._lock:
      return {'started': self._started_wall,
              'points': [list(p) for p in self._timeline.points]}

  # -- the thread ----------------------------------------------------------
  def _run(self) -> None:
    while not self._stop.wait(self.poll):
      self._tick()

  def _tick(self, final: bool = False) -> None:
    try:
      snap = read_all(self.folder)
    except Exception:  # pylint: disable=broad-except
      snap = None
    try:
      with self._lock:
        if self._closed:
          return
        if snap is not None:
          self._update(snap, final)
        self._render(final)
    except Exception:  # pylint: disable=broad-except
      # A closed stream, a rich failure: the job goes on without a view.
      pass

  def _update(self, snap: Snapshot, final: bool = False) -> None:
    self._snap = snap
    now = self._clock()
    self._timeline.add(now - self._entered_at, self.resumed + snap.done,
                       last=final)
    if snap.first_at is not None:
      # The workers' wall time of their first record, as the launcher's
      # clock; clamped, since a cluster's clocks may differ a little.
      ago = min(max(0.0, self._wall() - snap.first_at),
                now - self._entered_at)
      self._start_at = now - ago
    names = frozenset(snap.phases.values())
    if names != self._worker_phases:
      self._worker_phases = names
      if names:
        self._show_phase(workers_phase(snap.phases))

  def _render(self, final: bool) -> None:
    if self.tty:
      self._draw_bar()
      return
    now = self._clock()
    shown = (self._done(), dict(self._snap.counts))
    if final:
      if shown != self._last_shown:
        self._emit(PREFIX + self.text())
        self._last_shown = shown
    elif now >= self._next_line:
      self._emit(PREFIX + self.text())
      self._last_shown = shown
      while self._next_line <= now:
        self._next_line += self.interval

  # -- what is shown -------------------------------------------------------
  def _done(self) -> int:
    return min(self.total, self.resumed + self._snap.done)

  def rate(self) -> Optional[float]:
    """Images per second of this run's processing time, once there is one."""
    if self._start_at is None or not self._snap.done:
      return None
    elapsed = self._clock() - self._start_at
    if elapsed < _MIN_ELAPSED:
      return None
    return self._snap.done / elapsed

  def text(self) -> str:
    """'45,000/100,000 lines (45.0%), 251 img/s, ETA 3m39s, failed 12 (...)'"""
    done = self._done()
    pct = 100.0 * done / self.total if self.total else 100.0
    parts = [f'{done:,}/{self.total:,} lines ({pct:.1f}%)']
    rate = self.rate()
    if rate:
      parts.append(f'{format_rate(rate)} img/s')
      parts.append(f'ETA {format_duration((self.total - done) / rate)}')
    if not self._snap.done and self._phase:
      parts.append(self._phase)
    failed = failures_text(self._snap.counts)
    if failed:
      parts.append(failed)
    return ', '.join(parts)

  def _show_phase(self, text: str) -> None:
    """Under _lock."""
    if self._closed or text == self._phase:
      return
    self._phase = text
    if self.tty:
      self._draw_bar()
    else:
      self._emit(PREFIX + text)

  def _emit(self, line: str) -> None:
    """Under _lock."""
    try:
      self.stream.write(line + '\n')
      self.stream.flush()
    except Exception:  # pylint: disable=broad-except
      pass

  # -- the bar -------------------------------------------------------------
  def _start_bar(self) -> None:
    # rich only on a terminal: its import is not free, and a plain run
    # needs none of it.
    from rich.console import Console
    from rich.progress import Progress
    console = Console(file=self.stream, force_terminal=True, highlight=False,
                      width=self._width())
    self._bar = Progress(
        _line_column(), console=console,
        # Drawn by our thread at each read: no refresh thread of rich's.
        auto_refresh=False, transient=False,
        # Our own prints to stderr go above the bar; stdout is the caller's.
        redirect_stdout=False, redirect_stderr=self.stream is sys.stderr)
    self._task = self._bar.add_task('', total=max(self.total, 1),
                                    completed=self._completed(),
                                    info=self.text())
    self._bar.start()

  def _width(self) -> Optional[int]:
    """None (rich follows the terminal's size) for the process's own
    stdout or stderr; rich asks only those, so another terminal's width is
    read here, once."""
    if self.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
      return None
    try:
      return os.get_terminal_size(self.stream.fileno()).columns or None
    except (AttributeError, OSError, ValueError):
      return None

  def _completed(self) -> int:
    # An empty job is done: a full bar, as its 100.0% says.
    return self._done() if self.total else 1

  def _draw_bar(self) -> None:
    """Under _lock."""
    if self._bar is None:
      return
    drawn = (self._completed(), self.text())
    if drawn == self._drawn:
      return
    self._drawn = drawn
    self._bar.update(self._task, completed=drawn[0], info=drawn[1])
    self._bar.refresh()


BAR_WIDTH = 24


def _line_column():
  """One column: 'ev-predict', the bar, the text, cut with '…' at the
  terminal's width. Columns of their own would let rich's table squeeze the
  bar away on a narrow terminal, since the text is the widest."""
  from rich.progress import ProgressColumn
  from rich.table import Column
  from rich.text import Text

  class LineColumn(ProgressColumn):

    def __init__(self):
      super().__init__(table_column=Column(no_wrap=True, overflow='ellipsis'))

    def render(self, task):
      filled = min(BAR_WIDTH, int(BAR_WIDTH * task.completed
                                  / (task.total or 1)))
      style = 'bar.finished' if filled == BAR_WIDTH else 'bar.complete'
      return Text.assemble('ev-predict ', ('━' * filled, style),
                           ('━' * (BAR_WIDTH - filled), 'bar.back'),
                           ' ' + task.fields['info'], no_wrap=True,
                           overflow='ellipsis')

  return LineColumn()
