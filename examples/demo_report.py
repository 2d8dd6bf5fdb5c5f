"""Reports on a demo run: result lines, error lines and the accuracy.

    python examples/demo_report.py build/demo/result.txt [--min-accuracy 0.8]

A result line is ``<input line>, <JSON>``; its ``class_name`` is compared with
the label in the image's file name (``digit_07_label-seven.png``). The error
file is ``<result>.errors``. Exits 1 when the result file is missing, holds no
labelled line, or the accuracy is below --min-accuracy; ends with the path of
the run report the job wrote beside the result.
"""
import argparse
import json
import os
import re
import sys

_LABEL = re.compile(r'label-([A-Za-z0-9]+)')


def true_label(path: str):
  match = _LABEL.search(os.path.basename(path))
  return match.group(1) if match else None


def read_lines(path: str):
  with open(path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f if line.strip()]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('result', help='result file written by ev-predict')
  parser.add_argument('--min-accuracy', type=float, default=0.8)
  args = parser.parse_args(argv)

  if not os.path.isfile(args.result):
    print(f'error: no result file {args.result}', file=sys.stderr)
    return 1
  results = read_lines(args.result)
  error_file = args.result + '.errors'

  print(f'== {args.result} ({len(results)} lines)')
  correct = labelled = 0
  for line in results:
    # The README's rule: split at the first ',' + whitespace + '{'.
    parts = re.split(r',\s+(?=\{)', line, maxsplit=1)
    path = parts[0]
    try:
      if len(parts) != 2:
        raise ValueError('no ",  {" after the path')
      predicted = json.loads(parts[1])['class_name']
    except (ValueError, KeyError, TypeError) as e:
      print(f'  BAD LINE ({e}): {line}')
      continue
    expected = true_label(path)
    if expected is None:
      mark = '?'       # no label in the file name: not counted
    else:
      labelled += 1
      correct += predicted == expected
      mark = 'ok' if predicted == expected else f'WRONG (true {expected})'
    print(f'  {mark:<5} {line}')

  if os.path.isfile(error_file):
    errors = read_lines(error_file)
    print(f'== {error_file} ({len(errors)} lines)')
    for line in errors:
      print(f'  {line}')
  else:
    print(f'== {error_file}: none')

  if not labelled:
    print('error: no labelled result lines', file=sys.stderr)
    return 1
  accuracy = correct / labelled
  print(f'== accuracy {accuracy:.2%} ({correct}/{labelled} correct)')
  report = args.result + '.report.html'
  if os.path.isfile(report):
    # Written by the job itself (ev-predict report RESULT writes it again).
    print(f'== run report: {os.path.abspath(report)} (open it in a browser)')
  else:
    print(f'error: no run report {report}', file=sys.stderr)
    return 1
  if accuracy < args.min_accuracy:
    print(f'error: accuracy below {args.min_accuracy:.0%}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
