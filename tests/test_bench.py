"""The benchmark's own logic, on small made-up figures: how it parses its
command line, derives slopes, ceilings and ratios, reports them and reads a
profile. Nothing here is timed; the measurements themselves are the
benchmark's job (python -m bench.run)."""
import math
import subprocess
import sys

import pytest
from PIL import Image

from bench import ceilings, harness, pyspy, report, run
from bench.config import CORES, EV_BATCH, ROOT, Config, Context


def test_help_runs_as_a_module_from_the_repository_root():
  out = subprocess.run([sys.executable, '-m', 'bench.run', '--help'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=False)
  assert out.returncode == 0, out.stderr
  assert '--paired-sizes' in out.stdout and 'python -m bench.run' in out.stdout


def test_sizes_must_be_two_different_positive_numbers():
  for bad in ('600', '600,600', '0,600'):
    with pytest.raises(SystemExit):
      run.parse_args(['--sizes', bad])
  config = run.parse_args(['--sizes', '600,200', '--only', 'ev,paired',
                           '--memory-lines', '100000,1000'])
  assert config.sizes == [200, 600]
  assert config.memory_lines == (1000, 100000)
  assert config.only == {'ev', 'paired'}


def test_only_names_exactly_what_runs_and_flags_drop_parts():
  only = Config(sizes=[1, 2], out=None, only=frozenset({'ev'}))
  assert only.want('ev') and not only.want('ceilings')
  default = Config(sizes=[1, 2], out=None)
  assert default.want('ceilings') and default.want('paired')
  assert not default.want('memory')
  dropped = Config(sizes=[1, 2], out=None, rounds=0, profile=False,
                   memory=True)
  assert not dropped.want('paired') and not dropped.want('profile')
  assert dropped.want('memory')


def _run(n, wall, cpu, others=0.0):
  return {'n': n, 'wall_s': wall, 'cpu_s': cpu, 'cpu_util': cpu / wall / CORES,
          'peak_rss_mb': 100.0 + n, 'others_util': others}


def test_marginal_is_the_slope_between_sizes_and_start_up_its_intercept():
  m = harness.marginal([_run(600, 26.0, 40.0), _run(200, 10.0, 16.0)])
  assert m['marginal_img_s'] == pytest.approx(400 / 16.0)
  assert m['startup_s'] == pytest.approx(10.0 - 200 / (400 / 16.0))
  assert m['marginal_cpu_ms_per_img'] == pytest.approx(1000 * 24.0 / 400)
  assert m['peak_rss_mb'] == 700.0 and m['reliable']
  # Less than 5 s of extra work, or a busy machine: flagged, still reported.
  assert not harness.marginal([_run(200, 10, 1), _run(600, 14, 2)])['reliable']
  assert not harness.marginal([_run(200, 10, 1, 0.3),
                               _run(600, 20, 2)])['reliable']
  assert math.isnan(harness.marginal([_run(200, 10, 1),
                                      _run(600, 9, 2)])['marginal_img_s'])


def _fake_results():
  """Ceilings and variants as a run would leave them (made-up rates)."""
  by_batch = {bs: {'img_s': 50.0 + bs, 'cpu_util': 0.9, 'others_util': 0.0,
                   'cpu_ms_per_img': 10.0 + bs / 8}
              for bs in sorted({8, 16, 32, EV_BATCH})}
  decode = {k: {'img_s': rate, 'cpu_util': 0.5, 'others_util': 0.01,
                'cpu_ms_per_img': 3.0}
            for k, rate in (('per_core', 300.0), ('all_cores', 500.0),
                            ('pil_plain_per_core', 200.0))}
  model = {'by_batch': by_batch, 'best_batch': 32, 'img_s': 82.0,
           'img_s_ev_batch': by_batch[EV_BATCH]['img_s']}
  c = {'decode': decode, 'model_openvino': model}
  ceilings.shared_core(c, model, decode, '_openvino')
  variants = {
      'naive': harness.marginal([_run(200, 20, 20), _run(600, 60, 60)]),
      'ev-predict': dict(harness.marginal([_run(200, 8, 10),
                                           _run(600, 18, 30)]),
                         backends={'openvino-f32': 600}),
      'beam-example': {'error': 'beam-example on 600 images failed'},
  }
  return {'sizes': [200, 600], 'ceilings': c, 'variants': variants}


def test_shared_core_ceiling_combines_model_and_decode():
  c = _fake_results()['ceilings']
  assert c['shared_core_img_s_openvino'] == pytest.approx(
      1 / (1 / 82.0 + 1 / (CORES * 300.0)))
  floor = c['model_openvino']['by_batch'][EV_BATCH]['cpu_ms_per_img'] + 3.0
  assert c['cpu_floor_ms_per_img_openvino'] == pytest.approx(floor)
  assert c['cpu_shared_core_img_s_openvino'] == pytest.approx(
      CORES * 1000 / floor)


def test_ratios_compare_ev_predict_with_its_own_backend_and_baselines():
  results = _fake_results()
  ratios = report.compute_ratios(results)
  c, v = results['ceilings'], results['variants']
  ev = v['ev-predict']['marginal_img_s']
  assert ratios['ev-predict / shared-core ceiling (openvino)'] == \
      pytest.approx(ev / c['shared_core_img_s_openvino'])
  assert ratios['ev-predict / naive'] == pytest.approx(
      ev / v['naive']['marginal_img_s'])
  assert not any('beam-example' in k for k in ratios)   # it failed
  assert v['ev-predict']['ceiling_backend'] == 'openvino'


def test_table_and_chart_show_every_variant(capsys, tmp_path):
  results = _fake_results()
  results['ratios'] = report.compute_ratios(results)
  report.print_table(results)
  out = capsys.readouterr().out
  assert 'f. ev-predict [openvino-f32]' in out
  assert 'd. naive loop' in out and 'e. beam-example FAILED' in out
  assert 'c. shared-core ceiling OpenVINO' in out
  assert 'ev-predict / naive' in out
  names = [name for name, _ in report.chart_bars(results)]
  assert 'naive' in names and 'ev-predict' in names
  assert 'beam-example' not in names
  chart = tmp_path / 'chart.png'
  assert report.draw_chart(results, chart) != 'nothing to draw'
  with Image.open(chart) as img:
    assert img.format == 'PNG'


def test_profile_summary_sorts_samples_by_stage_and_thread(tmp_path):
  raw = tmp_path / 'collapsed.txt'
  raw.write_text(
      'thread (0x1): MainThread;run (cli.py:1);'
      'scores (transforms/inference.py:9) 50\n'
      'thread (0x1): MainThread;_find_and_load (<frozen>:1) 25\n'
      'thread (0x2): ev-predict_0;_worker (concurrent/futures/thread.py:1);'
      'decode_image (transforms/decode.py:3) 20\n'
      'thread (0x3): ev-predict_1;_worker (concurrent/futures/thread.py:1);'
      'Condition.wait (threading.py:2) 30\n'
      'not a sample line\n')
  s = pyspy.summarize_profile(raw, {'wall_s': 2.0})
  assert s['main_thread']['model: inference call']['s'] == 1.0
  assert s['main_thread']['imports']['s'] == 0.5
  assert s['main_thread_startup_s'] == 0.5
  assert s['pool_threads'] == 2
  assert s['pool_thread_s']['decode (Pillow)']['s'] == 0.4
  assert s['pool_thread_s']['idle (waiting for work)']['s'] == 0.6


def test_run_cmd_records_the_command_its_output_and_exit_code(tmp_path):
  ctx = Context(work=tmp_path)
  res = harness.run_cmd(ctx, [sys.executable, '-c',
                              'import os; print(os.environ["EV_PREDICT_CACHE"])'
                              '; raise SystemExit(3)'], 'probe')
  assert res['rc'] == 3 and 'result' not in res
  log = (tmp_path / 'logs' / 'probe.log').read_text()
  assert log.splitlines()[0].startswith(sys.executable)
  assert str(ctx.ev_cache) in log
  assert res['wall_s'] > 0 and res['cpu_s'] >= 0
