"""STUB (replaced by h-progress at merge)."""
from ev_predict.transforms import progress


class Monitor:
  def __init__(self, progress_folder, total, resumed=0, stream=None, tty=None,
               interval=None, clock=None):
    self._folder = progress_folder
    self._snap = progress.Snapshot()

  def phase(self, text):
    pass

  def snapshot(self):
    return self._snap

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._snap = progress.read_all(self._folder)
