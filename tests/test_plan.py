"""pipeline/graph.py plan(): every parameter problem found before any work,
one message each and all of them at once; and the JobPlan fields derived
from the parameters (defaults that scale with the cores, the accelerator
hint, the decode threads' priority). Through the public path only: argv ->
launcher.make_options -> graph.plan."""
import os
import re

import pytest

from ev_predict.pipeline import launcher, graph
from ev_predict.pipeline.commandline import UsageError
from ev_predict.transforms import parallel
from tests import models

REQUIRED = ['-Dmodel_path is required', '-Dinput_oss_file (or -Dinput_table) is required',
            '-Doutput_oss_file (or -Doutput_table) is required']
# Enough for the checks to pass the required ones; no file is read before
# every parameter problem is reported.
PATHS = ['-Dmodel_path=/nowhere/m', '-Dinput_oss_file=/nowhere/in.txt',
         '-Doutput_oss_file=/nowhere/out.txt']


def _problems(argv):
  """The messages of the UsageError that plan() raises for argv."""
  with pytest.raises(UsageError) as e:
    graph.plan(launcher.make_options(argv))
  return str(e.value).split('; ')


def test_required_parameters():
  assert sorted(_problems([])) == sorted(REQUIRED)
  assert _problems(PATHS[1:]) == REQUIRED[:1]
  assert _problems(PATHS[:2] + ['-Doutput_oss_file=']) == REQUIRED[2:]


def _refusal(arg):
  """The one-line message plan() refuses PATHS + [arg] with."""
  with pytest.raises(UsageError) as e:
    graph.plan(launcher.make_options(PATHS + [arg]))
  return str(e.value)


@pytest.mark.parametrize('arg, message', [
    ('-Dnum_worker=two', "-Dnum_worker must be an integer, not 'two'"),
    ('-Dbatch_size=1.5', "-Dbatch_size must be an integer, not '1.5'"),
    ('-DcpuRequired=8 cores', "-DcpuRequired must be an integer, not "
     "'8 cores'"),
    ('-Dfetch_timeout=soon', "-Dfetch_timeout must be a number, not 'soon'"),
    ('-Dmax_error_ratio=5%', "-Dmax_error_ratio must be a number, not '5%'"),
])
def test_numbers_must_parse(arg, message):
  assert _refusal(arg) == message


@pytest.mark.parametrize('arg, message', [
    ('-Dimage_type=bytes', "-Dimage_type must be one of url, base64, not "
     "'bytes'"),
    ('-Dbackend=gpu', "-Dbackend must be one of auto, tensorflow, openvino, "
     "not 'gpu'"),
    ('-Dprecision=f16', "-Dprecision must be one of f32, bf16, not 'f16'"),
    ('-Dpixel_scale=0-2', "-Dpixel_scale must be one of 0-255, 0-1, -1-1, "
     "mean_std, not '0-2'"),
    ('-Ddecode_priority=high', "-Ddecode_priority must be one of low, "
     "normal, not 'high'"),
    ('-Dmodel_type=detector', '-Dmodel_type=detector is not supported; '
     'supported: classifier, multilabel_classifier'),
])
def test_choices(arg, message):
  assert _refusal(arg) == message


@pytest.mark.parametrize('arg, message', [
    ('-Dnum_worker=0', "-Dnum_worker must be at least 1, not '0'"),
    ('-Dbatch_size=0', "-Dbatch_size must be at least 1, not '0'"),
    ('-Dfetch_threads=-3', "-Dfetch_threads must be at least 1, not '-3'"),
    ('-Dmax_image_bytes=0', "-Dmax_image_bytes must be at least 1, not '0'"),
    ('-Dmax_image_pixels=0', "-Dmax_image_pixels must be at least 1, "
     "not '0'"),
    ('-DcpuRequired=0', "-DcpuRequired must be at least 1, not '0'"),
    ('-Dfetch_retries=-1', "-Dfetch_retries must be at least 0, not '-1'"),
    ('-Dmax_restarts=-1', "-Dmax_restarts must be at least 0, not '-1'"),
    ('-Dfetch_timeout=-2.5', "-Dfetch_timeout must be > 0, not '-2.5'"),
    ('-Dmax_error_ratio=1.5', "-Dmax_error_ratio must be between 0 and 1, "
     "not '1.5'"),
    ('-Dmax_error_ratio=-0.5', "-Dmax_error_ratio must be between 0 and 1, "
     "not '-0.5'"),
    ('-Djpeg_draft=maybe', "-Djpeg_draft must be true or false, not "
     "'maybe'"),
    ('-Dallow_local_files=nope', "-Dallow_local_files must be true or "
     "false, not 'nope'"),
    ('-Dimage_size=0x5', '-Dimage_size must be N or WIDTHxHEIGHT'),
    ('-Dimage_size=big', '-Dimage_size must be N or WIDTHxHEIGHT'),
    ('-Dpixel_mean=1,a', '-Dpixel_mean must be comma-separated numbers'),
])
def test_bounds_and_forms(arg, message):
  assert _refusal(arg) == message


@pytest.mark.parametrize('mean, std', [('1,2', '1'), ('1', '1,2'),
                                       ('1,2,3', '1,0,1'), ('', '1')])
def test_mean_std_needs_one_or_three_values(mean, std):
  argv = PATHS + ['-Dpixel_scale=mean_std', f'-Dpixel_mean={mean}',
                  f'-Dpixel_std={std}']
  assert _problems(argv) == [
      '-Dpixel_scale=mean_std needs -Dpixel_mean and -Dpixel_std with 1 or 3 '
      'values (std non-zero)']


def test_paths_outside_buckets():
  argv = ['-Dmodel_path=oss://models/m', '-Dinput_oss_file=oss://data/in.txt',
          '-Doutput_oss_file=oss://out/r.txt', '-Dbuckets=oss://data/,'
          'oss://out/']
  assert _problems(argv) == [
      '-Dmodel_path=oss://models/m is outside -Dbuckets (oss://data/, '
      'oss://out/)']
  assert _problems(argv[:3] + ['-Dbuckets=http://x']) == [
      "-Dbuckets: not an OSS path: 'http://x'"]


def test_every_problem_is_reported_once_and_together():
  argv = ['-Dimage_type=bytes', '-Dnum_worker=0', '-Dfetch_timeout=-1.5',
          '-Djpeg_draft=maybe', '-Dbackend=gpu', '-Dmax_error_ratio=1.5',
          '-Dimage_size=big', '-Dfetch_retries=-1']
  assert sorted(_problems(argv)) == sorted(REQUIRED + [
      "-Dimage_type must be one of url, base64, not 'bytes'",
      "-Dnum_worker must be at least 1, not '0'",
      "-Dfetch_timeout must be > 0, not '-1.5'",
      "-Djpeg_draft must be true or false, not 'maybe'",
      "-Dbackend must be one of auto, tensorflow, openvino, not 'gpu'",
      "-Dmax_error_ratio must be between 0 and 1, not '1.5'",
      '-Dimage_size must be N or WIDTHxHEIGHT',
      "-Dfetch_retries must be at least 0, not '-1'"])


@pytest.fixture
def job(tmp_path, model_dirs):
  """plan() for a real model and list plus the given -D parameters."""
  listing = tmp_path / 'list.txt'
  listing.write_text('/nowhere/x.jpg\n')
  base = [f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
          f'-Doutput_oss_file={tmp_path / "out" / "r.txt"}']

  def make(*params):
    return graph.plan(launcher.make_options(base + list(params)))
  make.tmp_path = tmp_path
  return make


def test_plan_fields_from_the_parameters(job):
  tmp_path = job.tmp_path
  plan = job('-Dbatch_size=5', '-Ddecode_threads=6', '-Dfetch_threads=7',
             '-Dfetch_timeout=2.5', '-Dfetch_retries=0',
             '-Dmax_image_bytes=1000', '-Dmax_image_pixels=2000',
             '-Djpeg_draft=false', '-Dblock_private_networks=yes',
             '-Dallow_local_files=0', '-Dmax_error_ratio=0.25',
             '-Dbackend=tensorflow', '-Ddecode_priority=normal',
             f'-Derror_oss_file={tmp_path}/e.txt', '-Dnum_worker=3',
             '-DcpuRequired=250')
  assert (plan.batch_size, plan.decode_threads, plan.values.fetch_threads) == \
      (5, 6, 7)
  assert (plan.workers, plan.cores_per_worker) == (3, 2)
  assert (plan.fetch.read_timeout, plan.fetch.retries, plan.fetch.max_bytes,
          plan.fetch.pool_size) == (2.5, 0, 1000, 7)
  assert (plan.fetch.block_private_networks,
          plan.fetch.allow_local_files) == (True, False)
  assert (plan.decode.size, plan.decode.max_pixels, plan.decode.draft) == (
      (models.SIZE, models.SIZE), 2000, False)
  assert (plan.max_error_ratio, plan.values.backend, plan.pool_nice) == (
      0.25, 'tensorflow', 0)
  assert plan.labels == models.LABELS
  assert plan.paths.targets == (str(tmp_path / 'out' / 'r.txt'),
                                f'{tmp_path}/e.txt',
                                str(tmp_path / 'out' / 'r.txt.summary.json'))
  assert re.fullmatch(r'\d{8}-\d{6}-[0-9a-f]{8}', plan.run_id)
  assert plan.paths.run_id == plan.run_id
  assert plan.launcher['pid'] == os.getpid()
  assert plan.accelerator is None


def test_plan_defaults(job):
  plan = job()
  assert (plan.values.image_type, plan.values.backend, plan.values.precision, plan.workers) == (
      'url', 'auto', 'f32', 1)
  assert (plan.values.fetch_threads, plan.fetch.read_timeout, plan.fetch.retries,
          plan.fetch.max_bytes) == (32, 30.0, 3, 64 << 20)
  assert (plan.fetch.block_private_networks,
          plan.fetch.allow_local_files) == (False, True)
  assert (plan.decode.max_pixels, plan.decode.draft) == (89_478_485, True)
  assert plan.max_error_ratio == 0.05
  assert plan.paths.errors == plan.paths.result + '.errors'
  # Fetch and decode threads yield the cores to the model by default.
  assert plan.pool_nice == parallel.BACKGROUND_NICE > 0


@pytest.mark.parametrize('cpu, workers, cores, batch, decode', [
    # -DcpuRequired (hundredths of a core) sets a worker's cores...
    ('100', '1', 1, 8, 2),
    ('50', '1', 1, 8, 2),        # under one core: one
    ('250', '1', 2, 8, 3),       # whole cores
    ('300', '1', 3, 12, 4),      # 4 images per core
    ('1000', '4', 10, 40, 11),   # per worker, whatever num_worker is
    ('1600', '1', 16, 64, 17),
    ('3200', '1', 32, 64, 33),   # batches stop at 64
    # ... else the machine's cores are shared among the workers.
    (None, '1', 12, 48, 13),
    (None, '2', 6, 24, 7),
    (None, '5', 2, 8, 3),
    (None, '24', 1, 8, 2),       # never less than one
])
def test_batch_size_and_decode_threads_scale_with_the_cores(
    job, monkeypatch, cpu, workers, cores, batch, decode):
  monkeypatch.setattr(os, 'cpu_count', lambda: 12)
  params = [f'-Dnum_worker={workers}'] + (
      [f'-DcpuRequired={cpu}'] if cpu else [])
  plan = job(*params)
  assert (plan.cores_per_worker, plan.batch_size, plan.decode_threads) == (
      cores, batch, decode)
  # Given values win over the defaults.
  plan = job(*params, '-Dbatch_size=3', '-Ddecode_threads=1')
  assert (plan.batch_size, plan.decode_threads) == (3, 1)


@pytest.mark.parametrize('gpu, gpu_type, hint', [
    ('0', None, None),
    ('100', None, 'type:nvidia-tesla-t4;count:1;install-nvidia-driver'),
    ('50', None, 'type:nvidia-tesla-t4;count:1;install-nvidia-driver'),
    ('200', 'nvidia-l4', 'type:nvidia-l4;count:2;install-nvidia-driver'),
    ('201', 'nvidia-l4', 'type:nvidia-l4;count:3;install-nvidia-driver'),
])
def test_accelerator_from_gpu_required(job, gpu, gpu_type, hint):
  params = [f'-DgpuRequired={gpu}'] + (
      [f'-Dgpu_type={gpu_type}'] if gpu_type else [])
  assert job(*params).accelerator == hint


@pytest.mark.parametrize('arg', ['-Ddecode_threads=-1', '-DgpuRequired=-100'])
def test_negative_counts_are_refused(job, arg):
  name = arg[2:].split('=')[0]
  with pytest.raises(UsageError, match=f'-D{name} must be'):
    job(arg)
