"""Options: PAI's ``-Dkey=value`` parameters as a PipelineOptions subclass,
and the checks of Beam flags (the command line's tokenizer, which needs no
Beam: pipeline/commandline.py).
"""
import argparse
from typing import Dict, List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from ev_predict.pipeline.commandline import UsageError
from ev_predict.pipeline.parameters import PARAMETERS
# Registers OssOptions' flags (check_beam_flags walks the registered classes).
from ev_predict.transforms.oss.filesystem import OssOptions  # pylint: disable=unused-import  # noqa: F401


class EvPredictOptions(PipelineOptions):
  """Every parameter but the OSS ones, which OssOptions declares (workers
  read those)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    for p in PARAMETERS.values():
      if p.group != 'oss':
        p.add_to(parser)


def check_beam_flags(beam_args: List[str]) -> None:
  """Refuses flags that no registered PipelineOptions understands (Beam would
  only log and drop them)."""
  parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
  seen = set()

  def add_all(cls):
    for sub in cls.__subclasses__():
      if sub not in seen:
        seen.add(sub)
        try:
          sub._add_argparse_args(parser)  # pylint: disable=protected-access
        except argparse.ArgumentError:
          pass  # the same flag declared by two option classes
        add_all(sub)

  add_all(PipelineOptions)
  try:
    _, unknown = parser.parse_known_args(beam_args)
  except SystemExit as e:
    raise UsageError(f'invalid Beam flags {beam_args}') from e
  if unknown:
    raise UsageError(f'unknown option(s) {" ".join(unknown)}')


def runner_kind(runner: Optional[str]) -> str:
  """--runner the way Beam resolves a short name: the class name in lower
  case, 'runner' appended where left out ('direct', 'DirectRunner' and a
  module path to it are all 'directrunner'). No --runner: Beam's default,
  the DirectRunner."""
  if not runner:
    return 'directrunner'
  name = runner.rsplit('.', 1)[-1].lower()
  return name if name.endswith('runner') else name + 'runner'


def is_direct(runner: Optional[str]) -> bool:
  """Whether --runner runs the job in this process and its children."""
  return runner_kind(runner) == 'directrunner'


def to_flags(params: Dict[str, str]) -> List[str]:
  return [f'--{k}={v}' for k, v in params.items()]
