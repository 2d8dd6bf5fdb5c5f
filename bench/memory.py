"""--memory: peak RSS of ev-predict on long file lists, which step holds
the lines, and RSS per extra result line (see bench.run's docstring)."""
import json
import time
from pathlib import Path

from bench import harness, models
from bench.config import log
from bench.variants import ev_predict_cmd


def memory_check(ctx, manifest: dict, model: Path, sizes, result_sizes,
                 real: int = 200) -> dict:
  folder = ctx.work / 'memory'
  folder.mkdir(parents=True, exist_ok=True)
  paths = Path(manifest['filelist']).read_text().split()
  started = time.time()
  out = {'real_images_per_list': real,
         'lists': _long_lists(ctx, folder, paths, model, sizes, real)}
  lo, hi = min(sizes), max(sizes)
  out['read_write_only'] = _read_write_only(ctx, folder, lo, hi)
  out['result_lines'] = _result_lines(ctx, folder, paths, result_sizes)
  a, b = out['lists'][lo], out['lists'][hi]
  out['rss_growth_mb'] = b['peak_rss_mb'] - a['peak_rss_mb']
  out['bytes_per_extra_line'] = (
      (b['peak_rss_mb'] - a['peak_rss_mb']) * 2**20 / (hi - lo))
  out['lines_per_s_marginal'] = (hi - lo) / max(1e-9, b['wall_s'] - a['wall_s'])
  out['cost_s'] = time.time() - started
  return out


def _long_lists(ctx, folder: Path, paths, model: Path, sizes,
                real: int) -> dict:
  """ev-predict on file lists of each size: `real` corpus images spread
  evenly, the other lines missing files (cheap not_found errors)."""
  lists = {}
  for n in sizes:
    listing = folder / f'list-{n}.txt'
    step = max(1, n // real)
    with open(listing, 'w') as f:
      k = 0
      for i in range(n):
        if i % step == 0 and k < real:
          f.write(paths[k % len(paths)] + '\n')
          k += 1
        else:
          f.write(f'/nonexistent/ev-predict-bench/missing-{i:07d}.jpg\n')
    output = folder / f'out-{n}.txt'
    res = harness.run_cmd(ctx, ev_predict_cmd(
        model, str(listing), output, ['-Dmax_error_ratio=1']), f'memory-{n}')
    s = json.loads(Path(str(output) + '.summary.json').read_text()) \
        if res['rc'] == 0 else {}
    lists[n] = {
        'lines': n, 'rc': res['rc'], 'wall_s': res['wall_s'],
        'peak_rss_mb': res['peak_rss_mb'], 'cpu_util': res['cpu_util'],
        'succeeded': s.get('succeeded'), 'failed': s.get('failed'),
        'accounting_ok': s.get('accounting_ok'), 'log': res['log']}
    log(f'memory {n} lines: {res["wall_s"]:.1f} s, peak RSS '
        f'{res["peak_rss_mb"]:.0f} MB')
  return lists


def _read_write_only(ctx, folder: Path, lo: int, hi: int) -> dict:
  """Which step holds the lines: the chunks -> [Reshuffle] -> ReadChunks
  -> write alone, on the shortest and the longest list."""
  out = {}
  for reshuffle in (True, False):
    peaks = {}
    for n in (lo, hi):
      res = harness.run_child(ctx, 'list-memory', {
          'filelist': str(folder / f'list-{n}.txt'), 'reshuffle': reshuffle,
          'output': str(folder / f'readwrite-{n}.txt')},
                              f'list-memory-'
                              f'{"reshuffle" if reshuffle else "plain"}-{n}')
      peaks[n] = {'peak_rss_mb': res['peak_rss_mb'], 'wall_s': res['wall_s'],
                  'rc': res['rc']}
    peaks['bytes_per_extra_line'] = (
        (peaks[hi]['peak_rss_mb'] - peaks[lo]['peak_rss_mb']) * 2**20 /
        (hi - lo))
    key = 'with_reshuffle' if reshuffle else 'without_reshuffle'
    out[key] = peaks
    log(f'read->{"reshuffle->" if reshuffle else ""}write: '
        f'{peaks["bytes_per_extra_line"]:.0f} bytes per extra line')
  return out


def _result_lines(ctx, folder: Path, paths, result_sizes) -> dict:
  """Result lines (1000 class probabilities, ~37 KB each): does peak RSS
  grow with the number of successful images? The tiny model writes the same
  lines as MobileNetV2 at a few times its speed."""
  tiny = models.ensure_model(ctx, 'tiny')
  out = {}
  for n in result_sizes:
    listing = folder / f'real-{n}.txt'
    listing.write_text(''.join(paths[i % len(paths)] + '\n'
                               for i in range(n)))
    output = folder / f'real-out-{n}.txt'
    res = harness.run_cmd(ctx, ev_predict_cmd(tiny, str(listing), output),
                          f'memory-real-{n}')
    out[n] = {
        'rc': res['rc'], 'wall_s': res['wall_s'],
        'peak_rss_mb': res['peak_rss_mb'],
        'result_mb': (output.stat().st_size / 2**20 if output.exists()
                      else None)}
    log(f'memory {n} real images (tiny model): {res["wall_s"]:.1f} s, peak '
        f'RSS {res["peak_rss_mb"]:.0f} MB')
  r_lo, r_hi = min(result_sizes), max(result_sizes)
  ra, rb = out[r_lo], out[r_hi]
  out['rss_bytes_per_extra_result'] = (
      (rb['peak_rss_mb'] - ra['peak_rss_mb']) * 2**20 / (r_hi - r_lo))
  if rb['result_mb']:
    out['result_line_bytes'] = rb['result_mb'] * 2**20 / r_hi
  return out


def child_list_memory(arg: dict) -> dict:
  """ev-predict's first steps alone (the list's chunks, optionally their
  Reshuffle, ReadChunks) -> WriteToText, on the FnApiRunner: does peak RSS
  grow with the file list because of the Reshuffle or the read?"""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  from bench.baselines import fn_api_runner
  from ev_predict.transforms import read, state
  path = arg['filelist']
  plan = state.scan(path, state.chunk_lines_for(state.count_lines(path), 1))
  options = PipelineOptions([])
  with beam.Pipeline(runner=fn_api_runner(options), options=options) as p:
    chunks = p | 'Chunks' >> beam.Create(list(range(plan.chunks)))
    if arg['reshuffle']:
      chunks = chunks | 'Distribute' >> beam.Reshuffle()
    _ = (chunks
         | 'ReadChunks' >> beam.ParDo(read.ReadChunks(
             path, plan, arg['output'] + '.ev-resume'))
         | 'Line' >> beam.Map(lambda r: r.line + b',  {"error": "not_found"}')
         | 'Write' >> beam.io.WriteToText(arg['output'],
                                          shard_name_template=''))
  return {}
