"""``ev-predict``: PAI's ev_predict_ext on Apache Beam. The command line
only: argv -> pipeline/launcher.py (or pipeline/submit.py) -> exit code.

Importing this module changes nothing in the process: main() sets the
runtime environment and logging (pipeline/logs.py) before anything imports
Beam or TensorFlow. Help and --version import neither (Beam's import alone
takes seconds and logs warnings such as "apitools not found").
"""
import sys
import textwrap
from typing import List, Optional

from ev_predict.pipeline import parameters

_WIDTH = 79


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ('-h', '--help', 'help'):
    # Asked for: stdout, exit 0. No arguments: a usage error.
    _print_help(sys.stdout if argv else sys.stderr)
    return 0 if argv else 2
  if argv[0] in ('--version', 'version'):
    sys.stdout.write(version() + '\n')
    return 0
  # pylint: disable=import-outside-toplevel
  from ev_predict.pipeline import logs
  from ev_predict.pipeline.commandline import UsageError
  try:
    logs.setup(argv[1:] if argv[:1] == ['submit'] else argv)
  except UsageError as e:   # a pasted command that cannot be split
    sys.stderr.write(f'ev-predict: error: {e}\n')
    return 2
  from ev_predict.pipeline import launcher, submit
  if argv[:1] == ['submit']:
    # A job from a template: submit sets the environment for the command
    # line it resolves.
    return submit.main(argv[1:])
  if argv[:1] == ['report']:
    # A finished job's run report, one HTML page.
    from ev_predict.pipeline import report
    return report.main(argv[1:])
  if argv[:1] == ['retry']:
    # A finished job's failed lines again, merged in place.
    from ev_predict.pipeline import retry
    return retry.main(argv[1:])
  launcher.quiet_runtime_logs(argv)
  return launcher.launch(argv)


_EXAMPLES = r"""examples:
  # a local file list, on this machine (Beam's DirectRunner)
  ev-predict -Dmodel_path=build/demo_model \
      -Dinput_oss_file=examples/data/filelist.txt \
      -Doutput_oss_file=out/result.txt
  # an oss:// job on a Flink cluster (credentials: OSS_ACCESS_KEY_ID and
  # OSS_ACCESS_KEY_SECRET in each process's environment)
  ev-predict submit --template flink --set FLINK_MASTER=jobmanager:8081 \
      -Dmodel_path=oss://bucket/models/resnet50/ \
      -Dinput_oss_file=oss://bucket/lists/images.txt \
      -Doutput_oss_file=oss://bucket/results/result.txt \
      -DossHost=oss-cn-hangzhou-internal.aliyuncs.com -Dnum_worker=8"""

# (code, meaning): the one list of exit codes (README's table says the same).
EXIT_CODES = (
    ('0', 'ok'),
    ('1', 'too many failed lines (above -Dmax_error_ratio), or records that '
     'do not add up; the files are complete'),
    ('2', 'bad parameters: nothing ran'),
    ('3', 'the job failed'),
    ('130/143', 'interrupted (SIGINT/SIGTERM): rerun the same command to '
     'resume'),
)


def _print_help(stream) -> None:
  lines = ['usage: ev-predict -Dkey=value ... [-v|-vv] [--beam_flag=value ...]',
           '       ev-predict pai -name ev_predict_ext -Dkey=value ...',
           '       ev-predict submit --template NAME|FILE -Dkey=value ...',
           '                         [--set NAME=value] [--dry-run]',
           '       ev-predict retry OUTPUT | report OUTPUT [--out FILE]',
           '       ev-predict --version | --help', '',
           *textwrap.wrap('Other --flags are Beam\'s (--runner, '
                          '--flink_master, ...). ev-predict submit --help: '
                          'jobs from templates. ev-predict prints its own '
                          'lines only; -v adds the libraries\' (TensorFlow, '
                          'Beam, gRPC) at info (-Dlog_level=info), -vv at '
                          'debug, with tracebacks.', _WIDTH), '',
           _EXAMPLES, '', 'exit codes:']
  for code, meaning in EXIT_CODES:
    lines.extend(textwrap.wrap(f'  {code:<9}{meaning}', _WIDTH,
                               subsequent_indent=' ' * 11))
  lines += ['', 'parameters:',
            parameters.help_text(width=_WIDTH)]
  stream.write('\n'.join(lines) + '\n')


# Distributions whose versions --version reports, each under the first of
# its names that is installed.
_VERSIONS = (('apache-beam', ('apache-beam',)),
             ('tensorflow', ('tensorflow', 'tensorflow-cpu')),
             ('openvino', ('openvino',)))


def version() -> str:
  """'ev-predict X.Y.Z (apache-beam A, tensorflow T, openvino O, Python P)',
  from the installed packages' metadata: nothing of theirs is imported."""
  # pylint: disable=import-outside-toplevel
  from importlib import metadata

  def installed(*names: str) -> str:
    for name in names:
      try:
        return metadata.version(name)
      except metadata.PackageNotFoundError:
        continue
    return 'not installed'

  others = ', '.join(f'{label} {installed(*names)}'
                     for label, names in _VERSIONS)
  python = '.'.join(map(str, sys.version_info[:3]))
  return f'ev-predict {installed("ev-predict")} ({others}, Python {python})'


if __name__ == '__main__':
  sys.exit(main())
