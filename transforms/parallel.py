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
from typing import Callable

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

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


class ThreadedMap(beam.DoFn):

  def __init__(self, make_fn: Callable[[], Callable[[Record], Record]],
               threads: int, in_flight: int, error_kind: str,
               nice: int = 0):
    """make_fn builds the per-worker function in setup() (clients, pools);
    error_kind labels a record whose function raised unexpectedly; nice is
    the pool threads' scheduling priority (0: the process's own)."""
    self._make_fn = make_fn
    self._threads = max(1, threads)
    self._in_flight = max(self._threads, in_flight)
    self._error_kind = error_kind
    self._nice = nice

  def setup(self):
    self._fn = self._make_fn()
    self._pool = concurrent.futures.ThreadPoolExecutor(
        self._threads, thread_name_prefix='ev-predict',
        initializer=lower_priority, initargs=(self._nice,))
    self._pending = collections.deque()

  def start_bundle(self):
    self._pending.clear()

  def _safe_call(self, record: Record) -> Record:
    if not record.ok:
      return record
    try:
      return self._fn(record)
    except Exception as e:  # a bug in a stage must not lose the line
      return record.fail(self._error_kind, f'{type(e).__name__}: {e}')

  def process(self, record, window=beam.DoFn.WindowParam,
              timestamp=beam.DoFn.TimestampParam):
    if not record.ok:
      yield record
      return
    self._pending.append(
        (self._pool.submit(self._safe_call, record), timestamp, window))
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

  @staticmethod
  def _emit(entry):
    future, timestamp, window = entry
    return WindowedValue(future.result(), timestamp, [window])
