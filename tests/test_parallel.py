"""ThreadedMap, the stage runner: order, the failed-record guard, errors,
threads, in-flight bound, bundles; run by hand (one bundle) where the
behaviour is the DoFn's own, and in a real pipeline where it is the job's."""
import collections
import functools
import os
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import DecodeConfig, prepare_record
from ev_predict.transforms.parallel import ThreadedMap
from ev_predict.transforms.record import Record

# What stage functions were called with, by test: the in-process runner
# unpickles its own copy of each function, so calls are noted here.
_CALLS = collections.defaultdict(list)
_LOCK = threading.Lock()


def _stage(key, record, delay=0.0, raise_on=(), fail_on=()):
  """A stage function: notes the call, sleeps, then fills in data."""
  with _LOCK:
    _CALLS[key].append(record)
  time.sleep(delay(record) if callable(delay) else delay)
  if record.line in raise_on:
    raise RuntimeError('boom')
  if record.line in fail_on:
    return record.fail(rec.NOT_FOUND, 'gone')
  return record.but(data=b'done:' + record.line)


def _maker(key, **kwargs):
  """make_fn for ThreadedMap: gets the stage's metrics, returns the stage."""
  def make(metrics):
    del metrics
    return functools.partial(_stage, key, **kwargs)
  return make


def good(i):
  return Record(line=b'%d' % i, source=f'{i}.jpg')


def failed(i):
  return Record(line=b'%d' % i, source=f'{i}.jpg', error=rec.BAD_LINE,
                message='bad')


def _value(out):
  return out.value if isinstance(out, WindowedValue) else out


def _process(dofn, record):
  return [_value(o) for o in dofn.process(
      record, window=GlobalWindow(), timestamp=MIN_TIMESTAMP)]


def _finish(dofn):
  return [_value(o) for o in dofn.finish_bundle()]


def run_bundle(dofn, records):
  """One bundle by hand, as a runner drives it: the outputs in order."""
  dofn.setup()
  try:
    dofn.start_bundle()
    out = []
    for record in records:
      out += _process(dofn, record)
    return out + _finish(dofn)
  finally:
    dofn.teardown()


def _map(key, threads=4, in_flight=8, **kwargs):
  needs = kwargs.pop('needs', None)
  return ThreadedMap(_maker(key, **kwargs), threads=threads,
                     in_flight=in_flight, error_kind=rec.FETCH, stage='test',
                     needs=needs)


def test_good_records_keep_their_order_however_calls_finish():
  n = 24
  # Later records finish first: the output must still be in input order.
  dofn = _map('order', delay=lambda r: (n - int(r.line)) * 0.003)
  out = run_bundle(dofn, [good(i) for i in range(n)])
  assert [r.line for r in out] == [b'%d' % i for i in range(n)]
  assert [r.data for r in out] == [b'done:%d' % i for i in range(n)]


def test_failed_records_bypass_the_function_untouched():
  records = [failed(i) if i % 3 == 0 else good(i) for i in range(15)]
  out = run_bundle(_map('bypass', delay=0.002), records)
  assert not [r for r in _CALLS['bypass'] if not r.ok]
  assert sorted(r.line for r in _CALLS['bypass']) == sorted(
      r.line for r in records if r.ok)
  # Failed ones come out as the very objects that went in.
  passed = [r for r in out if not r.ok]
  assert len(passed) == 5 and all(
      any(p is r for r in records) for p in passed)
  # The good ones, in input order, among all records exactly once.
  assert [r.line for r in out if r.ok] == [r.line for r in records if r.ok]
  assert sorted(r.line for r in out) == sorted(r.line for r in records)


def test_a_failed_record_leaves_at_once_ahead_of_records_in_flight():
  # Today's behaviour, kept: nothing waits for a failure.
  gate = threading.Event()
  dofn = _map('ahead', delay=lambda r: gate.wait(5) and 0)
  dofn.setup()
  try:
    dofn.start_bundle()
    assert _process(dofn, good(0)) == []
    assert [r.line for r in _process(dofn, failed(1))] == [b'1']
    gate.set()
    assert [r.line for r in _finish(dofn)] == [b'0']
  finally:
    gate.set()
    dofn.teardown()


def test_records_the_stage_does_not_need_keep_their_place():
  records = [good(i) if i % 2 else good(i).but(data=b'inline')
             for i in range(10)]
  out = run_bundle(_map('needs', needs=lambda r: r.data is None,
                        delay=lambda r: (10 - int(r.line)) * 0.003), records)
  assert [r.line for r in out] == [r.line for r in records]
  assert sorted(r.line for r in _CALLS['needs']) == [
      r.line for r in records if r.data is None]
  assert all(r.data == b'inline' for r in out[::2])   # untouched


def test_decode_stage_passes_a_failed_record_on_as_it_is():
  # prepare_record has no guard of its own (it would call the empty data
  # undecodable): the runner never lets it see a failed record.
  make = lambda metrics: functools.partial(   # noqa: E731
      prepare_record, config=DecodeConfig(size=(8, 8)), encoded_input=False)
  gone = Record(line=b'gone.jpg', source='gone.jpg', error=rec.NOT_FOUND,
                message='404')
  out = run_bundle(ThreadedMap(make, threads=2, in_flight=2,
                               error_kind=rec.DECODE, stage='decode'), [gone])
  assert len(out) == 1 and out[0] is gone


def test_an_exception_in_the_stage_fails_only_its_record():
  records = [good(i) for i in range(6)]
  out = run_bundle(_map('raises', raise_on=(b'2',), fail_on=(b'4',)), records)
  assert [r.line for r in out] == [r.line for r in records]
  assert (out[2].error, out[2].message) == (rec.FETCH, 'RuntimeError: boom')
  assert out[2].data is None
  assert (out[4].error, out[4].message) == (rec.NOT_FOUND, 'gone')
  assert [r.ok for r in out] == [True, True, False, True, False, True]


def test_no_more_threads_than_asked_all_busy_at_low_priority():
  active, peak, threads, nices = [0], [0], set(), set()
  lock = threading.Lock()

  def tracking(record):
    with lock:
      active[0] += 1
      peak[0] = max(peak[0], active[0])
      threads.add(threading.current_thread().name)
      nices.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    time.sleep(0.02)
    with lock:
      active[0] -= 1
    return record

  base = os.getpriority(os.PRIO_PROCESS, 0)
  dofn = ThreadedMap(lambda metrics: tracking, threads=3, in_flight=30,
                     error_kind=rec.FETCH, nice=base + 5, stage='test')
  out = run_bundle(dofn, [good(i) for i in range(24)])
  assert len(out) == 24
  assert peak[0] == 3 and len(threads) == 3
  assert all(name.startswith('ev-predict') for name in threads)
  assert nices == {base + 5}


def test_no_more_than_in_flight_records_are_pending():
  gate = threading.Event()
  dofn = _map('bound', threads=2, in_flight=4,
              delay=lambda r: gate.wait(5) and 0 if r.line == b'0' else 0)
  dofn.setup()
  try:
    dofn.start_bundle()
    for i in range(3):
      assert _process(dofn, good(i)) == []   # 0 holds the head
    timer = threading.Timer(0.3, gate.set)
    timer.start()
    start = time.monotonic()
    # The 4th pending record: process waits for the head before returning.
    out = _process(dofn, good(3))
    assert time.monotonic() - start >= 0.25
    assert [r.line for r in out][:1] == [b'0']
    rest = [r.line for r in _finish(dofn)]
    assert [r.line for r in out] + rest == [b'0', b'1', b'2', b'3']
  finally:
    gate.set()
    dofn.teardown()


def test_finish_bundle_flushes_everything_and_the_next_bundle_starts_clean():
  gate = threading.Event()
  dofn = _map('flush', threads=2, in_flight=100,
              delay=lambda r: gate.wait(5) and 0)
  dofn.setup()
  try:
    for bundle in range(2):
      gate.clear()
      dofn.start_bundle()
      lines = [b'%d' % (10 * bundle + i) for i in range(10)]
      assert [o for line in lines
              for o in _process(dofn, Record(line=line, source='x'))] == []
      gate.set()
      assert [r.line for r in _finish(dofn)] == lines
  finally:
    gate.set()
    dofn.teardown()


def _pipeline():
  return test_pipeline.TestPipeline(runner=fn_runner.FnApiRunner())


def test_in_a_pipeline_every_record_comes_out_once_failures_untouched():
  records = [failed(i) if i % 4 == 0 else good(i) for i in range(40)]
  expected = [r if not r.ok else
              r.fail(rec.FETCH, 'RuntimeError: boom') if r.line == b'5' else
              r.but(data=b'done:' + r.line) for r in records]
  with _pipeline() as p:
    out = (p
           | beam.Create(records)
           | 'Stage' >> beam.ParDo(_map('pipeline', raise_on=(b'5',),
                                        delay=0.001)))
    assert_that(out, equal_to(expected))
  assert sorted(r.line for r in _CALLS['pipeline']) == sorted(
      r.line for r in records if r.ok)


@pytest.fixture(autouse=True)
def _fresh_calls():
  _CALLS.clear()
