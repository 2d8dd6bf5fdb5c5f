"""Throughput, second wave (issue #15): ev-predict against the minimal work
and against its peers, on two corpora, in one run.

    .venv/bin/python -m bench.wave2 [--sizes 300,1500] [--phone-sizes 40,240]
                                    [--seconds 4] [--peer-repeats 3]
                                    [--out FILE.json]
                                    [--parts ceilings,interference,ev,null,
                                             peers,gil,startup,workers]

From the repository root. Needs build/peers-venv (Ray, pandas; see
docs/performance.md) for the peers, and Spark unpacked under build/spark (the
cluster tests' copy). Everything runs in child processes; every rate below
is marginal (slope between the two sizes of a corpus, so start-up is apart)
unless it is a ceiling, which is a mean rate over a window.

For each corpus (``small``: bench.corpus's 500x375 JPEGs; ``phone``: 4032x3024
JPEGs of 2-4 MB, bench.corpus.ensure_phone_corpus):

* ceilings, each alone: the backend (OpenVINO f32 as ev-predict configures
  it, and TensorFlow) at its best batch on pre-decoded arrays; the minimal
  reference decode (bench.peers.minimal_decode) on one thread per core;
  the shared-core ceiling they imply, 1 / (1/model + 1/(cores x decode per
  core)); ev-predict's own decode on one thread, for what it costs over the
  minimal one;
* the interference ceiling: the model loop and the minimal decode loop at
  once in two processes, equal priority, no Beam: min(model img/s, decode
  img/s) while both run, the decode on one thread or one per core (the
  better);
* ev-predict (default: OpenVINO), ``-Dnum_worker=<cores>``,
  ``-Dbackend=tensorflow``, and a null model (bench.models' tiny SavedModel:
  the pipeline's own overhead), against the ceilings;
* peers (bench.peers): Spark predict_batch_udf and Ray Data, each on
  OpenVINO and TensorFlow, their start-up (intercept), and their classes
  against ev-predict's, image by image, on a model whose answer depends on
  the pixels (bench.models' mobilenetv2-pixels). Peers and ev-predict's
  configurations run --peer-repeats times per size and the fastest counts;
  a peer whose slope is above its backend's shared-core ceiling is flagged
  (start-up noise) and left out of the ratios;
* GIL: py-spy ``--gil`` samples of ev-predict at both sizes; the marginal
  GIL-held ms per image and the rate one process could reach if the GIL were
  its only limit; once with every core busy, once where no thread waits for
  a core (null model, one decode thread: see gil()).

Once: start-up (command to the end of a 1-image job with warm caches, and
its parts) and -Dnum_worker=2 against one worker on the same cores.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import corpus, harness, models
from bench.config import BIN, CORES, ROOT, Context, log

PEERS_PYTHON = ROOT / 'build' / 'peers-venv' / 'bin' / 'python'
PARTS = ('ceilings', 'interference', 'ev', 'null', 'peers', 'gil', 'startup',
         'workers')


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--sizes', default='300,1500')
  ap.add_argument('--phone-sizes', default='40,240')
  ap.add_argument('--seconds', type=float, default=4.0)
  ap.add_argument('--peer-repeats', type=int, default=3,
                  help='runs of each peer per size; the fastest counts')
  ap.add_argument('--parts', default=','.join(PARTS))
  ap.add_argument('--corpora', default='small,phone')
  ap.add_argument('--out', type=Path, default=ROOT / 'build' / 'bench' /
                  'wave2.json')
  args = ap.parse_args(argv)
  parts = set(args.parts.split(','))
  ctx = Context()
  ctx.work.mkdir(parents=True, exist_ok=True)
  results = {'started': time.strftime('%Y-%m-%d %H:%M:%S'), 'cores': CORES,
             'parts': sorted(parts), 'corpora': {}}
  model = models.ensure_model(ctx, 'mobilenetv2-pixels')
  tiny = models.ensure_model(ctx, 'tiny')
  sizes = {'small': [int(n) for n in args.sizes.split(',')],
           'phone': [int(n) for n in args.phone_sizes.split(',')]}
  for name in args.corpora.split(','):
    make = corpus.ensure_corpus if name == 'small' else \
        corpus.ensure_phone_corpus
    manifests = [make(ctx, n) for n in sizes[name]]
    log(f'== corpus {name} {sizes[name]}')
    results['corpora'][name] = run_corpus(ctx, args, parts, name, manifests,
                                          model, tiny)
    _save(args.out, results)
  small = corpus.ensure_corpus(ctx, sizes['small'][-1])
  if 'startup' in parts:
    results['startup'] = startup(ctx, model, small)
  if 'workers' in parts:
    results['workers'] = workers(ctx, model, [
        corpus.ensure_corpus(ctx, n) for n in sizes['small']])
  results['ended'] = time.strftime('%Y-%m-%d %H:%M:%S')
  _save(args.out, results)
  report = render(results)
  Path(str(args.out) + '.md').write_text(report)
  print(report)
  return 0


def _save(path: Path, results: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results, indent=1, default=str))


# --- one corpus ------------------------------------------------------------

def run_corpus(ctx, args, parts, name, manifests, model, tiny) -> dict:
  out = {'sizes': [m['n'] for m in manifests],
         'corpus': {k: v for k, v in manifests[-1].items() if k != 'images'}}
  big = manifests[-1]
  seconds = args.seconds
  if 'ceilings' in parts:
    out['decode'] = _child(ctx, 'minimal-decode', {
        'filelist': big['filelist'], 'seconds': seconds}, f'{name}-decode')
    for backend in ('openvino', 'tensorflow'):
      m = _child(ctx, 'model-ceiling', {
          'model': str(model), 'filelist': big['filelist'],
          'seconds': seconds, 'backend': backend}, f'{name}-model-{backend}')
      out[f'model_{backend}'] = {k: m[k] for k in (
          'best_batch', 'img_s', 'img_s_ev_batch') if k in m}
      per_core = out['decode']['minimal_per_core']['img_s']
      out[f'shared_core_{backend}'] = 1 / (1 / m['img_s'] +
                                           1 / (CORES * per_core))
  if 'interference' in parts and 'model_openvino' in out:
    out['interference'] = interference(
        ctx, model, big, out['model_openvino']['best_batch'], seconds, name)
  _warm(ctx, model, manifests[0])
  if 'ev' in parts:
    _warm(ctx, model, manifests[0], [f'-Dnum_worker={CORES}'])
    out['ev_predict_workers'] = _ev_marginal(
        ctx, model, manifests, f'{name}-ev-w{CORES}',
        [f'-Dnum_worker={CORES}'], args.peer_repeats)
    out['ev_predict_tensorflow'] = _ev_marginal(
        ctx, model, manifests, f'{name}-ev-tf', ['-Dbackend=tensorflow'],
        args.peer_repeats)
    # Last: the peers' classes are checked against this run's output.
    out['ev_predict'] = _ev_marginal(ctx, model, manifests, f'{name}-ev',
                                     repeats=args.peer_repeats)
  if 'null' in parts:
    _warm(ctx, tiny, manifests[0])
    out['null_model'] = _ev_marginal(ctx, tiny, manifests, f'{name}-null')
  if 'peers' in parts:
    out['peers'] = {}
    reference = _classes_of(ctx.work / 'out' / f'{name}-ev-{big["n"]}.txt')
    for peer in ('spark', 'ray'):
      for backend in ('openvino', 'tensorflow'):
        key = f'{peer}-{backend}'
        runs = []
        for m in manifests:
          # A peer starts in 8-20 s, and that varies by seconds from run to
          # run: one run per size gave Spark 226 img/s, more than its model
          # and decode could make. The fastest of a few is its start-up
          # plus its work, without the noise.
          tries = [_peer_run(ctx, peer, backend, model, m,
                             f'{name}-{key}-{m["n"]}')
                   for _ in range(args.peer_repeats)]
          ok = [t for t in tries if t['rc'] == 0] or tries
          best = min(ok, key=lambda t: t['wall_s'])
          best['walls_s'] = [t['wall_s'] for t in tries]
          runs.append(best)
        if any(r['rc'] != 0 for r in runs):
          out['peers'][key] = {'error': f'failed; see {runs[-1]["log"]}'}
          continue
        fig = harness.marginal(runs)
        fig['agreement'] = _agreement(reference, runs[-1]['classes'])
        out['peers'][key] = _slim(fig)
        out['peers'][key]['walls_s'] = {str(r['n']): r['walls_s']
                                        for r in runs}
        _save(args.out, {'partial': out})
  if 'gil' in parts:
    out['gil'] = gil(ctx, model, manifests, name)
    out['gil_uncontended'] = gil(ctx, tiny, manifests, f'{name}-null',
                                 ['-Ddecode_threads=1'])
  out['ratios'] = ratios(out)
  return out


def _child(ctx, child: str, arg: dict, name: str) -> dict:
  res = harness.run_child(ctx, child, arg, name)
  if res['rc'] != 0 or 'result' not in res:
    raise SystemExit(f'{name} failed; see {res["log"]}')
  return res['result']


def interference(ctx, model, manifest, batch, seconds, name) -> dict:
  """The two minimal loops at once, each in its own process, at equal
  priority: min(model img/s, decode img/s) is a rate both sides sustain
  together, with no pipeline between them. Taken with the decode on one
  thread and on one per core; the better is the ceiling."""
  out = {}
  for threads in sorted({1, CORES}):
    out[f'decode_threads_{threads}'] = _at_once(ctx, model, manifest, batch,
                                                seconds, name, threads)
  best = max(out.values(), key=lambda r: r['img_s'])
  return dict(out, img_s=best['img_s'], model=best['model'],
              decode=best['decode'], note=f'{best["threads"]} decode threads')


def _at_once(ctx, model, manifest, batch, seconds, name, threads) -> dict:
  start_at = time.time() + 15     # both imported and warm by then
  procs = {}
  for side in ('model', 'decode'):
    tag = f'{name}-interference-{threads}-{side}'
    result = ctx.work / 'logs' / f'{tag}.result.json'
    result.unlink(missing_ok=True)
    arg = {'side': side, 'model': str(model), 'backend': 'openvino',
           'filelist': manifest['filelist'], 'batch': batch,
           'seconds': seconds, 'start_at': start_at, 'threads': threads}
    env = dict(os.environ, **ctx.child_env(), PYTHONPATH=str(ROOT))
    procs[side] = (subprocess.Popen(
        [sys.executable, '-m', 'bench.child', 'loop', json.dumps(arg),
         str(result)], stdout=open(ctx.work / 'logs' / f'{tag}.log', 'wb'),
        stderr=subprocess.STDOUT, cwd=ROOT, env=env), result)
  out = {'threads': threads}
  for side, (proc, result) in procs.items():
    if proc.wait() != 0 or not result.exists():
      raise SystemExit(f'interference {side} failed; see its log')
    out[side] = json.loads(result.read_text())
  out['img_s'] = min(out['model']['img_s'], out['decode']['img_s'])
  return out


def _warm(ctx, model, manifest, extra=()) -> None:
  """The first job of a model converts it and judges OpenVINO (a verdict is
  kept per thread count, so per -Dnum_worker too): apart."""
  output = ctx.work / 'out' / f'warm-{model.name}.txt'
  output.parent.mkdir(parents=True, exist_ok=True)
  for p in Path(output).parent.glob(output.name + '*'):
    p.unlink()
  harness.run_cmd(ctx, _ev_cmd(model, manifest['filelist'], output, extra),
                  f'warm-{model.name}')


def _ev_cmd(model, filelist, output, extra=()):
  return [str(BIN / 'ev-predict'), f'-Dmodel_path={model}',
          f'-Dinput_oss_file={filelist}', f'-Doutput_oss_file={output}',
          '-Dreport=false', *extra]


def _ev_run(ctx, model, manifest, name, extra=(), prefix=()) -> dict:
  output = ctx.work / 'out' / f'{name}-{manifest["n"]}.txt'
  for p in output.parent.glob(output.name + '*'):
    p.unlink()
  res = harness.run_cmd(ctx, [*prefix, *_ev_cmd(
      model, manifest['filelist'], output, extra)], f'{name}-{manifest["n"]}')
  summary = Path(f'{output}.summary.json')
  if res['rc'] != 0 or not summary.exists():
    raise SystemExit(f'{name} failed; see {res["log"]}')
  s = json.loads(summary.read_text())
  if s['succeeded'] != manifest['n']:
    raise SystemExit(f'{name}: {s["succeeded"]} of {manifest["n"]} images')
  res['summary'] = {k: s.get(k) for k in (
      'succeeded', 'wall_seconds', 'backends', 'processing_seconds')}
  res['n'] = manifest['n']
  log(f'{name}-{manifest["n"]}: {res["wall_s"]:.1f} s')
  return res


def _ev_marginal(ctx, model, manifests, name, extra=(), repeats=1) -> dict:
  """The fastest of repeats runs per size (as for the peers)."""
  return _slim(harness.marginal(
      [min((_ev_run(ctx, model, m, name, extra) for _ in range(repeats)),
           key=lambda r: r['wall_s']) for m in manifests]))


def _slim(fig: dict) -> dict:
  keep = ('marginal_img_s', 'startup_s', 'end_to_end_img_s', 'cpu_util',
          'marginal_cpu_ms_per_img', 'peak_rss_mb', 'others_util', 'reliable',
          'backends', 'agreement', 'job_marginal_img_s')
  out = {k: fig[k] for k in keep if k in fig}
  out['runs'] = [{k: r.get(k) for k in ('n', 'wall_s', 'cpu_s', 'log')}
                 for r in fig.get('runs', [])]
  return out


def _peer_run(ctx, peer, backend, model, manifest, name) -> dict:
  scratch = ctx.work / 'scratch' / name
  scratch.mkdir(parents=True, exist_ok=True)
  output = ctx.work / 'out' / f'{name}.classes.json'
  output.unlink(missing_ok=True)
  result = ctx.work / 'logs' / f'{name}.result.json'
  arg = {'model': str(model), 'backend': backend,
         'filelist': manifest['filelist'], 'output': str(output),
         'scratch': str(scratch)}
  res = harness.run_cmd(ctx, [str(PEERS_PYTHON), '-m', 'bench.child', peer,
                              json.dumps(arg), str(result)], name, result,
                        timeout=1800)
  res['n'] = manifest['n']
  if res['rc'] == 0:
    res['classes'] = json.loads(output.read_text())
    if len(res['classes']) != manifest['n']:
      res['rc'] = -1
  log(f'{name}: {res["wall_s"]:.1f} s (rc {res["rc"]})')
  return res


def _classes_of(result_file: Path) -> dict:
  out = {}
  with open(result_file, 'rb') as f:
    for line in f:
      path, _, body = line.partition(b',  ')
      out[path.decode()] = json.loads(body)['class']
  return out


def _agreement(ours: dict, theirs: dict) -> dict:
  same = sum(1 for p, c in ours.items() if theirs.get(p) == c)
  return {'images': len(ours), 'same_class': same,
          'share': same / max(1, len(ours)),
          'distinct_classes_ours': len(set(ours.values()))}


# --- the GIL ---------------------------------------------------------------

def _py_spy(ctx) -> str:
  """bench.pyspy's copy (build/bench/tools), else the venv's, else PATH's."""
  import shutil  # pylint: disable=import-outside-toplevel
  for spy in (ctx.work / 'tools' / 'bin' / 'py-spy', BIN / 'py-spy'):
    if spy.exists():
      return str(spy)
  found = shutil.which('py-spy')
  if not found:
    raise SystemExit('py-spy not found: .venv/bin/pip install py-spy')
  return found


def gil(ctx, model, manifests, name, extra=()) -> dict:
  """py-spy --gil samples only the thread holding the GIL: samples / rate
  is GIL-held time. Marginal between the sizes: start-up apart.

  On a machine whose cores are all busy this over-counts: a holder that
  the kernel has descheduled (a nice-19 decode thread behind the model's
  threads) still holds the GIL. Hence a second figure where no thread waits
  for a core (the null model, one decode thread): the Python work itself,
  which is what bounds one process on a machine with more cores."""
  rate = 200
  runs = []
  for m in manifests:
    raw = ctx.work / 'logs' / f'{name}-gil-{m["n"]}.raw.txt'
    raw.unlink(missing_ok=True)
    prefix = [_py_spy(ctx), 'record', '--gil', '--rate', str(rate),
              '--nonblocking', '--format', 'raw', '-o', str(raw), '--']
    res = _ev_run(ctx, model, m, f'{name}-gil', extra, prefix=prefix)
    samples, by_file = 0, {}
    for line in raw.read_text(errors='replace').splitlines():
      stack, _, count = line.rpartition(' ')
      if not count.isdigit():
        continue
      samples += int(count)
      leaf = stack.split(';')[-1]
      where = leaf[leaf.find('(') + 1:leaf.rfind(':')] if '(' in leaf \
          else leaf
      by_file[where] = by_file.get(where, 0) + int(count)
    runs.append({'n': m['n'], 'samples': samples, 'wall_s': res['wall_s'],
                 'top': sorted(by_file.items(), key=lambda kv: -kv[1])[:12]})
  a, b = runs
  ms = 1000 * (b['samples'] - a['samples']) / rate / (b['n'] - a['n'])
  return {'rate_hz': rate, 'runs': runs, 'gil_ms_per_image': ms,
          'one_process_ceiling_img_s': 1000 / ms if ms > 0 else None}


# --- once ------------------------------------------------------------------

def startup(ctx, model, manifest) -> dict:
  """Command to the end of a 1-image job, warm caches (the IR, the verdict
  and the signature kept): an upper bound on command to first inference;
  and its parts: the interpreter alone, importing the launcher."""
  one = ctx.work / 'out' / 'startup-list.txt'
  one.write_text(Path(manifest['filelist']).read_text().split('\n')[0] + '\n')
  single = {'filelist': str(one), 'n': 1}
  _warm(ctx, model, single)
  walls = [_ev_run(ctx, model, single, 'startup')['wall_s'] for _ in range(5)]

  def timed(code):
    times = []
    for _ in range(5):
      t = time.perf_counter()
      subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT,
                     env=dict(os.environ, **ctx.child_env()))
      times.append(time.perf_counter() - t)
    return statistics.median(times)
  return {'one_image_job_s': statistics.median(walls), 'runs_s': walls,
          'python_s': timed('pass'),
          'import_launcher_s': timed('import ev_predict.pipeline.launcher'),
          'import_tensorflow_s': timed('import tensorflow')}


def workers(ctx, model, manifests) -> dict:
  """-Dnum_worker=2 against one worker on the same cores: the marginal rate
  (300 -> 1500 images, so each worker's own start-up is apart) and the wall
  time of the larger job, 3 interleaved pairs, medians."""
  runs = {1: [], 2: []}
  for i in range(3):
    order = [1, 2] if i % 2 else [2, 1]
    for n in order:
      extra = ('-Dnum_worker=2',) if n == 2 else ()
      runs[n].append(harness.marginal([
          _ev_run(ctx, model, m, f'workers-{n}', extra) for m in manifests]))
  rate = {str(n): statistics.median(r['marginal_img_s'] for r in runs[n])
          for n in runs}
  wall = {str(n): statistics.median(r['runs'][-1]['wall_s'] for r in runs[n])
          for n in runs}
  start = {str(n): statistics.median(r['startup_s'] for r in runs[n])
           for n in runs}
  return {'marginal_img_s': rate, 'wall_s_largest': wall, 'startup_s': start,
          'ratio_two_over_one_img_s': rate['2'] / rate['1'],
          'ratio_two_over_one_wall': wall['1'] / wall['2'],
          'pairs': {str(n): [_slim(r) for r in runs[n]] for n in runs}}


# --- the figures -----------------------------------------------------------

def _plausible(c: dict, key: str, rate: float) -> bool:
  """A peer's slope above its backend's shared-core ceiling is its start-up
  varying between runs (8-20 s against a few seconds of work), not a rate."""
  ceiling = c.get(f'shared_core_{key.split("-")[-1]}')
  return not ceiling or rate <= 1.05 * ceiling


def _peer_rates(c: dict, backend: str) -> dict:
  """The peers' marginal img/s on backend, the implausible ones left out."""
  return {k: v['marginal_img_s'] for k, v in (c.get('peers') or {}).items()
          if k.endswith(backend) and 'marginal_img_s' in v and
          _plausible(c, k, v['marginal_img_s'])}


def ratios(c: dict) -> dict:
  out = {}
  ev = (c.get('ev_predict') or {}).get('marginal_img_s')
  if ev and 'shared_core_openvino' in c:
    out['ev_over_shared_core'] = ev / c['shared_core_openvino']
  if ev and 'interference' in c:
    out['ev_over_interference'] = ev / c['interference']['img_s']
  null = (c.get('null_model') or {}).get('marginal_img_s')
  if null and 'decode' in c:
    out['null_over_decode_all_cores'] = null / (
        c['decode']['minimal_per_core']['img_s'] * CORES)
  for backend, ours in (('openvino', ev), ('tensorflow', (
      c.get('ev_predict_tensorflow') or {}).get('marginal_img_s'))):
    peers = _peer_rates(c, backend)
    if ours and peers:
      best = max(peers, key=peers.get)
      out[f'ev_over_best_peer_{backend}'] = ours / peers[best]
      out[f'best_peer_{backend}'] = best
  workers = (c.get('ev_predict_workers') or {}).get('marginal_img_s')
  if workers and ev:
    out['workers_over_one_worker'] = workers / ev
    if 'shared_core_openvino' in c:
      out['workers_over_shared_core'] = workers / c['shared_core_openvino']
    peers = _peer_rates(c, 'openvino')
    if peers:
      out['workers_over_best_peer_openvino'] = workers / max(peers.values())
  return out


def render(r: dict) -> str:
  lines = [f'# bench.wave2, {r["started"]} .. {r.get("ended")}, '
           f'{r["cores"]} cores', '']
  for name, c in r['corpora'].items():
    lines += [f'## corpus {name} (sizes {c["sizes"]})', '',
              '| what | img/s | start-up s | note |', '|---|---|---|---|']

    def row(what, fig, note=''):
      if not fig:
        return
      rate = fig.get('marginal_img_s', fig.get('img_s'))
      start = fig.get('startup_s')
      lines.append(f'| {what} | {rate:.1f} | '
                   f'{"" if start is None else f"{start:.1f}"} | {note} |')
    if 'decode' in c:
      d = c['decode']
      row('minimal decode, 1 thread', d['minimal_per_core'])
      row(f'minimal decode, {CORES} threads', d['minimal_all_cores'])
      row('ev-predict decode (fetch + decode), 1 thread',
          d['ev_predict_decode_per_core'])
    for backend in ('openvino', 'tensorflow'):
      if f'model_{backend}' in c:
        m = c[f'model_{backend}']
        row(f'model alone, {backend}', m, f'batch {m["best_batch"]}')
        lines.append(f'| shared-core ceiling, {backend} | '
                     f'{c[f"shared_core_{backend}"]:.1f} | | |')
    if 'interference' in c:
      i = c['interference']
      row('interference ceiling', i, f'model {i["model"]["img_s"]:.1f}, '
          f'decode {i["decode"]["img_s"]:.1f} at once, {i["note"]}')
    row('**ev-predict** (OpenVINO)', c.get('ev_predict'))
    row(f'ev-predict -Dnum_worker={r["cores"]} (one core each)',
        c.get('ev_predict_workers'))
    row('ev-predict -Dbackend=tensorflow', c.get('ev_predict_tensorflow'))
    row('ev-predict, null model', c.get('null_model'))
    for key, fig in (c.get('peers') or {}).items():
      if 'error' in fig:
        lines.append(f'| {key} | - | | {fig["error"]} |')
        continue
      a = fig['agreement']
      odd = ('' if _plausible(c, key, fig['marginal_img_s']) else
             ' **above its shared-core ceiling: start-up noise, not a '
             'rate**')
      row(key, fig, f'same class as ev-predict: {a["same_class"]}/'
          f'{a["images"]} ({a["distinct_classes_ours"]} classes){odd}')
    for key, what in (('gil', 'GIL held per image (all cores busy)'),
                      ('gil_uncontended', 'GIL held per image (null model, '
                                          'one decode thread)')):
      if key in c:
        g = c[key]
        lines.append(f'| {what} | {g["gil_ms_per_image"]:.2f} ms |'
                     f' | one process at most '
                     f'{g["one_process_ceiling_img_s"] or 0:.0f} img/s |')
    lines += ['', '| ratio | value |', '|---|---|']
    for k, v in c.get('ratios', {}).items():
      lines.append(f'| {k} | {v if isinstance(v, str) else f"{v:.2f}"} |')
    lines.append('')
  if 'startup' in r:
    s = r['startup']
    lines += ['## start-up', '', f'1-image job (warm caches): '
              f'{s["one_image_job_s"]:.2f} s (median of 5); python '
              f'{s["python_s"]:.2f} s, import launcher '
              f'{s["import_launcher_s"]:.2f} s, import tensorflow '
              f'{s["import_tensorflow_s"]:.2f} s', '']
  if 'workers' in r:
    w = r['workers']
    lines += ['## -Dnum_worker=2', '', f'two workers / one: '
              f'{w["ratio_two_over_one_img_s"]:.2f} x the marginal img/s '
              f'({w["marginal_img_s"]["2"]:.1f} vs '
              f'{w["marginal_img_s"]["1"]:.1f}), '
              f'{w["ratio_two_over_one_wall"]:.2f} x by the wall time of the '
              f'larger job; start-up {w["startup_s"]["2"]:.1f} vs '
              f'{w["startup_s"]["1"]:.1f} s (medians of 3 interleaved pairs)',
              '']
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())
