"""``ev-predict``: PAI's ev_predict_ext on Apache Beam. The command line
only: argv -> pipeline/launcher.py (or pipeline/submit.py) -> exit code.

Importing this module changes nothing in the process: main() sets the
runtime environment, before anything imports TensorFlow.
"""
import sys
from typing import List, Optional

from ev_predict.pipeline import launcher, parameters, submit


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ['submit']:
    # A job from a template: submit sets the environment for the command
    # line it resolves.
    return submit.main(argv[1:])
  launcher.quiet_runtime_logs(argv)
  if not argv or argv[0] in ('-h', '--help', 'help'):
    _print_help()
    return 0 if argv else 2
  return launcher.launch(argv)


def _print_help() -> None:
  lines = ['usage: ev-predict -Dkey=value ... [--beam_flag=value ...]',
           '       ev-predict pai -name ev_predict_ext -Dkey=value ...',
           '       ev-predict submit --template NAME|FILE -Dkey=value ... '
           '[--set NAME=value] [--dry-run]', '',
           'parameters:', parameters.help_text()]
  sys.stdout.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  sys.exit(main())
