"""ev-predict under py-spy (when build/bench/tools/bin/py-spy exists),
reduced to the share of samples per stage and per thread."""
from pathlib import Path

from bench import harness
from bench.variants import ev_predict_cmd

# Main-thread (the Beam bundle thread: the critical path) stages, first
# match wins: (category, substrings of the ';'-joined stack).
_MAIN_STAGES = (
    ('imports', ('_find_and_load',)),
    ('model: OpenVINO conversion', ('_converted (transforms/backends.py',)),
    ('model: load', ('load_model (transforms/inference.py',)),
    ('model: inference call', ('scores (transforms/inference.py',
                               'scores (transforms/backends.py')),
    ('batch: stack/pad', ('model_input (transforms/inference.py',)),
    ('wait for fetch/decode threads', ('transforms/parallel.py',)),
    ('format result lines (JSON)', ('transforms/format.py',)),
    ('write shards, concatenate, summary', ('transforms/write.py',
                                            'apache_beam/io/textio.py',
                                            'apache_beam/io/filebasedsink.py',
                                            'apache_beam/io/iobase.py')),
    ('read/parse file list', ('transforms/read.py',)),
    ('plan: inspect model, check paths', ('plan (pipeline/graph.py',)),
    ('build pipeline graph', ('build_pipeline (pipeline/graph.py',
                              'Pipeline.apply (apache_beam/pipeline.py')),
    ('beam runner: bundles, coders, state', ('apache_beam',)),
)
_POOL_IDLE_LEAVES = ('_worker (concurrent/futures/thread.py',
                     'Condition.wait (threading.py')


def classify_main(stack: str) -> str:
  for cat, keys in _MAIN_STAGES:
    if any(k in stack for k in keys):
      return cat
  return 'other'


def classify_pool(stack: str, leaf: str) -> str:
  if 'transforms/decode.py' in stack:
    return 'decode (Pillow)'
  if 'transforms/fetch.py' in stack:
    return 'fetch'
  if leaf.startswith(_POOL_IDLE_LEAVES):
    return 'idle (waiting for work)'
  return 'other'


def profile_ev_predict(ctx, manifest: dict, model: Path):
  spy = ctx.work / 'tools' / 'bin' / 'py-spy'
  if not spy.exists():
    return {'skipped': f'{spy} not found (.venv/bin/pip install --target '
                       'build/bench/tools py-spy)'}
  output = ctx.work / 'out' / 'profile-ev-predict.txt'
  raw = ctx.work / 'profile-ev-predict.collapsed.txt'
  cmd = [str(spy), 'record', '--idle', '--threads', '--rate', '50',
         '--nonblocking',
         '--format', 'raw', '-o', str(raw), '--',
         *ev_predict_cmd(model, manifest['filelist'], output)]
  res = harness.run_cmd(ctx, cmd, f'profile-ev-predict-{manifest["n"]}')
  if res['rc'] != 0 or not raw.exists():
    return {'skipped': f'py-spy failed (rc {res["rc"]}); see {res["log"]}'}
  return summarize_profile(raw, res)


def summarize_profile(raw: Path, res: dict, rate: int = 50) -> dict:
  """py-spy --idle --threads collapsed stacks -> seconds per stage.

  Sampling includes waiting (--idle), so the main thread's samples are its
  wall-time timeline: the FnApiRunner runs every bundle on it, and RunInference
  calls the model from it, so it is the critical path. Pool threads (fetch and
  decode, named ev-predict_N) are reported as busy/idle seconds. TensorFlow's
  own C++ threads are not Python threads and are not sampled; their work
  shows up as the main thread's 'model: inference call'."""
  main, pool, others = {}, {}, {}
  pool_threads = set()
  for line in raw.read_text(errors='replace').splitlines():
    stack, _, count = line.rpartition(' ')
    if not count.isdigit():
      continue
    frames = stack.split(';')
    head, body = frames[0], frames[1:]
    name = head.split(': ', 1)[1] if ': ' in head else head
    joined = ';'.join(body)
    leaf = body[-1] if body else ''
    seconds = int(count) / rate
    if name == 'MainThread':
      cat = classify_main(joined) if body else \
          'interpreter start/exit (no Python frame)'
      main[cat] = main.get(cat, 0) + seconds
    elif name.startswith('ev-predict'):
      pool_threads.add(head)
      cat = classify_pool(joined, leaf)
      pool[cat] = pool.get(cat, 0) + seconds
    else:
      others[name] = others.get(name, 0) + seconds

  def table(d):
    total = sum(d.values()) or 1
    return {k: {'s': round(v, 2), 'share': round(v / total, 3)}
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])}
  startup = sum(v for k, v in main.items() if k in (
      'imports', 'plan: inspect model, check paths', 'build pipeline graph',
      'model: load'))
  return {'wall_s': res['wall_s'], 'rate_hz': rate,
          'collapsed_stacks': str(raw),
          'main_thread_s': round(sum(main.values()), 2),
          'main_thread': table(main),
          'main_thread_startup_s': round(startup, 2),
          'pool_threads': len(pool_threads),
          'pool_thread_s': table(pool),
          'other_threads_s': round(sum(others.values()), 2)}
