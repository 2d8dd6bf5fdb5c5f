"""Access rules: -Dbuckets admits the exact key that will be requested, and
-Dallow_local_files=false keeps a file list off the local disk."""
import json

import pytest

from ev_predict.pipeline import launcher
from ev_predict.pipeline.commandline import UsageError
from tests.conftest import write_image
from tests.helpers import run_job, split_output_line
from ev_predict.transforms import access

ALLOW = access.parse_allow_list('oss://b/allowed/')


@pytest.mark.parametrize('path, ok', [
    ('oss://b/allowed/x.jpg', True),
    ('oss://b/allowed/sub/x.jpg', True),
    ('oss://b/allowed/', True),
    # The key requested would be '/allowed/x': outside 'allowed/'.
    ('oss://b//allowed/x', False),
    # Inside as a string, but an empty segment: refused, as is every key a
    # bucket mount or sync tool would rewrite into another.
    ('oss://b/allowed//x', False),
    ('oss://b/allowed/../secret', False),
    ('oss://b/allowed/./x', False),
    ('oss://b/./allowed/x', False),
    ('oss://b/allowed/x/..', False),
    ('oss://b/allowedX/y', False),
    ('oss://B/allowed/x', False),
    ('oss://b/allowed', False),     # the key 'allowed', not under 'allowed/'
    ('oss://c/allowed/x', False),
    ('OSS://b/secret/x', False),
    (' oss://b/secret/x', False),
    ('/local/x.jpg', True),         # local files: -Dallow_local_files
    ('http://h/x.jpg', True),
])
def test_allow_list_admits_the_exact_key(path, ok):
  assert access.allowed(path, ALLOW) is ok


def test_allow_list_entries_must_be_plain():
  for bad in ('oss://b//x/', 'oss://b/./x/', 'oss://b/x/../y/', 'oss://b/x//'):
    with pytest.raises(ValueError):
      access.parse_allow_list(bad)
  # A model directory named without its slash is the folder itself.
  assert access.allowed('oss://b/allowed', ALLOW, folder=True)


def test_policy_refusals():
  """The decision fetch takes before any request: (kind, message) or None."""
  policy = access.AccessPolicy(allowed_prefixes=ALLOW,
                               allow_local_files=False)
  assert policy.refusal('oss://b/allowed/x.jpg') is None
  assert policy.refusal('http://h/x.jpg') is None
  assert policy.refusal('oss://b/secret/x.jpg')[0] == 'forbidden'
  assert policy.refusal('/x.jpg')[0] == 'forbidden'
  assert policy.refusal('file:///x.jpg')[0] == 'forbidden'
  # Judged by the readers' parse: not a file URL, a relative local path.
  assert policy.refusal('\xa0file:///x.jpg')[0] == 'forbidden'
  assert policy.refusal('fi\tle:///x.jpg')[0] == 'bad_line'
  assert policy.refusal('oss://')[0] == 'bad_line'   # no bucket to judge
  open_policy = access.AccessPolicy()
  assert open_policy.refusal('/x.jpg') is None
  assert open_policy.refusal('oss://any/x.jpg') is None
  assert open_policy.refusal('o\x00ss://b/x')[0] == 'bad_line'


def test_policy_judges_resolved_addresses():
  blocking = access.AccessPolicy(block_private_networks=True)
  assert blocking.refused_address(['8.8.8.8']) is None
  assert str(blocking.refused_address(['8.8.8.8', '127.0.0.1'])) == \
      '127.0.0.1'
  assert str(blocking.refused_address(['fe80::1%eth0'])) == 'fe80::1'
  assert access.AccessPolicy().refused_address(['127.0.0.1']) is None


def test_refused_keys_never_reach_the_server(tmp_path, oss_env, model_dirs):
  server = oss_env
  with open(write_image(tmp_path / 'x.jpg', 3), 'rb') as f:
    image = f.read()
  # Every refused key exists: without the rule the job would read them.
  keys = ['img/x.jpg', '/img/x.jpg', 'img//x.jpg', './img/x.jpg',
          'img/./x.jpg', 'img/../secret/x.jpg', 'imgX/x.jpg', 'img']
  for key in keys:
    server.put('data', key, image)
  lines = [f'oss://data/{k}' for k in keys] + ['oss://out/x.jpg']
  server.put('out', 'x.jpg', image)
  # No report: its thumbnails are requests of their own (counted below).
  results, errors, summary = run_job(
      tmp_path, lines, model_dirs['uint8'], ossHost=server.endpoint,
      buckets='oss://data/img/', report='false')
  assert [split_output_line(l)[0] for l in results] == [b'oss://data/img/x.jpg']
  kinds = {split_output_line(l)[0].decode(): split_output_line(l)[1]['error']
           for l in errors}
  assert kinds == {l: 'forbidden' for l in lines[1:]}
  assert summary['failed_by_kind'] == {'forbidden': len(lines) - 1}
  gets = [r for r in server.requests if r.method == 'GET']
  assert [(r.bucket, r.key) for r in gets] == [('data', 'img/x.jpg')]


def test_local_files_can_be_refused(tmp_path, model_dirs, http_server):
  image = write_image(tmp_path / 'ok.jpg', 4)
  write_image(f'{http_server.root}/local-rule.jpg', 5)
  lines = [image, f'file://{image}', str(tmp_path / 'missing.jpg'),
           f'{http_server.base}/local-rule.jpg']
  results, errors, _ = run_job(tmp_path, lines, model_dirs['uint8'],
                               name='nolocal', allow_local_files='false')
  assert [split_output_line(l)[0].decode() for l in results] == [lines[3]]
  bodies = {split_output_line(l)[0].decode(): split_output_line(l)[1]
            for l in errors}
  # 'missing.jpg' is forbidden too, not not_found: the disk was not asked.
  assert {l: b['error'] for l, b in bodies.items()} == {
      l: 'forbidden' for l in lines[:3]}
  assert 'allow_local_files' in bodies[image]['message']
  # The default reads them.
  results, errors, _ = run_job(tmp_path, lines[:2], model_dirs['uint8'],
                               name='local')
  assert len(results) == 2 and not errors
  with pytest.raises(UsageError, match='allow_local_files'):
    launcher.run([f'-Dmodel_path={model_dirs["uint8"]}',
             f'-Dinput_oss_file={tmp_path / "nolocal.txt"}',
             f'-Doutput_oss_file={tmp_path / "x" / "r.txt"}',
             '-Dallow_local_files=maybe'])


def test_control_characters_cannot_smuggle_a_local_file(tmp_path, model_dirs):
  """urlsplit drops tabs/CR anywhere and leading C0 characters: a scheme test
  on the raw string saw 'fi\\tle' (not local) while the reader opened
  file:///…. Such lines are bad_line, and locality is judged by the same
  parse the readers use ('\\xa0file:///x' is a relative local path)."""
  image = write_image(tmp_path / 'ok.png', 6)
  lines = ['\x01file://' + image, 'fi\tle://' + image, 'file\t://' + image,
           'fi\rle://' + image, json.dumps({'url': '\x01file://' + image}),
           'o\tss://b/other/x', 'file://[/x', '\xa0file://' + image]
  raw = b''.join(l.encode('utf-8') + b'\n' for l in lines)
  results, errors, summary = run_job(tmp_path, None, model_dirs['uint8'],
                                     raw=raw, name='ctl',
                                     allow_local_files='false')
  assert not results
  # Split on newlines only: one echoed line holds a CR.
  raw_errors = (tmp_path / 'ctl' / 'result.txt.errors').read_bytes()
  kinds = {split_output_line(l)[0]: split_output_line(l)[1]['error']
           for l in raw_errors.split(b'\n') if l}
  assert kinds == {l.encode('utf-8'): 'bad_line' for l in lines[:6]} | {
      lines[6].encode('utf-8'): 'forbidden',
      lines[7].encode('utf-8'): 'forbidden'}, errors
  assert summary['accounting_ok']
  # Local files allowed: a file URL that does not parse is the line's fault.
  _, errors, _ = run_job(tmp_path, ['file://[/x'], model_dirs['uint8'],
                         name='badfile')
  assert split_output_line(errors[0])[1]['error'] == 'bad_line', errors
