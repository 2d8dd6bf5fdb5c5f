"""Running a job in-process and reading its outputs back."""
import json
import os

from ev_predict.pipeline import launcher
from ev_predict.transforms import merge


def split_output_line(line: bytes):
  """'<input line>,  <json>' -> (input line, parsed json), split where the
  product's own merge splits it."""
  value, part = merge.split_output_line(line)
  return value, json.loads(part.decode('utf-8'))


def read_lines(path):
  with open(path, 'rb') as f:
    data = f.read()
  assert not data or data.endswith(b'\n')
  return data.splitlines()


def run_job(tmp_path, lines, model_path, name='job', raw=None, **params):
  """Writes the file list, runs ev-predict in-process, returns
  (result lines, error lines, summary)."""
  listing = tmp_path / f'{name}.txt'
  if raw is None:
    raw = b''.join(
        (l if isinstance(l, bytes) else l.encode('utf-8')) + b'\n'
        for l in lines)
  listing.write_bytes(raw)
  out = tmp_path / name / 'result.txt'
  argv = [f'-Dmodel_path={model_path}', f'-Dinput_oss_file={listing}',
          f'-Doutput_oss_file={out}', '-Dmax_error_ratio=1']
  argv += [f'-D{k}={v}' for k, v in params.items()]
  summary = launcher.run(argv)
  results = read_lines(out)
  errors = read_lines(str(out) + '.errors')
  leftovers = [n for n in os.listdir(out.parent) if '.tmp-' in n or
               '.shards-' in n]
  assert not leftovers, leftovers
  return results, errors, summary


def assert_each_line_once(out, lines, summary, error_kinds):
  """The result and error files at out hold every line of lines exactly
  once, the errors being of error_kinds (sorted), and the job agrees."""
  results, errors = read_lines(out), read_lines(f'{out}.errors')
  names = [split_output_line(l)[0].decode() for l in results + errors]
  assert sorted(names) == sorted(lines)
  assert sorted(split_output_line(l)[1]['error'] for l in errors) == \
      sorted(error_kinds)
  assert summary['accounting_ok'] and summary['lines_read'] == len(lines)
  assert summary['succeeded'] == len(results)


# The launcher's own /proc table (it stops its workers from it).
process_table = launcher.process_table
