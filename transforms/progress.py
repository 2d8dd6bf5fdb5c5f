"""STUB (replaced by h-progress at merge)."""
import dataclasses
from typing import Dict, Optional


@dataclasses.dataclass
class Snapshot:
  counts: Dict[str, int] = dataclasses.field(default_factory=dict)
  done: int = 0
  phases: Dict[str, str] = dataclasses.field(default_factory=dict)
  first_at: Optional[float] = None
  workers: int = 0


class Reporter:
  def __init__(self, folder, period=2.0, worker=None):
    self.folder = folder

  def phase(self, text):
    pass

  def add(self, outcome, n=1):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def reporter(folder):
  return Reporter(folder)


def read_all(folder):
  return Snapshot()
