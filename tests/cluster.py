"""What the Flink and Spark cluster tests share: ports, the file list that
must give the same lines on a cluster as on DirectRunner, and the OSS job
whose secret must show nowhere."""
import socket
import subprocess

from tests.conftest import OSS_ID, OSS_SECRET, write_image
from tests.helpers import read_lines


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def mixed_file_list(tmp_path, http_server):
  """(lines, expected number of results, expected error kinds)."""
  images = tmp_path / 'images'
  images.mkdir()
  lines = [write_image(images / f'img{i}.{ext}', 300 + i, size=(30 + i, 24),
                       fmt=fmt)
           for i, (ext, fmt) in enumerate(
               [('jpg', None), ('png', None), ('webp', 'WEBP'),
                ('bmp', None)] * 4)]
  lines.append(lines[0])  # a duplicate line gives two records
  # Relative to the repository root: the working directory of the SDK
  # workers, and of the DirectRunner run it is compared with.
  lines += ['examples/data/images/digit_00_label-two.png',
            'examples/data/images/digit_05_label-seven.webp']
  write_image(f'{http_server.root}/web.png', 399)
  lines.append(f'{http_server.base}/web.png')
  (images / 'text.jpg').write_text('not an image')
  bad = {str(images / 'text.jpg'): 'decode',
         str(images / 'missing.jpg'): 'not_found',
         f'{http_server.base}/status/404': 'not_found'}
  return lines + list(bad), len(lines), sorted(bad.values())


def run_oss_job_keeping_the_secret(tmp_path, server, model_dirs, name,
                                   cluster_flags, cwd, logs):
  """Runs an OSS job (tests/test_oss.py's inputs) in its own process with
  SDK workers at DEBUG; checks its records, and that the secret is in
  neither its output objects nor what the launcher printed. logs() gives
  the cluster's logs when the job fails."""
  from tests.test_oss import EV_PREDICT, _job_inputs
  _job_inputs(tmp_path, server, model_dirs)
  argv = ['-Dmodel_path=oss://models/m/uint8',
          '-Dinput_oss_file=oss://data/lists/list.txt',
          f'-Doutput_oss_file=oss://out/{name}/result.txt',
          f'-DossHost={server.endpoint}', '-Dmax_error_ratio=1',
          '-Dnum_worker=2', '--default_sdk_harness_log_level=DEBUG'
          ] + [f for f in cluster_flags
               if not f.startswith('--default_sdk_harness_log_level')]
  proc = subprocess.run([EV_PREDICT] + argv, capture_output=True,
                        timeout=600, check=False, cwd=cwd)
  if proc.returncode:
    print(logs())
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]
  assert len(server.get('out', f'{name}/result.txt').splitlines()) == 12
  assert len(server.get('out', f'{name}/result.txt.errors').splitlines()) == 2
  secret = OSS_SECRET.encode()
  assert secret not in proc.stdout + proc.stderr
  for key in server.keys('out'):
    assert secret not in server.get('out', key), key


def run_script(script, command, env, timeout):
  """scripts/<x>-cluster.sh command -> its stdout; fails the test if the
  script does."""
  import pytest  # pylint: disable=import-outside-toplevel
  proc = subprocess.run([str(script), command], env=env,
                        cwd=script.parent.parent, capture_output=True,
                        text=True, timeout=timeout, check=False)
  if proc.returncode:
    pytest.fail(f'{script.name} {command} failed ({proc.returncode}):\n'
                f'{proc.stdout}\n{proc.stderr}')
  return proc.stdout


def worker_environment(tmp_path_factory):
  """What a cluster's daemons pass on to SDK workers: OSS credentials (the
  OSS test server's, as a Kubernetes secret would give them), no ossutil
  config, a private model cache."""
  return dict(
      OSS_ACCESS_KEY_ID=OSS_ID, OSS_ACCESS_KEY_SECRET=OSS_SECRET,
      OSS_CONFIG_FILE=str(tmp_path_factory.mktemp('no-ossutil') / 'x'),
      EV_PREDICT_CACHE=str(tmp_path_factory.mktemp('worker-cache')))


def run_and_read(argv, out):
  """(result lines, error lines, summary) of an in-process job."""
  from ev_predict.pipeline import launcher  # pylint: disable=import-outside-toplevel
  summary = launcher.run(argv + [f'-Doutput_oss_file={out}'])
  return read_lines(out), read_lines(f'{out}.errors'), summary
