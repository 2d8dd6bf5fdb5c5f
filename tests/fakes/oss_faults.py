"""Misbehaviours on demand: the fault knobs of the fake OSS server and the
deterministic draw of which request meets which fault."""
import contextlib
import random

from tests.fakes.oss_protocol import OssError

FAULT_DEFAULTS = {
    'latency': 0.0, 'error_rate': 0.0, 'error_status': None, 'fail_first': 0,
    'reset_rate': 0.0, 'slow_body': None, 'fault_filter': None,
}

_ERROR_MESSAGES = {
    500: ('InternalError', 'We encountered an internal error. Please try again.'),
    503: ('ServiceUnavailable', 'Please reduce your request rate.'),
}


class FaultsMixin:
  """OssServer's fault knobs (see the oss_server module docstring)."""

  @contextlib.contextmanager
  def faults(self, **knobs):
    """Sets fault knobs for the duration of a with-block, then restores
    them; fail_first counters start from zero on entry and on exit."""
    unknown = set(knobs) - set(FAULT_DEFAULTS)
    if unknown:
      raise TypeError(f'unknown fault knobs: {sorted(unknown)}')
    saved = {name: getattr(self, name) for name in knobs}
    with self._fault_lock:
      self._fail_counts.clear()
      self._attempts.clear()
    for name, value in knobs.items():
      setattr(self, name, value)
    try:
      yield self
    finally:
      for name, value in saved.items():
        setattr(self, name, value)
      with self._fault_lock:
        self._fail_counts.clear()
        self._attempts.clear()

  def reset_faults(self):
    for name, value in FAULT_DEFAULTS.items():
      setattr(self, name, value)
    with self._fault_lock:
      self._fail_counts.clear()
      self._attempts.clear()

  def _pick_fault(self, record):
    """(None | 'error' | 'reset', faultable, error status) for a request
    that passed authentication."""
    keep = self.fault_filter or (lambda r: r.op == 'GetObject')
    if not keep(record):
      return None, False, None
    where = (record.bucket, record.key)
    with self._fault_lock:
      self._attempts[where] += 1
      rng = random.Random(
          f'{self._seed}|{record.bucket}|{record.key}|{self._attempts[where]}')
      status = self.error_status or rng.choice((500, 503))
      if self.fail_first:
        self._fail_counts[where] += 1
        if self._fail_counts[where] <= self.fail_first:
          return 'error', True, status
    if self.error_rate and rng.random() < self.error_rate:
      return 'error', True, status
    if self.reset_rate and rng.random() < self.reset_rate:
      return 'reset', True, None
    return None, True, None

  @staticmethod
  def _injected_error(status):
    code, message = _ERROR_MESSAGES.get(status, ('InternalError', 'Injected'))
    return OssError(status, code, message)
