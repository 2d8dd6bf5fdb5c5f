"""Output safety: a job only ever deletes or replaces its own files, its
three output files change together, and odd bytes never kill a job."""
import base64
import json
import os
import stat

import pytest

from ev_predict.pipeline import cli, launcher
from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line


def _tree(root):
  """{relative path: bytes} of every file under root (local)."""
  found = {}
  for folder, _, files in os.walk(root):
    for name in files:
      full = os.path.join(folder, name)
      with open(full, 'rb') as f:
        found[os.path.relpath(full, root)] = f.read()
  return found


def _bucket(server, bucket='out'):
  return {k: server.get(bucket, k) for k in server.keys(bucket)}


def _job(tmp_path, model_dirs, n=3, name='list.txt'):
  imgs = [write_image(tmp_path / f'img{i}.png', 300 + i) for i in range(n)]
  listing = tmp_path / name
  listing.write_text('\n'.join(imgs + [str(tmp_path / 'gone.jpg')]) + '\n')
  return [f'-Dmodel_path={model_dirs["uint8"]}',
          f'-Dinput_oss_file={listing}', '-Dmax_error_ratio=1']


def _main(argv, capsys):
  code = cli.main(argv)
  err = capsys.readouterr().err
  return code, [l for l in err.splitlines() if l.startswith('ev-predict:')]


def _full_folder(path):
  path.mkdir(parents=True)
  (path / 'keep.txt').write_bytes(b'precious\n')
  (path / 'sub').mkdir()
  (path / 'sub' / 'deep.bin').write_bytes(os.urandom(1000))
  return _tree(path)


@pytest.mark.parametrize('param, spelling', [
    ('output_oss_file', '{d}'),
    ('output_oss_file', '{d}/'),
    ('error_oss_file', '{d}'),
    ('error_oss_file', '{d}/'),
])
def test_local_directory_output_is_refused(tmp_path, model_dirs, capsys,
                                           param, spelling):
  folder = tmp_path / 'data'
  before = _full_folder(folder)
  argv = _job(tmp_path, model_dirs) + [
      f'-D{param}={spelling.format(d=folder)}']
  if param != 'output_oss_file':
    argv.append(f'-Doutput_oss_file={tmp_path / "res.txt"}')
  code, lines = _main(argv, capsys)
  assert code == 2, lines
  assert 'is a directory' in lines[-1]
  assert _tree(folder) == before
  assert sorted(os.listdir(folder)) == ['keep.txt', 'sub']


def test_directory_at_summary_path_is_refused(tmp_path, model_dirs, capsys):
  out = tmp_path / 'res.txt'
  before = _full_folder(tmp_path / 'res.txt.summary.json')
  code, lines = _main(_job(tmp_path, model_dirs) + [
      f'-Doutput_oss_file={out}'], capsys)
  assert code == 2 and 'the summary file' in lines[-1]
  assert _tree(tmp_path / 'res.txt.summary.json') == before
  assert not out.exists()


@pytest.mark.parametrize('param, path', [
    ('output_oss_file', 'oss://out/images/'),
    ('output_oss_file', 'oss://out/images'),
    ('error_oss_file', 'oss://out/images'),
    ('error_oss_file', 'oss://out/images/'),
])
def test_oss_prefix_output_is_refused(tmp_path, oss_env, model_dirs, capsys,
                                      param, path):
  server = oss_env
  for key in ('images/a.jpg', 'images/b.jpg', 'images/deep/c.jpg'):
    server.put('out', key, os.urandom(500))
  server.put('out', 'other.txt', b'other')
  before = _bucket(server)
  argv = _job(tmp_path, model_dirs) + [
      f'-D{param}={path}', f'-DossHost={server.endpoint}', '-Dnum_worker=2']
  if param != 'output_oss_file':
    argv.append('-Doutput_oss_file=oss://out/res.txt')
  code, lines = _main(argv, capsys)
  assert code == 2, lines
  assert 'is a directory' in lines[-1]
  assert _bucket(server) == before
  assert not server.requests.count(op='DeleteObject')
  assert not server.requests.count(op='DeleteMultipleObjects')


@pytest.mark.parametrize('extra, needle', [
    (['-Derror_oss_file={out}'], 'output_oss_file and -Derror_oss_file'),
    (['-Doutput_oss_file={listing}'], 'input_oss_file and -Doutput_oss_file'),
    (['-Derror_oss_file=file://{listing}'], 'input_oss_file and '
     '-Derror_oss_file'),
    (['-Derror_oss_file={tmp}/./x/../res.txt.summary.json'],
     'error_oss_file and the summary file'),
    (['-Derror_oss_file={link}'], 'output_oss_file and -Derror_oss_file'),
    (['-Doutput_oss_file={model}/res.txt'], 'inside the model directory'),
    (['-Derror_oss_file={model}/variables/e.txt'],
     'inside the model directory'),
])
def test_two_outputs_on_one_file_are_refused(tmp_path, model_dirs, capsys,
                                             extra, needle):
  argv = _job(tmp_path, model_dirs)
  listing = tmp_path / 'list.txt'
  out = tmp_path / 'res.txt'
  out.write_bytes(b'old result\n')
  link = tmp_path / 'link.txt'
  link.symlink_to(out)
  fmt = dict(out=out, listing=listing, tmp=tmp_path, link=link,
             model=model_dirs['uint8'])
  extra = [e.format(**fmt) for e in extra]
  if not any(e.startswith('-Doutput_oss_file') for e in extra):
    extra.append(f'-Doutput_oss_file={out}')
  before = _tree(tmp_path)
  models_before = _tree(model_dirs['uint8'])
  code, lines = _main(argv + extra, capsys)
  assert code == 2, lines
  assert needle in lines[-1]
  assert _tree(tmp_path) == before
  assert _tree(model_dirs['uint8']) == models_before


def test_accounting_reads_the_committed_files(tmp_path, model_dirs, capsys,
                                              monkeypatch):
  """The summary counts the lines the staged files hold, and the launcher
  checks that the committed files are those: a line that appears in between
  (someone else writing) makes accounting_ok false and the exit code 1."""
  from ev_predict.transforms import write
  out = tmp_path / 'res.txt'
  argv = _job(tmp_path, model_dirs) + [f'-Doutput_oss_file={out}']
  assert _main(argv, capsys)[0] == 0
  summary = json.loads((tmp_path / 'res.txt.summary.json').read_text())
  assert (summary['result_lines'], summary['error_lines']) == (3, 1)
  assert summary['result_bytes'] == out.stat().st_size
  assert summary['accounting_ok']

  commit = write.commit

  def meddling_commit(paths):
    with open(paths.staging(paths.result), 'ab') as f:
      f.write(b'a line nobody classified\n')
    commit(paths)

  monkeypatch.setattr(write, 'commit', meddling_commit)
  code, lines = _main(argv, capsys)
  assert code == 1
  assert lines[-1] == 'ev-predict: error: records do not match input lines'


def _three(out, errors=None):
  errors = errors or f'{out}.errors'
  return [read_bytes(p) for p in (out, errors, f'{out}.summary.json')]


def read_bytes(path):
  with open(path, 'rb') as f:
    return f.read()


def _no_temporaries(names):
  return [n for n in names if '.tmp-' in n or '.bak-' in n or
          '.shards-' in n]


def test_failed_error_file_write_keeps_all_three_old_files(
    tmp_path, oss_env, model_dirs, capsys):
  """The error file is on OSS and every PUT of it fails (403): the job
  fails (exit 3) and result, errors and summary are all the old ones."""
  server = oss_env
  out = tmp_path / 'o' / 'res.txt'
  errors = 'oss://out/errs/res.errors'
  argv = _job(tmp_path, model_dirs) + [
      f'-Doutput_oss_file={out}', f'-Derror_oss_file={errors}',
      f'-DossHost={server.endpoint}']
  assert _main(argv, capsys)[0] == 0
  old = (read_bytes(out), server.get('out', 'errs/res.errors'),
         read_bytes(f'{out}.summary.json'))
  assert old[1].startswith(str(tmp_path / 'gone.jpg').encode())
  # The second run has other lines: any new file would differ.
  argv = _job(tmp_path, model_dirs, n=5, name='list2.txt') + argv[3:]
  with server.faults(fail_first=10**6, error_status=403,
                     fault_filter=lambda r: r.op in (
                         'PutObject', 'InitiateMultipartUpload') and
                     r.key.startswith('errs/')):
    code, lines = _main(argv, capsys)
  assert (read_bytes(out), server.get('out', 'errs/res.errors'),
          read_bytes(f'{out}.summary.json')) == old
  assert code == 3, lines
  assert lines[-1].startswith('ev-predict: job failed:')
  assert not _no_temporaries(os.listdir(out.parent))
  assert [k for k in server.keys('out') if k.startswith('errs/')] == [
      'errs/res.errors']


def test_failed_commit_restores_all_three_old_files(tmp_path, oss_env,
                                                    model_dirs, capsys):
  """All three files on OSS; moving the new error file in fails once
  (403 on its CopyObject): the result already moved in is taken back and
  the old three are restored."""
  server = oss_env
  out = 'oss://out/c/res.txt'
  argv = _job(tmp_path, model_dirs) + [
      f'-Doutput_oss_file={out}', f'-DossHost={server.endpoint}']
  assert _main(argv, capsys)[0] == 0
  keys = ['c/res.txt', 'c/res.txt.errors', 'c/res.txt.report.html',
          'c/res.txt.summary.json']
  old = [server.get('out', k) for k in keys]
  argv = _job(tmp_path, model_dirs, n=5, name='list2.txt') + argv[3:]
  server.requests.clear()
  with server.faults(fail_first=1, error_status=403,
                     fault_filter=lambda r: r.op == 'CopyObject' and
                     r.key == 'c/res.txt.errors'):
    code, lines = _main(argv, capsys)
  assert [server.get('out', k) for k in keys] == old
  assert code == 3, lines
  # The failed copy was the commit's (the new result had moved in).
  assert server.requests.count(op='CopyObject', key='c/res.txt',
                               status=200) == 2
  # Beside the old three, only the state a rerun continues from.
  assert [k for k in server.keys('out') if k.startswith('c/') and
          not k.startswith('c/res.txt.ev-resume/')] == keys
  assert not server.uploads('out')


def _errors_by_line(path):
  """{input line: error body}; every body strict UTF-8 JSON."""
  got = {}
  for line in read_lines(path):
    cut = line.rindex(b',  {"')
    body = json.loads(line[cut + 3:].decode('utf-8'))
    assert list(body) == ['error', 'message']
    got[line[:cut]] = body
  return got


def test_non_utf8_lines_are_echoed_and_never_kill_the_job(tmp_path,
                                                          model_dirs):
  """Lines are bytes: paths with \\xff/\\xfe bytes (found or missing),
  JSON and base64 lines with invalid UTF-8. Every line comes back byte for
  byte, every message is valid UTF-8 JSON."""
  root = os.fsencode(str(tmp_path))
  found = [root + b'/caf\xe9-\xff.png', root + b'/\xfe\xfe.png']
  for i, path in enumerate(found):
    write_image(os.fsdecode(path), 40 + i)
  missing = [root + b'/gone-\xff.jpg', root + b'/\xfe/\xff\xfe.png']
  json_bad = b'{"url": "/x/\xff.jpg"}'
  listing = tmp_path / 'list.txt'
  listing.write_bytes(b'\n'.join(found + missing + [json_bad]) + b'\n')
  out = tmp_path / 'o' / 'res.txt'
  argv = [f'-Dmodel_path={model_dirs["uint8"]}', '-Dmax_error_ratio=1']
  summary = launcher.run(argv + [f'-Dinput_oss_file={listing}',
                            f'-Doutput_oss_file={out}'])
  assert sorted(split_output_line(l)[0] for l in read_lines(out)) == \
      sorted(found)
  got = _errors_by_line(f'{out}.errors')
  assert sorted(got) == sorted(missing + [json_bad])
  for path in missing:
    assert got[path]['error'] == 'not_found'
    # The path's odd bytes are named, not dropped.
    shown = path.decode('utf-8', 'backslashreplace')
    assert os.path.basename(shown) in got[path]['message']
  assert got[json_bad]['error'] == 'bad_line'
  assert summary['accounting_ok'] and summary['records'] == 5
  assert (summary['result_lines'], summary['error_lines']) == (2, 3)

  # Base64 lines with bytes that are neither base64 nor UTF-8.
  with open(found[0], 'rb') as f:
    good = base64.b64encode(f.read())
  bad = [good[:40] + b'\xff\xfe' + good[40:], b'data:image/png;base64,\xfe',
         b'{"image": "\xff"}']
  listing.write_bytes(b'\n'.join([good] + bad) + b'\n')
  summary = launcher.run(argv + [f'-Dinput_oss_file={listing}',
                            f'-Doutput_oss_file={out}',
                            '-Dimage_type=base64'])
  assert [split_output_line(l)[0] for l in read_lines(out)] == [good]
  got = _errors_by_line(f'{out}.errors')
  assert sorted(got) == sorted(bad)
  assert {b['error'] for b in got.values()} == {'bad_line'}
  assert summary['accounting_ok'] and summary['records'] == 4


@pytest.mark.parametrize('trick', ['input', 'model'])
def test_links_and_dotdot_cannot_reach_input_or_model(tmp_path, model_dirs,
                                                      capsys, trick):
  """'link/..' is the link target's parent, as the kernel resolves it: an
  output spelled so must be compared (and written) as what it names."""
  deep = tmp_path / 'deep' / 'a' / 'b'
  deep.mkdir(parents=True)
  argv = _job(tmp_path / 'deep', model_dirs)
  listing = tmp_path / 'deep' / 'list.txt'
  before = {'list': listing.read_bytes(), 'model': _tree(model_dirs['uint8'])}
  if trick == 'input':
    os.symlink(deep, tmp_path / 'lnk')
    # Lexically tmp_path/list.txt; really tmp_path/deep/list.txt.
    out = f'{tmp_path}/lnk/../../list.txt'
  else:
    os.symlink(os.path.join(model_dirs['uint8'], 'variables'),
               tmp_path / 'lnkm')
    out = f'{tmp_path}/lnkm/../r.txt'
  code, lines = _main(argv + [f'-Doutput_oss_file={out}'], capsys)
  assert code == 2, lines
  assert listing.read_bytes() == before['list']
  assert _tree(model_dirs['uint8']) == before['model']
  assert not [n for n in os.listdir(tmp_path) if '.shards-' in n]


@pytest.mark.parametrize('kind', ['fifo', 'device', 'dot'])
def test_special_output_targets_are_refused(tmp_path, model_dirs, capsys,
                                            kind):
  """A FIFO or a device (think -Doutput_oss_file=/dev/null as root) would be
  replaced by a regular file; 'dir/.' names a directory."""
  target = tmp_path / 'target'
  if kind == 'fifo':
    os.mkfifo(target)
  elif kind == 'device':
    os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
  else:
    target.mkdir()
    target = f'{target}/.'
  code, lines = _main(_job(tmp_path, model_dirs) + [
      f'-Doutput_oss_file={target}'], capsys)
  assert code == 2, lines
  if kind != 'dot':
    mode = os.lstat(target).st_mode
    assert not stat.S_ISREG(mode)


def test_unknown_output_scheme_is_a_usage_error(tmp_path, model_dirs,
                                                capsys):
  code, lines = _main(_job(tmp_path, model_dirs) + [
      '-Doutput_oss_file=ftp://host/r.txt'], capsys)
  assert code == 2 and "scheme 'ftp'" in lines[-1], lines


def test_truncated_compressed_list_is_refused(tmp_path, model_dirs, capsys):
  """Beam's reader ends quietly at a cut gzip stream: the lines after the
  cut would be lost with accounting_ok true."""
  import gzip  # pylint: disable=import-outside-toplevel
  argv = _job(tmp_path, model_dirs)
  listing = tmp_path / 'list.txt'
  data = gzip.compress(listing.read_bytes() * 40)
  (tmp_path / 'cut.txt.gz').write_bytes(data[:-30])
  argv = [a for a in argv if not a.startswith('-Dinput_oss_file=')]
  code, lines = _main(argv + [f'-Dinput_oss_file={tmp_path}/cut.txt.gz',
                              f'-Doutput_oss_file={tmp_path}/r.txt'], capsys)
  assert code == 2 and 'not a complete gzip stream' in lines[-1], lines
  assert not (tmp_path / 'r.txt').exists()
