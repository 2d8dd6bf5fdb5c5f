"""ev-predict throughput benchmark: one command, ratios measured in one run.

    .venv/bin/python -m bench.run [--sizes 200,600] [--quick]
                                  [--out build/bench/results.json]
                                  [--repeat R] [--quiet-wait S]
                                  [--rounds R] [--paired-sizes N1,N2]
                                  [--no-profile] [--no-diagnostics]
                                  [--memory [--memory-lines 1000,100000]]
                                  [--kill-resume [--old-engine /work/main]
                                   [--resume-pairs 3] [--resume-lines N]
                                   [--resume-memory-lines L1,L2,L3]
                                   [--resume-scan-lines L1,L2]]
                                  [--only ceilings,naive,beam,ev,resume]

from the repository root. Where each part lives: bench.corpus, bench.models,
bench.ceilings (a-c), bench.baselines (d, e), bench.variants (f, g and the
paired rounds), bench.pyspy (profile), bench.memory (--memory), bench.resume
(--kill-resume: kill and resume, memory and scan on long lists, the order A/B
against the engine before it; also ``python -m bench.resume``), bench.report
(ratios, table, chart); bench.harness times the child processes
(bench.child). Results quoted in the docs are kept in bench/results/.

What it builds (cached under build/bench/, which is git-ignored):

* ``corpus-<N>/``: N JPEG photos around 500x375 (landscape and portrait,
  4:3 and 3:2), 40-120 KB each, made from the real colour photographs that
  scikit-image ships (astronaut, coffee, chelsea, rocket, hubble_deep_field,
  immunohistochemistry, retina, stereo_motorcycle) by random crops, flips,
  rescaling, colour jitter and mild sensor noise, re-encoded at a quality that
  lands each file on a random target size (4:2:0 or 4:4:4, some progressive),
  plus ``filelist.txt`` (absolute paths) and ``manifest.json`` (size stats).
  Image i depends only on (seed, i), so corpus-200 is the first 200 files of
  corpus-600 (files are hard-linked between corpora instead of re-made).
* ``model-mobilenetv2/``: ``keras.applications.MobileNetV2(weights=None,
  input_shape=(224,224,3), classes=1000)`` (random weights) behind a uint8
  [N,224,224,3] input whose MobileNet preprocessing (x/127.5-1) is inside the
  graph, exported with ``model.export(dir)``, plus ``labels.txt`` (1000 names).
* ``model-tiny/`` (diagnostics only): the same signature (uint8
  [N,224,224,3] -> 1000 softmax scores) with almost no compute, to measure what
  ev-predict costs without the model.

What it measures, each in its own fresh child process, in the same run on the
same corpus (child rusage from ``os.wait4``: CPU time, peak RSS):

  a. model ceiling: the SavedModel's serving signature alone on pre-decoded
     uint8 batches of 8/16/32/64 corpus images (best img/s is the ceiling; the
     rate at ev-predict's default batch size on this machine is reported too);
  b. decode ceiling: ``transforms.fetch.Fetcher`` + ``transforms.decode.
     decode_image`` with ``DecodeConfig(size=(224, 224))`` on one thread (per
     core) and on one thread per core (all cores); also fetch alone, a plain
     PIL open/convert/resize, and the cost of formatting one PAI result line
     (``transforms.format.Formatter``, 1000 class probabilities);
  c. shared-core ceiling = 1 / (1/model + 1/(cores x decode_per_core)): the
     rate if every core-second went either to the model or to decoding;
  d. naive: a plain Python loop (PIL open, convert RGB, resize 224, one image
     per signature call, write one PAI-format line);
  e. beam-example: a pipeline written like Beam's examples/inference
     (ReadFromText -> Map PIL preprocessing -> RunInference(KeyedModelHandler(
     a small ModelHandler over tf.saved_model.load)) with default batching ->
     Map format -> WriteToText) on the FnApiRunner that ev-predict uses;
     beam-example-ov: the same with the model compiled by OpenVINO as
     ev-predict's backend compiles it (the same-backend comparison);
  f. ev-predict: the console script as a user runs it, default options.

  paired rounds (--rounds, default 3): the headline ratio, ev-predict /
     shared-core ceiling, measured so that the machine's drift cancels. Each
     round measures, back to back, the ceilings (fetch+decode on one thread,
     then the model through ev-predict's backend at every batch size, in one
     process, each a mean rate over a 3 s window) and ev-predict at both
     sizes (--paired-sizes, default --sizes), ceilings first in even rounds
     and last in odd ones; the ratio is taken per round and the median round
     reported. Both sides are throughput over a period: no best-of on either.

  d/e/f write the same PAI-format line (all 1000 class probabilities), so the
  output work is equal. Each runs at both corpus sizes N1 < N2; reported:
  marginal throughput (N2-N1)/(t2-t1) (start-up excluded), start-up time (the
  intercept t1 - N1/marginal), CPU utilisation (child CPU time / wall / cores,
  for the N2 run and for the marginal part), peak RSS.

  Diagnostics (skip with --no-diagnostics): ev-predict with the tiny model at
  both sizes (its pipeline + decode ceiling without model cost) and ev-predict
  with -Dnum_worker=2 (two worker processes) at N2. Profile (skip with
  --no-profile): ev-predict at N2 under py-spy, when
  build/bench/tools/bin/py-spy exists (``.venv/bin/pip install --target
  build/bench/tools py-spy``; nothing is installed into the venv), reduced to
  the share of samples per stage and per thread.

Output: a table on stdout, JSON (--out), and a bar chart of img/s per variant
in build/bench/throughput.png (matplotlib when the venv has it, else drawn
with Pillow, and the JSON says so).

--memory: peak RSS of ev-predict (default batch size) on file lists of
1,000 and 100,000 lines (--memory-lines). Real images at ~20 img/s would take
well over an hour for 100k lines on 2 cores, so both lists hold the same 200
real corpus images, spread evenly, and the other lines name missing files:
cheap not_found errors that still stream every line through read, reshuffle,
fetch, decode, partition, format, write and the counts. Run with
-Dmax_error_ratio=1 (so the exit code is 0). Then the same first steps alone
(the chunks -> [Reshuffle] -> ReadChunks -> WriteToText on the FnApiRunner,
no TF) with and without the Reshuffle, to see which step holds the lines;
and ev-predict with
the tiny model (same 1000-class, ~37 KB result lines) on 200 vs 3000 real
image lines (1000 with --quick): RSS per extra result line. The cost is
reported.

--kill-resume (about 15 minutes on 2 shared cores; not in the default run): the
resume engine, as bench.resume's docstring says, with the order A/B at
--sizes (200,1200 in docs/performance.md) against --old-engine.

Ceilings (a, b) run each point as 5 short windows and report the best
window (the rate when the code had the cores) and the mean.
--quick shortens the ceiling measurements (1.5 s per point instead of 5).
--repeat R runs each d/e/f point R times and keeps the fastest.
--only limits what is measured (for development).

Noise: absolute numbers depend on what else runs on the machine; the ratios
are measured in one run. Every measurement records ``others_util``, the share
of the machine that other processes used meanwhile (/proc/stat busy time minus
our own CPU time), shown in the table's "others" column. Before each child
starts, the benchmark waits up to --quiet-wait seconds (default 20; 0: off)
for that share to drop below 15%. CPU time per image ("cpu ms/img") is barely
moved by other load, so CPU-based figures are given beside the wall-clock
ones: the CPU floor (model CPU-ms per image at ev-predict's batch + fetch/decode
CPU-ms per image), the ceiling it implies (cores x 1000 / floor), and each
variant's CPU efficiency (floor / its marginal CPU-ms per image).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import (ceilings, corpus, memory, models, pyspy, report, resume,
                   variants)
from bench.config import WORK, Config, Context, log


def main(argv=None) -> int:
  config = parse_args(argv)
  ctx = Context(quiet_wait=config.quiet_wait)
  started = time.time()
  ctx.work.mkdir(parents=True, exist_ok=True)
  results = {'sizes': config.sizes, 'quick': config.quick,
             'repeat': config.repeat, 'machine': report.machine_info(),
             'load_avg_before': os.getloadavg()[0],
             'started': time.strftime('%Y-%m-%d %H:%M:%S'),
             'ceilings': {}, 'variants': {}}
  small, large = config.sizes
  manifests = {n: corpus.ensure_corpus(ctx, n) for n in config.sizes}
  results['corpus'] = corpus.corpus_summary(manifests[large])
  model = models.ensure_model(ctx, 'mobilenetv2')
  results['model'] = json.loads((model / 'bench-stamp.json').read_text())

  if config.want('ceilings'):
    ceilings.measure(ctx, config, results, manifests[small], model)
  variants.measure(ctx, config, results, manifests)
  if config.want('paired'):
    results['paired'] = paired(ctx, config, manifests, model)
  results['ratios'] = report.compute_ratios(results)
  if config.want('profile'):
    log(f'profile: ev-predict on {large} images under py-spy')
    results['profile'] = pyspy.profile_ev_predict(ctx, manifests[large],
                                                  model)
  if config.want('memory'):
    log(f'memory: ev-predict on {list(config.memory_lines)} lines')
    results['memory'] = memory.memory_check(
        ctx, manifests[small], model, config.memory_lines,
        config.memory_result_sizes)
  if config.want('resume'):
    log(f'resume: kill/resume, memory, scan, order A/B against '
        f'{config.old_engine}')
    results['resume'] = resume.measure(
        ctx, resume.PARTS, models.ensure_model(ctx, 'tiny'), model,
        manifests, config.sizes, config.old_engine,
        lines=config.resume_lines, memory_lines=config.resume_memory_lines,
        scan_lines=config.resume_scan_lines, pairs=config.resume_pairs)

  finish(ctx, config, results, started)
  report.print_summary(results, config.out)
  return 0


def paired(ctx, config, manifests: dict, model: Path) -> dict:
  """The paired rounds, on their own corpus sizes when --paired-sizes."""
  sizes = config.paired_sizes or config.sizes
  for n in sizes:
    if n not in manifests:
      manifests[n] = corpus.ensure_corpus(ctx, n)
  return variants.paired_rounds(ctx, config.rounds, manifests, sizes, model,
                                config.round_seconds)


def finish(ctx, config, results: dict, started: float) -> None:
  """The run's own figures, the chart and the JSON at --out."""
  if ctx.warmups:
    results['warmup'] = ctx.warmups
  results['load_avg_after'] = os.getloadavg()[0]
  results['quiet_wait_total_s'] = ctx.waited_s
  results['bench_runtime_s'] = time.time() - started
  chart = ctx.work / 'throughput.png'
  results['chart'] = str(chart)
  results['chart_backend'] = report.draw_chart(results, chart)
  config.out.parent.mkdir(parents=True, exist_ok=True)
  config.out.write_text(json.dumps(results, indent=1, default=str))


def parse_args(argv=None) -> Config:
  ap = argparse.ArgumentParser(
      prog='python -m bench.run', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--sizes', default='200,600',
                  help='two corpus sizes N1,N2 (default 200,600)')
  ap.add_argument('--quick', action='store_true',
                  help='shorter ceiling measurements')
  ap.add_argument('--out', default=str(WORK / 'results.json'))
  ap.add_argument('--repeat', type=int, default=1,
                  help='runs per d/e/f point; the fastest is kept')
  ap.add_argument('--quiet-wait', type=float, default=20.0,
                  help='before each measurement wait up to this many seconds '
                  'for other processes to use < 15%% of the machine (0: off)')
  ap.add_argument('--rounds', type=int, default=3,
                  help='paired rounds: ceilings and ev-predict back to back, '
                  'the ratio per round (default 3; 0: off)')
  ap.add_argument('--paired-sizes', default='',
                  help='N1,N2 for the paired rounds (default: --sizes); a '
                  'larger N2 makes each slope less sensitive to start-up noise')
  ap.add_argument('--no-profile', action='store_true')
  ap.add_argument('--no-diagnostics', action='store_true')
  ap.add_argument('--memory', action='store_true',
                  help='also the peak-RSS check on long file lists')
  ap.add_argument('--memory-lines', default='1000,100000')
  ap.add_argument('--kill-resume', action='store_true',
                  help='also the resume engine: kill and resume, memory and '
                  'scan on long lists, order A/B against --old-engine')
  ap.add_argument('--old-engine', default='/work/main',
                  help='checkout of the engine before the resume engine')
  ap.add_argument('--resume-pairs', type=int, default=3)
  ap.add_argument('--resume-lines', type=int, default=100_000)
  ap.add_argument('--resume-memory-lines', default='10000,100000,1000000')
  ap.add_argument('--resume-scan-lines', default='1000000,10000000')
  ap.add_argument('--only', default='',
                  help='comma list of: ceilings,naive,beam,ev,diagnostics,'
                  'paired,profile,memory,resume (default: everything enabled '
                  'but memory and resume)')
  args = ap.parse_args(argv)
  sizes = sorted(int(s) for s in args.sizes.split(','))
  if len(sizes) != 2 or sizes[0] >= sizes[1] or sizes[0] < 1:
    ap.error('--sizes needs two different positive sizes, e.g. 200,600')
  return Config(
      sizes=sizes, out=Path(args.out), quick=args.quick, repeat=args.repeat,
      quiet_wait=args.quiet_wait, rounds=args.rounds,
      paired_sizes=_sizes(args.paired_sizes) if args.paired_sizes else None,
      profile=not args.no_profile, diagnostics=not args.no_diagnostics,
      memory=args.memory, memory_lines=tuple(_sizes(args.memory_lines)),
      resume=args.kill_resume, old_engine=Path(args.old_engine),
      resume_pairs=args.resume_pairs, resume_lines=args.resume_lines,
      resume_memory_lines=tuple(_sizes(args.resume_memory_lines)),
      resume_scan_lines=tuple(_sizes(args.resume_scan_lines)),
      only=frozenset(filter(None, args.only.split(','))))


def _sizes(text: str) -> list:
  return sorted(int(s) for s in text.split(','))


if __name__ == '__main__':
  sys.exit(main())
