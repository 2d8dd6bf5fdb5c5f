"""The resume engine (issue #12: the file list cut into chunks, each chunk's
lines formatted and committed in input order to ``<result>.ev-resume/``, the
launcher joining the chunks) measured three ways:

    .venv/bin/python -m bench.resume [--parts kill,memory,scan,order]
        [--lines 100000] [--real 2000] [--kill-at 0.5]
        [--memory-lines 10000,100000,1000000] [--scan-lines 1000000,10000000]
        [--sizes 200,1200] [--pairs 3] [--old-engine /work/main]
        [--out bench/results/resume.json]

or as a part of ``python -m bench.run --kill-resume`` (``--only resume``; the
order A/B then runs at --sizes). Each job is ev-predict's console script in a
fresh process, as a user runs it, with -Dmax_error_ratio=1 where lines name
missing files.

  kill: a --lines list (--real corpus images spread evenly, the other lines
     missing files: cheap not_found errors) with the tiny model, run (a)
     uninterrupted and (b) SIGKILLed once --kill-at of the plan's chunks have
     their chunks/*.done marker, then rerun to completion. Reported: wall
     and CPU time of (a) and of (b)'s two runs, lines processed, lines
     redone (the chunks the killed run had started but not committed, from
     the plan's chunk counts; the lines it had already written to them),
     and whether (b)'s result and error files are byte-identical to (a)'s.
  memory: peak RSS of the launcher (os.wait4's ru_maxrss and its VmHWM) and
     of its whole process tree (the sum of VmRSS over the tree, sampled every
     0.25 s) on lists of --memory-lines missing files (default
     -Dfetch_threads), with the tiny model: flat in the list's length?
  scan: transforms/state.py's count_lines and scan (what the launcher runs
     before any work: the count sizes the chunks, the scan cuts them) timed
     on lists of --scan-lines lines, in lines/s, against a plain read of the
     same bytes counting newlines (the I/O floor).
  order: what ordering and chunk commits cost: interleaved A/B of the old
     engine (--old-engine: the code before the resume engine, unordered
     WriteToText shards) and this checkout's, on the same corpus and
     MobileNetV2, at two sizes per pair (the order of the engines alternates
     each time); per pair the marginal img/s and CPU ms/img between the
     sizes, the median pair reported. Outputs compared: the same lines when
     sorted, and the new engine's in input order.

Which code runs: each engine's ev_predict package is a shim under
build/bench/shim/<engine>/ whose __path__ is that checkout, first on the
child's PYTHONPATH (whatever the caller's PYTHONPATH held).
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench import corpus, harness, models
from bench.config import BIN, ROOT, WORK, Context, log

MISSING = '/nonexistent/ev-predict-bench/missing-{:07d}.jpg\n'
OLD_ENGINE = Path('/work/main')
PARTS = ('kill', 'memory', 'scan', 'order', 'commit', 'profile')


# ------------------------------------------------------------ engines


def engine_env(ctx, name: str, code: Path) -> dict:
  """The environment that makes a child import ev_predict from code."""
  shim = ctx.work / 'shim' / name / 'ev_predict'
  shim.mkdir(parents=True, exist_ok=True)
  (shim / '__init__.py').write_text(f'__path__ = [{str(code)!r}]\n')
  return {'PYTHONPATH': str(shim.parent)}


def engines(ctx, old: Path) -> dict:
  return {'new': engine_env(ctx, 'new', ROOT),
          'old': engine_env(ctx, 'old', old)}


def check_engine(ctx, name: str, env: dict, expect: Path) -> str:
  """Where the child's ev_predict really comes from (refuses a mix-up)."""
  probe = ctx.work / 'logs' / f'engine-{name}.result.json'
  res = harness.run_cmd(ctx, [
      sys.executable, '-c',
      'import json, sys, ev_predict.pipeline.launcher as l; '
      f'json.dump(l.__file__, open({str(probe)!r}, "w"))'],
                        f'engine-{name}', result_path=probe, env=env)
  where = res.get('result')
  if not where or not Path(where).resolve().is_relative_to(expect.resolve()):
    raise SystemExit(f'engine {name}: ev_predict comes from {where}, not '
                     f'{expect}; see {res["log"]}')
  return where


def ev_cmd(model: Path, listing: Path, output: Path, extra=()):
  return [str(BIN / 'ev-predict'), f'-Dmodel_path={model}',
          f'-Dinput_oss_file={listing}', f'-Doutput_oss_file={output}',
          *extra]


def fresh_folder(path: Path) -> Path:
  """A folder of the benchmark's own (under build/bench), emptied."""
  assert WORK in path.parents, path
  if path.exists():
    shutil.rmtree(path)
  path.mkdir(parents=True)
  return path


def summary_of(output: Path) -> dict:
  path = Path(str(output) + '.summary.json')
  return json.loads(path.read_text()) if path.exists() else {}


def digest(path: Path):
  if not path.exists():
    return None
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(8 << 20), b''):
      h.update(block)
  return h.hexdigest()


def same_bytes(a: Path, b: Path) -> bool:
  da = digest(a)
  return da is not None and da == digest(b)


def job(ctx, name: str, cmd, env: dict, on_poll=None, timeout=None) -> dict:
  """One ev-predict job: run_cmd's figures, its summary and the process
  tree's peak memory."""
  rss = harness.TreeRss(then=on_poll)
  res = harness.run_cmd(ctx, cmd, name, env=env, on_poll=rss,
                        timeout=timeout)
  res.update(rss.figures())
  return res


def brief(res: dict, summary: dict) -> dict:
  keep = ('rc', 'killed', 'wall_s', 'cpu_s', 'cpu_util', 'peak_rss_mb',
          'peak_tree_mb', 'peak_launcher_hwm_mb', 'max_processes',
          'others_util', 'log')
  out = {k: res.get(k) for k in keep}
  out['summary'] = {k: summary.get(k) for k in (
      'lines_read', 'succeeded', 'failed', 'failed_by_kind', 'accounting_ok',
      'resumed_lines', 'processed_lines', 'wall_seconds',
      'processing_seconds', 'result_bytes', 'error_bytes', 'backends')}
  return out


# ------------------------------------------------------------ lists


def write_list(path: Path, n: int, real_paths=(), real: int = 0) -> Path:
  """n lines: `real` of real_paths (cycled) spread evenly, the rest missing
  files. Rewritten only when its content would change (the resume key holds
  the list's mtime)."""
  stamp = path.with_suffix('.stamp')
  want = json.dumps([n, real, list(real_paths[:3]), len(real_paths)])
  if path.exists() and stamp.exists() and stamp.read_text() == want:
    return path
  step = max(1, n // real) if real else 0
  k = 0
  with open(path, 'w') as f:
    block = []
    for i in range(n):
      if real and i % step == 0 and k < real:
        block.append(real_paths[k % len(real_paths)] + '\n')
        k += 1
      else:
        block.append(MISSING.format(i))
      if len(block) >= 100000:
        f.write(''.join(block))
        block = []
    f.write(''.join(block))
  stamp.write_text(want)
  return path


# ------------------------------------------------------------ 1. kill + rerun


def kill_check(ctx, env: dict, model: Path, real_paths, lines: int,
               real: int, kill_at: float) -> dict:
  folder = ctx.work / 'resume'
  folder.mkdir(parents=True, exist_ok=True)
  listing = write_list(folder / f'kill-list-{lines}-{real}.txt', lines,
                       real_paths, real)
  flags = ['-Dmax_error_ratio=1']
  out = {'lines': lines, 'real_images': real, 'model': model.name,
         'kill_at': kill_at, 'list': str(listing)}

  a_dir = fresh_folder(folder / 'run-a')
  a_out = a_dir / 'out.txt'
  log(f'resume (a): {lines} lines uninterrupted')
  a = job(ctx, 'resume-a', ev_cmd(model, listing, a_out, flags), env)
  out['a'] = brief(a, summary_of(a_out))

  b_dir = fresh_folder(folder / 'run-b')
  b_out = b_dir / 'out.txt'
  state = Path(str(b_out) + '.ev-resume')
  watch = KillAt(state, kill_at)
  log(f'resume (b): {lines} lines, SIGKILL at {kill_at:.0%} of the chunks')
  killed = job(ctx, 'resume-b-killed', ev_cmd(model, listing, b_out, flags),
               env, on_poll=watch)
  at_kill = watch.inventory()
  out['b_killed'] = brief(killed, {})
  out['b_killed'].update(at_kill)
  if not killed['killed']:
    log('resume (b): the job ended before the kill; nothing to resume')
  log(f'resume (b): killed after {killed["wall_s"]:.1f} s with '
      f'{at_kill.get("chunks_committed")} of {at_kill.get("chunks")} chunks '
      'committed; rerunning')
  rerun = job(ctx, 'resume-b-rerun', ev_cmd(model, listing, b_out, flags),
              env)
  b_summary = summary_of(b_out)
  out['b_rerun'] = brief(rerun, b_summary)

  # (a) again, after (b): the machine's load drifts over minutes, so (b)
  # is set against both.
  a2_dir = fresh_folder(folder / 'run-a2')
  log(f'resume (a) again: {lines} lines uninterrupted')
  a2 = job(ctx, 'resume-a2', ev_cmd(model, listing, a2_dir / 'out.txt',
                                    flags), env)
  out['a_again'] = brief(a2, summary_of(a2_dir / 'out.txt'))

  a_summary = summary_of(a_out)
  plan_lines = at_kill.get('committed_lines', 0)
  written = at_kill.get('lines_written_uncommitted', 0)
  started = at_kill.get('lines_of_started_uncommitted', 0)
  processed_b = (plan_lines + written + b_summary.get('processed_lines', 0))
  out['compare'] = {
      'wall_a_s': a['wall_s'],
      'wall_b_s': killed['wall_s'] + rerun['wall_s'],
      'wall_a_again_s': a2['wall_s'],
      'wall_b_over_a': (killed['wall_s'] + rerun['wall_s']) / (
          (a['wall_s'] + a2['wall_s']) / 2),
      'cpu_a_s': a['cpu_s'], 'cpu_a_again_s': a2['cpu_s'],
      'cpu_b_s': killed['cpu_s'] + rerun['cpu_s'],
      'cpu_b_over_a': (killed['cpu_s'] + rerun['cpu_s']) / (
          (a['cpu_s'] + a2['cpu_s']) / 2),
      'lines_processed_a': a_summary.get('processed_lines'),
      # The killed run got through its committed chunks and (at least) the
      # lines it had written to the chunks it had not committed yet.
      'lines_processed_b_at_least': processed_b,
      'rerun_resumed_lines': b_summary.get('resumed_lines'),
      'rerun_processed_lines': b_summary.get('processed_lines'),
      'rerun_resumed_equals_committed_at_kill':
          b_summary.get('resumed_lines') == plan_lines,
      # Redone: lines the killed run had started (its open chunks) and the
      # rerun did again; at least the ones already written to them.
      'lines_redone_at_most': started,
      'lines_redone_at_least': written,
      'result_identical': same_bytes(a_out, b_out) and same_bytes(
          a_out, a2_dir / 'out.txt'),
      'errors_identical': same_bytes(Path(str(a_out) + '.errors'),
                                     Path(str(b_out) + '.errors')),
      'counts_equal': all(a_summary.get(k) == b_summary.get(k) for k in (
          'lines_read', 'succeeded', 'failed', 'failed_by_kind')),
      'state_folder_removed': not state.exists(),
  }
  c = out['compare']
  log(f'resume: (a) {c["wall_a_s"]:.1f} s, again {a2["wall_s"]:.1f} s; (b) '
      f'{killed["wall_s"]:.1f} + {rerun["wall_s"]:.1f} s = '
      f'{c["wall_b_over_a"]:.2f} x (a), CPU {c["cpu_b_over_a"]:.2f} x; redone '
      f'{written}..{started} lines; identical: {c["result_identical"]}, '
      f'{c["errors_identical"]}')
  return out


class KillAt:
  """on_poll: True (SIGKILL) once `share` of the plan's chunks have their
  .done marker; inventory() then tells what the state folder holds."""

  def __init__(self, state: Path, share: float, period: float = 0.1):
    self.state, self.share, self.period = state, share, period
    self.plan = None
    self.killed_at = None
    self._next = 0.0

  def __call__(self, _pid: int, seconds: float) -> bool:
    if seconds < self._next:
      return False
    self._next = seconds + self.period
    if self.plan is None:
      try:
        self.plan = json.loads((self.state / 'plan.json').read_text())
      except (OSError, ValueError):
        return False
    chunks = self.state / 'chunks'
    try:
      done = sum(1 for n in os.listdir(chunks) if n.endswith('.done'))
    except OSError:
      return False
    if done >= self.share * len(self.plan['counts']):
      self.killed_at = seconds
      return True
    return False

  def inventory(self) -> dict:
    if self.plan is None:
      return {}
    counts = self.plan['counts']
    chunks = self.state / 'chunks'
    names = os.listdir(chunks) if chunks.exists() else []
    done = {int(n[1:9]) for n in names if n.endswith('.done')}
    started = {}
    for name in names:
      if name.endswith(('.ok', '.err')) and int(name[1:9]) not in done:
        with open(chunks / name, 'rb') as f:
          started[int(name[1:9])] = started.get(int(name[1:9]), 0) + \
              f.read().count(b'\n')
    return {'killed_after_s': self.killed_at,
            'chunk_lines': self.plan['chunk_lines'], 'chunks': len(counts),
            'chunks_committed': len(done),
            'committed_lines': sum(counts[i] for i in done),
            'chunks_started_uncommitted': sorted(started),
            'lines_of_started_uncommitted': sum(counts[i] for i in started),
            'lines_written_uncommitted': sum(started.values())}


# ------------------------------------------------------------ 2. memory


def memory_check(ctx, env: dict, model: Path, sizes) -> dict:
  folder = ctx.work / 'resume'
  folder.mkdir(parents=True, exist_ok=True)
  out = {'model': model.name, 'lists': {}}
  for n in sizes:
    listing = write_list(folder / f'missing-{n}.txt', n)
    run_dir = fresh_folder(folder / f'memory-{n}')
    output = run_dir / 'out.txt'
    res = job(ctx, f'resume-memory-{n}',
              ev_cmd(model, listing, output, ['-Dmax_error_ratio=1']), env)
    s = summary_of(output)
    out['lists'][n] = brief(res, s)
    out['lists'][n]['lines_per_s'] = n / res['wall_s']
    log(f'memory {n} lines: {res["wall_s"]:.1f} s, launcher '
        f'{res["peak_rss_mb"]:.0f} MB, tree {res["peak_tree_mb"]:.0f} MB '
        f'({res["max_processes"]} processes)')
  lo, hi = min(sizes), max(sizes)
  a, b = out['lists'][lo], out['lists'][hi]
  for key in ('peak_rss_mb', 'peak_tree_mb'):
    out[f'{key}_growth'] = b[key] - a[key]
    out[f'{key}_bytes_per_extra_line'] = (b[key] - a[key]) * 2**20 / (hi - lo)
  ja, jb = a['summary']['wall_seconds'], b['summary']['wall_seconds']
  if ja and jb and jb > ja:
    out['lines_per_s_marginal'] = (hi - lo) / (jb - ja)
  return out


# ------------------------------------------------------------ 3. scan


def scan_check(ctx, env: dict, sizes) -> dict:
  folder = ctx.work / 'resume'
  out = {}
  for n in sizes:
    listing = write_list(folder / f'missing-{n}.txt', n)
    probe = ctx.work / 'logs' / f'resume-scan-{n}.result.json'
    res = harness.run_cmd(ctx, [sys.executable, '-m', 'bench.child',
                                'scan-time', json.dumps({'list': str(listing)}),
                                str(probe)], f'resume-scan-{n}',
                          result_path=probe, env=env)
    r = dict(res.get('result') or {}, rc=res['rc'],
             peak_rss_mb=res['peak_rss_mb'], others_util=res['others_util'])
    out[n] = r
    if res['rc'] == 0:
      log(f'scan {n} lines ({r["mb"]:.0f} MB): count {r["count_s"]:.2f} s, '
          f'scan {r["scan_s"]:.2f} s ({r["scan_lines_per_s"]:.0f} lines/s), '
          f'plain read {r["read_s"]:.2f} s; peak RSS {r["peak_rss_mb"]:.0f} '
          'MB')
    if n >= 5_000_000:
      listing.unlink()  # hundreds of MB: made again when wanted
      listing.with_suffix('.stamp').unlink()
  return out


def child_scan_time(arg: dict) -> dict:
  """In the engine's own process: what resume.prepare runs on a fresh job
  (count_lines, then scan with the chunk size from the count), each timed,
  and a plain newline count over the same bytes."""
  import resource  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms import state  # pylint: disable=import-outside-toplevel
  path = arg['list']
  size = os.path.getsize(path)
  t0 = time.perf_counter()
  newlines = 0
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(8 << 20), b''):
      newlines += block.count(b'\n')
  t1 = time.perf_counter()
  total = state.count_lines(path)
  t2 = time.perf_counter()
  plan = state.scan(path, state.chunk_lines_for(total, 1))
  t3 = time.perf_counter()
  assert plan.total == total == newlines, (plan.total, total, newlines)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {'lines': total, 'mb': size / 2**20, 'read_s': t1 - t0,
          'count_s': t2 - t1, 'scan_s': t3 - t2,
          'count_lines_per_s': total / (t2 - t1),
          'scan_lines_per_s': total / (t3 - t2),
          'prepare_s': t3 - t1, 'chunks': plan.chunks,
          'chunk_lines': plan.chunk_lines, 'child_peak_rss_mb': rss}


# ------------------------------------------------------------ commit cost


def commit_cost(ctx, env: dict, images: int, chunk_lines) -> dict:
  """The sink alone (child_commit_cost) at each chunk size."""
  out = {}
  for n in chunk_lines:
    probe = ctx.work / 'logs' / f'resume-commit-{n}.result.json'
    res = harness.run_cmd(ctx, [
        sys.executable, '-m', 'bench.child', 'commit-cost', json.dumps({
            'images': images, 'chunk_lines': n,
            'folder': str(fresh_folder(ctx.work / 'resume' /
                                       f'commit-{n}'))}), str(probe)],
                          f'resume-commit-{n}', result_path=probe, env=env)
    out[n] = dict(res.get('result') or {}, rc=res['rc'],
                  others_util=res['others_util'])
    if res['rc'] == 0:
      r = out[n]
      log(f'commit cost, {n}-line chunks: format {r["format_cpu_ms"]:.3f} '
          f'CPU ms/img; CommitChunks {r["commit_cpu_ms"]:.3f} CPU ms/img, '
          f'{r["commit_wall_ms"]:.3f} wall ms/img; {r["fsyncs"]} fsyncs, '
          f'{r["fsync_ms_mean"]:.2f} ms each')
  return out


def child_commit_cost(arg: dict) -> dict:
  """What CommitChunks (transforms/write.py) costs next to the formatting
  it wraps, on `images` result records of 1000 classes in chunks of
  chunk_lines (the job's chunk size for its list): formatting alone, then
  the DoFn as the runner calls it (format, put back in order, write, fsync
  each chunk's files and its marker). os.fsync is timed by a wrapper: the
  wall time a commit blocks the bundle thread for."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms import write  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms.format import Formatter  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms.record import Record  # pylint: disable=import-outside-toplevel
  images, per = arg['images'], arg['chunk_lines']
  rng = np.random.default_rng(0)
  labels = [f'class_{i:04d}' for i in range(1000)]
  records = []
  for i in range(images):
    p = rng.random(1000).astype(np.float32) ** 8
    records.append(Record(line=f'/corpus/img-{i:06d}.jpg'.encode(),
                          chunk=i // per, index=i % per,
                          probs=p / p.sum(), backend='openvino-f32'))
  counts = [per] * (images // per) + ([images % per] if images % per else [])
  fsyncs = []
  real_fsync = os.fsync

  def timed_fsync(fd):
    t = time.perf_counter()
    real_fsync(fd)
    fsyncs.append(time.perf_counter() - t)
  os.fsync = timed_fsync

  def clocks():
    return time.perf_counter(), time.process_time()

  fmt = Formatter(labels)
  w0, c0 = clocks()
  for r in records:
    fmt(r)
  w1, c1 = clocks()
  sink = write.CommitChunks(labels, counts, arg['folder'])
  sink.setup()
  sink.start_bundle()
  committed = 0
  w2, c2 = clocks()
  for r in records:
    for _ in sink.process(r):
      committed += 1
  sink.finish_bundle()
  w3, c3 = clocks()
  sink.teardown()
  os.fsync = real_fsync
  assert committed == len(counts), (committed, len(counts))
  return {'images': images, 'chunk_lines': per, 'chunks': len(counts),
          'format_cpu_ms': 1000 * (c1 - c0) / images,
          'format_wall_ms': 1000 * (w1 - w0) / images,
          'sink_cpu_ms': 1000 * (c3 - c2) / images,
          'sink_wall_ms': 1000 * (w3 - w2) / images,
          # What the sink adds to the formatting the old engine did too.
          'commit_cpu_ms': 1000 * ((c3 - c2) - (c1 - c0)) / images,
          'commit_wall_ms': 1000 * ((w3 - w2) - (w1 - w0)) / images,
          'fsyncs': len(fsyncs),
          'fsync_ms_mean': 1000 * sum(fsyncs) / max(1, len(fsyncs)),
          'fsync_ms_max': 1000 * max(fsyncs, default=0),
          'fsync_wall_ms_per_img': 1000 * sum(fsyncs) / images}


# ------------------------------------------------------------ profile

# Where CommitChunks spends the bundle thread's time (first match wins):
# substrings of py-spy's ';'-joined frames.
_SINK = (
    ('fsync of chunk files', ('_close_durably (transforms/write.py',)),
    ('chunk marker (write_json, fsync, rename)', ('_OpenChunk.commit (',)),
    ('format result lines', ('transforms/format.py',)),
    ('write lines in order', ('add (transforms/write.py',
                              '_write (transforms/write.py')),
    ('CommitChunks other', ('CommitChunks.',)),
    ('committed() / stage_outputs / concatenate',
     ('stage_outputs (transforms/write.py', 'committed (transforms/state.py',
      'concatenate', 'commit (transforms/write.py')),
    ('scan / count the list', ('scan (transforms/state.py',
                               'count_lines (transforms/state.py')),
)


def profile_new(ctx, env: dict, manifest: dict, model: Path) -> dict:
  """The new engine on one corpus under py-spy (--idle: waiting counts):
  bench.pyspy's stages of the bundle (main) thread, and the share of it in
  each part of the sink."""
  from bench import pyspy  # pylint: disable=import-outside-toplevel
  spy = ctx.work / 'tools' / 'bin' / 'py-spy'
  if not spy.exists():
    return {'skipped': f'{spy} not found'}
  run_dir = fresh_folder(ctx.work / 'resume' / 'profile')
  raw = run_dir / 'collapsed.txt'
  cmd = [str(spy), 'record', '--idle', '--threads', '--rate', '50',
         '--nonblocking', '--format', 'raw', '-o', str(raw), '--',
         *ev_cmd(model, Path(manifest['filelist']), run_dir / 'out.txt')]
  res = harness.run_cmd(ctx, cmd, f'resume-profile-{manifest["n"]}', env=env)
  if res['rc'] != 0 or not raw.exists():
    return {'skipped': f'py-spy failed (rc {res["rc"]}); see {res["log"]}'}
  out = pyspy.summarize_profile(raw, res)
  sink, main = {}, 0.0
  for line in raw.read_text(errors='replace').splitlines():
    stack, _, count = line.rpartition(' ')
    if not count.isdigit() or not stack.startswith('thread') or \
        'MainThread' not in stack.split(';')[0]:
      continue
    seconds = int(count) / 50
    main += seconds
    for cat, keys in _SINK:
      if any(k in stack for k in keys):
        sink[cat] = sink.get(cat, 0) + seconds
        break
  processing = main - out['main_thread_startup_s'] - out['main_thread'].get(
      'interpreter start/exit (no Python frame)', {}).get('s', 0)
  out['sink_s'] = {k: round(v, 2) for k, v in sorted(
      sink.items(), key=lambda kv: -kv[1])}
  out['main_thread_after_startup_s'] = round(processing, 2)
  out['sink_share_after_startup'] = {
      k: round(v / processing, 4) for k, v in out['sink_s'].items()}
  log(f'profile: bundle thread {processing:.1f} s after start-up; sink '
      + ', '.join(f'{k} {v:.2f} s' for k, v in out['sink_s'].items()))
  return out


# ------------------------------------------------------------ 4. order A/B


def order_check(ctx, envs: dict, model: Path, manifests: dict, sizes,
                pairs: int) -> dict:
  folder = ctx.work / 'resume'
  folder.mkdir(parents=True, exist_ok=True)
  for name, env in envs.items():
    warm = fresh_folder(folder / f'warm-{name}')
    listing = warm / 'list.txt'
    listing.write_text(''.join(p + '\n' for p in Path(
        manifests[sizes[0]]['filelist']).read_text().split()[:8]))
    log(f'order: warm-up of the {name} engine')
    harness.run_cmd(ctx, ev_cmd(model, listing, warm / 'out.txt'),
                    f'resume-warm-{name}', env=env)
  runs = {name: {n: [] for n in sizes} for name in envs}
  turn = 0
  for pair in range(pairs):
    for n in sizes:
      order = list(envs) if turn % 2 == 0 else list(envs)[::-1]
      turn += 1
      for name in order:
        run_dir = fresh_folder(folder / f'order-{name}-{n}')
        output = run_dir / 'out.txt'
        res = job(ctx, f'resume-order-{name}-{n}-{pair}',
                  ev_cmd(model, Path(manifests[n]['filelist']), output),
                  envs[name])
        s = summary_of(output)
        r = brief(res, s)
        r['n'] = n
        if res['rc'] != 0 or s.get('succeeded') != n:
          raise SystemExit(f'order: {name} on {n} images failed; see '
                           f'{res["log"]}')
        runs[name][n].append(r)
        log(f'order pair {pair} {name} {n}: {res["wall_s"]:.1f} s wall, '
            f'job {s["wall_seconds"]:.1f} s, cpu {res["cpu_s"]:.1f} s')
    # Outputs of the last runs are kept for the comparison below.
  out = {'model': model.name, 'sizes': list(sizes), 'pairs': pairs,
         'runs': runs, 'per_pair': [], 'outputs': compare_outputs(
             Path(manifests[sizes[-1]]['filelist']),
             {name: folder / f'order-{name}-{sizes[-1]}' / 'out.txt'
              for name in envs})}
  lo, hi = sizes
  for pair in range(pairs):
    row = {}
    for name in envs:
      a, b = runs[name][lo][pair], runs[name][hi][pair]
      row[name] = {
          'marginal_img_s': (hi - lo) / (b['wall_s'] - a['wall_s']),
          'job_marginal_img_s': (hi - lo) / (
              b['summary']['wall_seconds'] - a['summary']['wall_seconds']),
          'marginal_cpu_ms_per_img': 1000 * (b['cpu_s'] - a['cpu_s']) / (
              hi - lo),
          'wall_s': [a['wall_s'], b['wall_s']],
          'others_util': max(a['others_util'], b['others_util'])}
    row['rate_new_over_old'] = (row['new']['marginal_img_s'] /
                                row['old']['marginal_img_s'])
    row['cpu_new_over_old'] = (row['new']['marginal_cpu_ms_per_img'] /
                               row['old']['marginal_cpu_ms_per_img'])
    out['per_pair'].append(row)
  for name in envs:
    out[name] = {k: harness.median([p[name][k] for p in out['per_pair']])
                 for k in ('marginal_img_s', 'job_marginal_img_s',
                           'marginal_cpu_ms_per_img')}
    for n in sizes:
      out[name][f'wall_s_{n}_median'] = harness.median(
          [r['wall_s'] for r in runs[name][n]])
      out[name][f'cpu_s_{n}_median'] = harness.median(
          [r['cpu_s'] for r in runs[name][n]])
  out['rate_new_over_old_median'] = harness.median(
      [p['rate_new_over_old'] for p in out['per_pair']])
  out['cpu_new_over_old_median'] = harness.median(
      [p['cpu_new_over_old'] for p in out['per_pair']])
  log(f'order: new/old marginal img/s {out["rate_new_over_old_median"]:.3f}'
      f', CPU ms/img {out["cpu_new_over_old_median"]:.3f} (median of '
      f'{pairs} pairs)')
  return out


def compare_outputs(listing: Path, outputs: dict) -> dict:
  """Same lines (sorted) in each engine's result; which are in input
  order (a result line is `<input line>, <JSON>`)."""
  inputs = [l.strip() for l in listing.read_bytes().split(b'\n') if l.strip()]
  lines = {name: path.read_bytes().split(b'\n')[:-1]
           for name, path in outputs.items()}
  out = {'lines': {name: len(v) for name, v in lines.items()}}
  names = list(lines)
  out['same_lines_sorted'] = all(
      sorted(lines[n]) == sorted(lines[names[0]]) for n in names)
  out['byte_identical'] = all(lines[n] == lines[names[0]] for n in names)
  for name, got in lines.items():
    heads = [l.split(b', {', 1)[0] for l in got]
    out[f'{name}_in_input_order'] = heads == inputs
  if not out['same_lines_sorted']:
    # Scores computed in other batches may differ in their last digits:
    # then compare what each line says.
    parsed = {n: sorted((l.split(b', {', 1)[0], json.loads(
        b'{' + l.split(b', {', 1)[1])['class']) for l in v)
              for n, v in lines.items()}
    out['same_inputs_and_classes'] = all(
        parsed[n] == parsed[names[0]] for n in names)
  return out


# ------------------------------------------------------------ the part


def measure(ctx, parts, model_tiny: Path, model: Path, manifests: dict,
            sizes, old: Path, lines: int = 100_000, real: int = 2000,
            kill_at: float = 0.5, memory_lines=(10_000, 100_000, 1_000_000),
            scan_lines=(1_000_000, 10_000_000), pairs: int = 3) -> dict:
  envs = engines(ctx, old)
  out = {'engines': {'new': check_engine(ctx, 'new', envs['new'], ROOT),
                     'old': (check_engine(ctx, 'old', envs['old'], old)
                             if 'order' in parts else None)},
         'old_engine_commit': _commit(old), 'new_engine_commit': _commit(ROOT)}
  started = time.time()
  real_paths = Path(manifests[max(sizes)]['filelist']).read_text().split()
  if 'order' in parts:
    out['order'] = order_check(ctx, envs, model, manifests, sizes, pairs)
  if 'commit' in parts:
    # The chunk sizes of a 1200-image list (20) and of a 100k-line one (500).
    out['commit'] = commit_cost(ctx, envs['new'], 2000, (20, 500))
  if 'profile' in parts:
    out['profile'] = profile_new(ctx, envs['new'], manifests[max(sizes)],
                                 model)
  if 'kill' in parts:
    out['kill'] = kill_check(ctx, envs['new'], model_tiny, real_paths, lines,
                             real, kill_at)
  if 'memory' in parts:
    out['memory'] = memory_check(ctx, envs['new'], model_tiny, memory_lines)
  if 'scan' in parts:
    out['scan'] = scan_check(ctx, envs['new'], scan_lines)
  out['cost_s'] = time.time() - started
  return out


def print_summary(r: dict) -> None:
  """The resume part's figures, a few lines each."""
  o = r.get('order')
  if o:
    print(f'\norder A/B ({o["model"]}, {o["sizes"][0]} -> {o["sizes"][1]} '
          f'images, median of {o["pairs"]} interleaved pairs):')
    for name in ('old', 'new'):
      e = o[name]
      print(f'  {name}: {e["marginal_img_s"]:.1f} img/s marginal '
            f'({e["job_marginal_img_s"]:.1f} by the job clock), '
            f'{e["marginal_cpu_ms_per_img"]:.1f} CPU ms/img')
    print(f'  new / old: img/s {o["rate_new_over_old_median"]:.3f}, CPU ms/'
          f'img {o["cpu_new_over_old_median"]:.3f}; outputs: {o["outputs"]}')
  k = r.get('kill')
  if k:
    c, at = k['compare'], k['b_killed']
    print(f'\nkill and resume ({k["lines"]} lines, {k["real_images"]} real):'
          f' (a) {c["wall_a_s"]:.1f} s, {c["wall_a_again_s"]:.1f} s; (b) '
          'killed at '
          f'{at.get("chunks_committed")}/{at.get("chunks")} chunks after '
          f'{at["wall_s"]:.1f} s + rerun {k["b_rerun"]["wall_s"]:.1f} s = '
          f'{c["wall_b_over_a"]:.2f} x (a) (CPU {c["cpu_b_over_a"]:.2f} x); '
          'redone '
          f'{c["lines_redone_at_least"]}..{c["lines_redone_at_most"]} lines; '
          f'identical results {c["result_identical"]}, errors '
          f'{c["errors_identical"]}')
  m = r.get('memory')
  if m:
    print('\nmemory (missing files):')
    for n, e in m['lists'].items():
      print(f'  {int(n):>9} lines: {e["wall_s"]:.1f} s, launcher peak '
            f'{e["peak_rss_mb"]:.0f} MB, process tree {e["peak_tree_mb"]:.0f}'
            f' MB ({e["max_processes"]} processes)')
  for n, e in (r.get('scan') or {}).items():
    if 'scan_s' in e:
      print(f'  scan {int(n)} lines: count {e["count_s"]:.2f} s + scan '
            f'{e["scan_s"]:.2f} s ({e["scan_lines_per_s"]:.0f} lines/s); '
            f'plain read {e["read_s"]:.2f} s')


def _commit(code: Path):
  import subprocess  # pylint: disable=import-outside-toplevel
  try:
    return subprocess.run(['git', '-C', str(code), 'rev-parse', 'HEAD'],
                          capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def _ints(text: str):
  return [int(s) for s in text.split(',') if s]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(
      prog='python -m bench.resume', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--parts', default=','.join(PARTS))
  ap.add_argument('--lines', type=int, default=100_000)
  ap.add_argument('--real', type=int, default=2000)
  ap.add_argument('--kill-at', type=float, default=0.5)
  ap.add_argument('--memory-lines', default='10000,100000,1000000')
  ap.add_argument('--scan-lines', default='1000000,10000000')
  ap.add_argument('--sizes', default='200,1200')
  ap.add_argument('--pairs', type=int, default=3)
  ap.add_argument('--old-engine', default=str(OLD_ENGINE))
  ap.add_argument('--quiet-wait', type=float, default=0.0,
                  help='as bench.run (default 0 here: off)')
  ap.add_argument('--out', default=str(WORK / 'resume.json'))
  args = ap.parse_args(argv)
  parts = [p for p in args.parts.split(',') if p]
  unknown = set(parts) - set(PARTS)
  if unknown:
    ap.error(f'unknown parts {sorted(unknown)}; choose from {PARTS}')
  sizes = sorted(_ints(args.sizes))
  ctx = Context(quiet_wait=args.quiet_wait)
  ctx.work.mkdir(parents=True, exist_ok=True)
  from bench import report  # pylint: disable=import-outside-toplevel
  results = {'machine': report.machine_info(),
             'started': time.strftime('%Y-%m-%d %H:%M:%S'),
             'load_avg_before': os.getloadavg()[0], 'parts': parts}
  manifests = {n: corpus.ensure_corpus(ctx, n) for n in sizes}
  results['corpus'] = corpus.corpus_summary(manifests[max(sizes)])
  results['resume'] = measure(
      ctx, parts, models.ensure_model(ctx, 'tiny'),
      models.ensure_model(ctx, 'mobilenetv2'), manifests, sizes,
      Path(args.old_engine), args.lines, args.real, args.kill_at,
      _ints(args.memory_lines), _ints(args.scan_lines), args.pairs)
  results['load_avg_after'] = os.getloadavg()[0]
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1, default=str))
  print_summary(results['resume'])
  print(f'results: {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
