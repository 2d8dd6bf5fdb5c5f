"""Command line: PAI's -Dkey=value, --key=value, a pasted pai command, and
one-line errors with exit code 2 before any work starts."""
import json
import os
import subprocess
import sys

import pytest

from ev_predict.pipeline import launcher
from ev_predict.pipeline.commandline import UsageError, parse_command_line
from ev_predict.pipeline.options import EvPredictOptions
from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EV_PREDICT = os.path.join(os.path.dirname(sys.executable), 'ev-predict')


def test_pai_only_flags_are_notices_not_parameters():
  notices = []
  params, beam_args = parse_command_line(
      ['pai', '-name', 'ev_predict_ext', '-project=p1', '-Dmodel_path=m',
       '-DmemoryRequired=4096', '-DenableDynamicCluster=true;'],
      notices=notices)
  assert (params, beam_args) == ({'model_path': 'm'}, [])
  assert [n.split(' has no effect')[0] for n in notices] == [
      '-project p1', '-DmemoryRequired', '-DenableDynamicCluster']
  # Without a list to collect them (the other parsers of argv), silence.
  assert parse_command_line(['-Dlifecycle=3', '-Dmodel_path=m']) == (
      {'model_path': 'm'}, [])


def test_pai_forms_parse_the_same():
  forms = [
      ['-Dmodel_path=m', '-Dinput_oss_file=in', '-Dnum_worker=2'],
      ['--model_path=m', '--input_oss_file', 'in', '--num_worker=2'],
      ['pai', '-name', 'ev_predict_ext', '-Dmodel_path="m"',
       "-Dinput_oss_file='in'", '-Dnum_worker=2;'],
      ['pai -name ev_predict_ext -Dmodel_path="m" -Dinput_oss_file=in '
       '-Dnum_worker=2;'],
  ]
  for argv in forms:
    params, beam_args = parse_command_line(argv)
    assert params == {'model_path': 'm', 'input_oss_file': 'in',
                      'num_worker': '2'}, argv
    assert beam_args == []


def test_beam_flags_pass_through():
  params, beam_args = parse_command_line(
      ['-Dmodel_path=m', '--runner', 'FlinkRunner', '--job_name=x'])
  assert params == {'model_path': 'm'}
  assert beam_args == ['--runner', 'FlinkRunner', '--job_name=x']
  options = launcher.make_options(['-Dmodel_path=m', '--job_name=x',
                              '-Dnum_worker=2'])
  o = options.view_as(EvPredictOptions)
  assert (o.model_path, o.num_worker, o.batch_size) == ('m', 2, None)
  assert options.get_all_options()['direct_num_workers'] == 2


def test_runner_specific_defaults():
  flink = launcher.make_options(['-Dmodel_path=m', '-Dnum_worker=3',
                            '--runner=FlinkRunner']).get_all_options()
  assert flink['parallelism'] == 3
  spark = launcher.make_options(['-Dmodel_path=m', '--runner=SparkRunner'])
  # One SDK worker per Spark executor for the job, not one per task...
  assert spark.get_all_options()['environment_cache_millis'] == 60000
  # ... unless the user says otherwise.
  mine = launcher.make_options(['-Dmodel_path=m', '--runner=SparkRunner',
                           '--environment_cache_millis=5'])
  assert int(mine.get_all_options()['environment_cache_millis']) == 5



@pytest.mark.parametrize('runner', [
    None, 'DirectRunner', 'directrunner', 'direct', 'Direct',
    'apache_beam.runners.direct.direct_runner.DirectRunner'])
def test_every_spelling_of_the_direct_runner_is_local(runner):
  """Beam takes a runner's name in any case, with or without 'Runner'."""
  argv = ['-Dmodel_path=m', '-Dnum_worker=2'] + (
      [f'--runner={runner}'] if runner else [])
  options = launcher.make_options(argv)
  assert options.get_all_options()['direct_num_workers'] == 2
  assert launcher.make_runner(options) is not None  # the FnApiRunner


@pytest.mark.parametrize('runner', ['FlinkRunner', 'flink', 'PortableRunner'])
def test_every_spelling_of_a_parallel_runner(runner):
  options = launcher.make_options(['-Dmodel_path=m', '-Dnum_worker=3',
                                   f'--runner={runner}'])
  assert options.get_all_options()['parallelism'] == 3
  assert launcher.make_runner(options) is None  # Beam resolves it

@pytest.mark.parametrize('argv, needle', [
    (['-Dmodel_pth=x'], 'did you mean model_path'),
    (['-Dmodel_path'], 'malformed parameter'),
    (['-Dnum_worker=two'], 'must be an integer'),
    (['--no_such_flag=1'], 'unknown option'),
    (['stray'], 'unexpected argument'),
    (['pai', '-name', 'other_algo'], '-name must be ev_predict_ext'),
    (['-Dlifecyle=28'], r'unknown parameter -Dlifecyle \(did you mean '
     r'lifecycle\?\)'),
    (['-Dtopk=5'], r'did you mean top_k\?'),
    (['-project'], '-project needs a value'),
])
def test_bad_parameters_are_usage_errors(argv, needle):
  with pytest.raises(UsageError, match=needle):
    launcher.make_options(argv)


def _run_cli(args, cwd=REPO):
  return subprocess.run([EV_PREDICT] + args, cwd=cwd, capture_output=True,
                        text=True, timeout=300, check=False)


def _last_error_line(stderr):
  lines = [l for l in stderr.splitlines() if l.startswith('ev-predict:')]
  assert lines, stderr
  return lines[-1]


def test_help_is_quiet_and_fits_a_terminal():
  proc = _run_cli(['--help'])
  assert (proc.returncode, proc.stderr) == (0, '')
  lines = proc.stdout.splitlines()
  assert lines[0].startswith('usage: ev-predict -Dkey=value')
  assert [l for l in lines if len(l) > 79] == []
  text = ' '.join(proc.stdout.split())
  assert 'exit codes: 0 ok 1 too many failed lines' in text
  assert '130/143 interrupted' in text and "--flags are Beam's" in text
  assert '-Dmodel_path (required) SavedModel directory' in text


def test_no_arguments_is_a_usage_error():
  proc = _run_cli([])
  assert proc.returncode == 2 and proc.stdout == ''
  assert proc.stderr.startswith('usage: ev-predict')


@pytest.mark.parametrize('extra, needle', [
    (['-Dmodel_type=detector'], 'model_type=detector is not supported; '
     'supported: classifier, multilabel_classifier'),
    (['-Dmodel_path=/nonexistent/model'], 'no SavedModel at /nonexistent'),
    (['-Dinput_oss_file=/nonexistent/list.txt'], 'cannot read '
     '/nonexistent/list.txt'),
    (['-Dlabel_map_path={labels3}'], 'has 3 labels but the model outputs 4'),
    (['-Dimage_type=bytes'], 'image_type must be one of'),
    (['-Dsignature_name=nope'], "no signature 'nope'"),
    (['-Dtop_k=0'], '-Dtop_k must be'),
])
def test_cli_errors_exit_2_before_work(tmp_path, model_dirs, extra, needle):
  listing = tmp_path / 'list.txt'
  listing.write_text('x.jpg\n')
  labels3 = tmp_path / 'labels3.txt'
  labels3.write_text('a\nb\nc\n')
  out = tmp_path / 'out' / 'result.txt'
  base = {'-Dmodel_path': model_dirs['uint8'],
          '-Dinput_oss_file': str(listing), '-Doutput_oss_file': str(out)}
  extra = [e.format(labels3=labels3) for e in extra]
  for e in extra:
    base.pop(e.split('=')[0], None)
  proc = _run_cli([f'{k}={v}' for k, v in base.items()] + extra)
  assert proc.returncode == 2, proc.stderr
  assert needle in _last_error_line(proc.stderr)
  assert not out.exists()


def test_pasted_pai_command_end_to_end(tmp_path, model_dirs):
  imgs = [write_image(tmp_path / f'{i}.png', 70 + i) for i in range(3)]
  listing = tmp_path / 'list.txt'
  listing.write_text('\n'.join(imgs + [str(tmp_path / 'gone.jpg')]) + '\n')
  out = tmp_path / 'res' / 'out.txt'
  # As pasted from PAI's console: its own flags and PAI-only parameters too.
  cmd = (f'pai -name ev_predict_ext -project algo_public '
         f'-Dmodel_type=classifier '
         f'-Dmodel_path="{model_dirs["uint8"]}" '
         f'-Dinput_oss_file="{listing}" -Doutput_oss_file="{out}" '
         f'-Dimage_type=url -DcpuRequired="100" -DgpuRequired=0 '
         f'-Dlifecycle=28 -Duser_resource="a.tar.gz,b.tar.gz" '
         f'-Dmax_error_ratio=0.5;')
  proc = _run_cli([cmd])
  assert proc.returncode == 0, proc.stderr
  notices = [l for l in proc.stderr.splitlines() if 'notice:' in l]
  assert notices == [
      'ev-predict: notice: -project algo_public has no effect here (the '
      'MaxCompute project PAI runs in); ignored',
      'ev-predict: notice: -Dlifecycle has no effect here (the lifetime of a '
      'MaxCompute output table); ignored',
      'ev-predict: notice: -Duser_resource has no effect here (PAI resources '
      'uploaded with the job); ignored'], proc.stderr
  assert ('ev-predict: 4 lines read, 3 succeeded, 1 failed (not_found 1)'
          in proc.stderr)
  assert len(read_lines(out)) == 3
  summary = json.loads((tmp_path / 'res' / 'out.txt.summary.json').read_text())
  assert (summary['succeeded'], summary['failed']) == (3, 1)
  assert summary['failed_by_kind'] == {'not_found': 1}
  assert summary['images_per_second'] > 0 and summary['accounting_ok']

  # Same job over the error budget: output still complete, exit code 1.
  proc = _run_cli([cmd.replace('max_error_ratio=0.5', 'max_error_ratio=0.1')])
  assert proc.returncode == 1
  assert 'above -Dmax_error_ratio=0.1' in _last_error_line(proc.stderr)
  errors = read_lines(str(out) + '.errors')
  assert [split_output_line(l)[1]['error'] for l in errors] == ['not_found']


def test_direct_runner_never_tries_prism():
  """Beam's DirectRunner downloads Prism first; offline that must not
  happen, so the default runner is the FnApiRunner itself."""
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  runner = launcher.make_runner(launcher.make_options(['-Dmodel_path=m']))
  assert isinstance(runner, fn_runner.FnApiRunner)
  assert launcher.make_runner(launcher.make_options(
      ['-Dmodel_path=m', '--runner=FlinkRunner'])) is None


def test_gpu_required_becomes_accelerator_hint(tmp_path, model_dirs):
  import apache_beam as beam
  from ev_predict.pipeline import graph
  listing = tmp_path / 'l.txt'
  listing.write_text('x.jpg\n')
  argv = [f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
          f'-Doutput_oss_file={tmp_path / "o.txt"}', '-DgpuRequired=150']
  options = launcher.make_options(argv)
  p = beam.Pipeline(options=options)
  graph.build_pipeline(p, options)
  components = p.to_runner_api().components
  hints = [components.environments[t.environment_id].resource_hints
           for t in components.transforms.values()
           if 'Classify' in t.unique_name and t.environment_id and
           components.environments[t.environment_id].resource_hints]
  assert hints and all(
      h['beam:resources:accelerator:v1'] ==
      b'type:nvidia-tesla-t4;count:2;install-nvidia-driver' for h in hints)
  job = graph.plan(launcher.make_options(argv[:-1]))
  assert job.accelerator is None


@pytest.mark.parametrize('pasted, message', [
    ("pai -name ev_predict_ext -Dmodel_path=m -Doutput_oss_file=it's.txt",
     'cannot split the pasted command (No closing quotation): a quote is not '
     'closed, or it ends in a backslash'),
    ('pai -name ev_predict_ext -Dmodel_path=m \\',
     'cannot split the pasted command (No escaped character): a quote is not '
     'closed, or it ends in a backslash'),
])
def test_a_pasted_command_that_cannot_be_split_is_exit_2(pasted, message):
  proc = _run_cli([pasted])
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == f'ev-predict: error: {message}'
  assert 'Traceback' not in proc.stderr


def test_a_command_copied_from_a_document():
  """Typographic quotes and dashes, non-breaking spaces: what the writer
  meant, never part of a path; a non-breaking space that joins two flags
  into one argument is refused."""
  params, _ = parse_command_line([
      'pai -name ev_predict_ext -Dmodel_path=\u201c/m/x\u201d\u00a0'
      '\u2013Dtop_k=2 -Dinput_oss_file=\u2018/l.txt\u2019 '
      '-Doutput_oss_file=/o.txt'])
  assert params == {'model_path': '/m/x', 'top_k': '2',
                    'input_oss_file': '/l.txt', 'output_oss_file': '/o.txt'}
  params, _ = parse_command_line(['-Dmodel_path=\u201c/m/x\u201d'])
  assert params == {'model_path': '/m/x'}
  with pytest.raises(UsageError, match='holds a non-breaking space before '
                     'another flag'):
    parse_command_line(['-Doutput_oss_file=/o.txt\u00a0-Dtop_k=2'])
  # Extra flags after a pasted command are taken too.
  params, beam = parse_command_line(['pai -name ev_predict_ext -Dtop_k=3',
                                     '-Dbatch_size=4', '--runner=x'])
  assert params == {'top_k': '3', 'batch_size': '4'}
  assert beam == ['--runner=x']
