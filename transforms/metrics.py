"""One collector per stage for Beam metrics, built in the DoFn's setup().

Beam files a metric update under the step that the *calling thread* is
running (its state sampler is thread-local): an update from a pool thread is
silently lost. So what pool threads learn (latencies, fetch attempts) is
handed back to the bundle thread, which alone touches Beam's metrics: a stage
result carries its latency, and counts only the stage function knows go
through a small locked buffer that publish() empties.

Names, in the namespace given (ev_predict):
  <stage>_in             records that reached the stage
  <stage>_passed         records passed on without running the stage: failed
                         earlier, or nothing to do (a base64 line's fetch)
  <stage>_ok             records the stage completed
  <stage>_failed_<kind>  records the stage failed, by error kind
  <stage>_exceptions     of those, the ones whose stage function raised
  <stage>_latency_us     distribution: one stage call, in microseconds
  fetch_attempts         distribution: attempts per fetch (1: no retry)
  fetch_retries          counter: attempts after the first
The sink keeps its own names (succeeded, failed, failed_<kind>: OutcomeMetrics).
"""
import threading
from typing import Dict, List, Optional

from apache_beam.metrics import Metrics

from ev_predict.transforms.record import Record

NAMESPACE = 'ev_predict'


class _ByKind:
  """Counters made on first use: one per error kind that really occurs."""

  def __init__(self, namespace: str, prefix: str):
    self._namespace = namespace
    self._prefix = prefix
    self._counters: Dict[str, object] = {}

  def inc(self, kind: str) -> None:
    counter = self._counters.get(kind)
    if counter is None:
      counter = self._counters[kind] = Metrics.counter(
          self._namespace, self._prefix + kind)
    counter.inc()


class StageMetrics:
  """A stage's counters and distributions. Every method but attempts() is
  for the bundle thread; attempts() may be called from any thread."""

  def __init__(self, namespace: str, stage: str):
    self.stage = stage

    def counter(name):
      return Metrics.counter(namespace, f'{stage}_{name}')

    self._in = counter('in')
    self._passed = counter('passed')
    self._ok = counter('ok')
    self._exceptions = counter('exceptions')
    self._failed = _ByKind(namespace, f'{stage}_failed_')
    self._latency = Metrics.distribution(namespace, f'{stage}_latency_us')
    self._attempts = Metrics.distribution(namespace, f'{stage}_attempts')
    self._retries = counter('retries')
    self._lock = threading.Lock()
    self._pending_attempts: List[int] = []

  def passed(self) -> None:
    self._in.inc()
    self._passed.inc()

  def completed(self, out: Record, latency_us: Optional[int] = None,
                raised: bool = False) -> None:
    """One record through the stage function (latency_us: the call's)."""
    self._in.inc()
    if latency_us is not None:
      self._latency.update(latency_us)
    if out.ok:
      self._ok.inc()
    else:
      self._failed.inc(out.error)
      if raised:
        self._exceptions.inc()

  def attempts(self, count: int) -> None:
    """How many attempts one read took (any thread; see publish())."""
    with self._lock:
      self._pending_attempts.append(count)

  def publish(self) -> None:
    """Files what other threads reported; the bundle thread calls it."""
    if not self._pending_attempts:
      # An unlocked look is enough: what a stage call reported is appended
      # before its result is handed over, so the caller sees it.
      return
    with self._lock:
      pending, self._pending_attempts = self._pending_attempts, []
    for count in pending:
      self._attempts.update(count)
      if count > 1:
        self._retries.inc(count - 1)


class OutcomeMetrics:
  """The sink's counts of final outcomes: every line ends in exactly one."""

  def __init__(self, namespace: str = NAMESPACE):
    self._succeeded = Metrics.counter(namespace, 'succeeded')
    self._failed = Metrics.counter(namespace, 'failed')
    self._by_kind = _ByKind(namespace, 'failed_')

  def outcome(self, outcome: str) -> None:
    if outcome == 'ok':
      self._succeeded.inc()
    else:
      self._failed.inc()
      self._by_kind.inc(outcome)
