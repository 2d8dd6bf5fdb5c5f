"""``ev-predict``: PAI's ev_predict_ext on Apache Beam. The command line
only: argv -> pipeline/launcher.py (or pipeline/submit.py) -> exit code.

Importing this module changes nothing in the process: main() sets the
runtime environment, before anything imports TensorFlow. Help imports no
Beam (whose import logs warnings such as "apitools not found").
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
  # pylint: disable=import-outside-toplevel
  from ev_predict.pipeline import launcher, submit
  if argv[:1] == ['submit']:
    # A job from a template: submit sets the environment for the command
    # line it resolves.
    return submit.main(argv[1:])
  if argv[:1] == ['retry']:
    # A finished job's failed lines again, merged in place.
    from ev_predict.pipeline import retry
    return retry.main(argv[1:])
  launcher.quiet_runtime_logs(argv)
  return launcher.launch(argv)


def _print_help(stream) -> None:
  lines = ['usage: ev-predict -Dkey=value ... [--beam_flag=value ...]',
           '       ev-predict pai -name ev_predict_ext -Dkey=value ...',
           '       ev-predict submit --template NAME|FILE -Dkey=value ...',
           '                         [--set NAME=value] [--dry-run]', '',
           *textwrap.wrap('Other --flags are Beam\'s (--runner, '
                          '--flink_master, ...). ev-predict submit --help: '
                          'jobs from templates.', _WIDTH),
           *textwrap.wrap('exit codes: 0 ok, 1 too many failed lines (or '
                          'records that do not add up), 2 usage (nothing '
                          'ran), 3 job failed, 130/143 interrupted (SIGINT/'
                          'SIGTERM)', _WIDTH, subsequent_indent='  '), '',
           'parameters:', parameters.help_text(width=_WIDTH)]
  stream.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  sys.exit(main())
