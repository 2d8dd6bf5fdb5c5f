"""Python imports this first thing in every process whose PYTHONPATH the
launcher set (pipeline/logs.py, set_environment): in a local Beam SDK worker
process of an ev-predict job it sets up logging before Beam is imported
(logs.start_worker); anywhere else it does nothing. Then it runs the
sitecustomize module that this one hides, if there is one."""
import os
import sys


def _start_worker() -> None:
  # Beam's SubprocessSdkWorker sets CONTROL_API_SERVICE_DESCRIPTOR; the
  # launcher sets the level.
  if 'EV_PREDICT_LOG_LEVEL' not in os.environ or \
      'CONTROL_API_SERVICE_DESCRIPTOR' not in os.environ:
    return
  try:
    from ev_predict.pipeline import logs  # pylint: disable=import-outside-toplevel
    logs.start_worker(os.environ)
  except Exception:  # pylint: disable=broad-except
    pass  # a worker that logs too much still works


def _run_the_next_one() -> None:
  # pylint: disable=import-outside-toplevel
  import importlib.machinery
  import importlib.util
  here = os.path.dirname(os.path.abspath(__file__))
  rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
  spec = importlib.machinery.PathFinder.find_spec('sitecustomize', rest)
  if spec is not None and spec.loader is not None:
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


if __name__ == 'sitecustomize':
  _start_worker()
  _run_the_next_one()
