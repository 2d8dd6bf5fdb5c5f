"""A DoFn that maps records on a thread pool, keeping a bounded number in flight.

Fetching is I/O bound and Pillow releases the GIL while it decodes and resizes,
so threads give real overlap inside one worker process, and the model stays
loaded once per process. Results are emitted in input order from the head of a
bounded queue: memory stays bounded and downstream stages (decode, inference)
run while later elements are still in flight.

The pool threads can run at a lower scheduling priority than the rest of the
process. The model's own threads (oneDNN, OpenVINO) split each call into
parallel chunks and wait for the slowest: a decode thread preempting one of
them stalls both cores. At low priority, decodes fill the time the model leaves
idle instead (measured: docs/performance.md, "Levers").
"""
import collections
import concurrent.futures
import logging
import os
import threading
import time
from typing import Callable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from ev_predict.transforms.metrics import NAMESPACE, StageMetrics
from ev_predict.transforms.record import Record

_LOG = logging.getLogger(__name__)

# The lowest priority: under contention, a nice-19 thread gets ~1.5% of a core
# against a nice-0 one, and all of any core nobody else wants.
BACKGROUND_NICE = 19


def lower_priority(nice: int) -> None:
  """Sets the calling thread's nice value (Linux schedules threads, so this
  touches no other thread); where that is unsupported it keeps its own."""
  if not nice or not hasattr(os, 'setpriority'):
    return
  try:
    tid = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, tid,
                   max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
  except OSError as e:
    _LOG.debug('thread priority unchanged: %s', e)


class _Done(NamedTuple):
  record: Record
  latency_us: Optional[int]    # None: passed through, the function not called
  raised: bool


class ThreadedMap(beam.DoFn):
  """Runs one stage function over records, on a pool.

  The stage's guard lives here: a failed record passes through without the
  function being called (and leaves at once: nothing is waiting for it, and
  failures need no order), and so does a good record that needs says has no
  work for this stage (it keeps its place among the good ones). The function
  thus only ever sees records it has work for, and never needs its own
  "if not record.ok". A function that raises fails its record with
  error_kind, never the bundle.

  Metrics are counted here too, in one StageMetrics built in setup()
  (transforms/metrics.py: why only this thread may file them)."""

  def __init__(self, make_fn: Callable[[StageMetrics],
                                       Callable[[Record], Record]],
               threads: int, in_flight: int, error_kind: str,
               nice: int = 0, *, stage: str,
               needs: Optional[Callable[[Record], bool]] = None):
    """make_fn builds the per-worker function in setup() (clients, pools),
    given the stage's metrics for counts only the function knows (fetch
    attempts); error_kind labels a record whose function raised; nice is
    the pool threads' scheduling priority (0: the process's own); stage
    names the metrics; needs (default: every good record) picks the good
    records the function has work for."""
    self._make_fn = make_fn
    self._threads = max(1, threads)
    self._in_flight = max(self._threads, in_flight)
    self._error_kind = error_kind
    self._nice = nice
    self._stage = stage
    self._needs = needs

  def setup(self):
    self._metrics = StageMetrics(NAMESPACE, self._stage)
    self._fn = self._make_fn(self._metrics)
    self._pool = concurrent.futures.ThreadPoolExecutor(
        self._threads, thread_name_prefix='ev-predict',
        initializer=lower_priority, initargs=(self._nice,))
    self._pending = collections.deque()

  def start_bundle(self):
    self._pending.clear()

  def _call(self, record: Record) -> _Done:
    """On a pool thread: the function's record and how long it took."""
    start = time.perf_counter()
    try:
      out, raised = self._fn(record), False
    except Exception as e:  # a bug in a stage must not lose the line
      out = record.fail(self._error_kind, f'{type(e).__name__}: {e}')
      raised = True
    return _Done(out, int((time.perf_counter() - start) * 1e6), raised)

  def process(self, record, window=beam.DoFn.WindowParam,
              timestamp=beam.DoFn.TimestampParam):
    if not record.ok:
      self._metrics.passed()
      yield record
      return
    if self._needs is None or self._needs(record):
      future = self._pool.submit(self._call, record)
    else:
      future = concurrent.futures.Future()
      future.set_result(_Done(record, None, False))
    self._pending.append((future, timestamp, window))
    while self._pending and (len(self._pending) >= self._in_flight or
                             self._pending[0][0].done()):
      yield self._emit(self._pending.popleft())

  def finish_bundle(self):
    while self._pending:
      yield self._emit(self._pending.popleft())

  def teardown(self):
    pool = getattr(self, '_pool', None)
    if pool is not None:
      pool.shutdown(wait=False, cancel_futures=True)

  def _emit(self, entry):
    future, timestamp, window = entry
    done = future.result()
    if done.latency_us is None:
      self._metrics.passed()
    else:
      self._metrics.completed(done.record, done.latency_us, done.raised)
    # What the function reported for this record (and maybe for later ones)
    # is buffered by now: filed here, on the bundle thread.
    self._metrics.publish()
    return WindowedValue(done.record, timestamp, [window])
