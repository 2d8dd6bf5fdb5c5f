"""What the benchmark reports: the ratios, the table on stdout, the bar
chart, and the machine it ran on."""
import os
import platform
from pathlib import Path

from bench.config import CORES, EV_BATCH
from bench.variants import suffix_for


def compute_ratios(results: dict) -> dict:
  c, v = results['ceilings'], results['variants']
  ratios = {}
  ok = {k: r for k, r in v.items() if r.get('marginal_img_s')}
  # Each ev-predict variant against the ceilings of the backend it used.
  for key, r in ok.items():
    suffix = suffix_for(r.get('backends')) if key.startswith(
        'ev-predict') else ''
    floor = c.get('cpu_floor_ms_per_img' + suffix)
    if floor and r.get('marginal_cpu_ms_per_img', 0) > 0:
      r['cpu_efficiency'] = floor / r['marginal_cpu_ms_per_img']
      r['ceiling_backend'] = suffix.strip('_') or 'tensorflow'
  ev = ok.get('ev-predict')
  if ev:
    suffix = suffix_for(ev.get('backends'))
    name = suffix.strip('_') or 'tensorflow'
    rate = ev['marginal_img_s']
    if c.get('shared_core_img_s' + suffix):
      ratios[f'ev-predict / shared-core ceiling ({name})'] = \
          rate / c['shared_core_img_s' + suffix]
      ratios[f'ev-predict / shared-core ceiling ({name}, bs {EV_BATCH})'] = \
          rate / c['shared_core_img_s_ev_batch' + suffix]
      ratios[f'ev-predict / CPU-time shared-core ceiling ({name}, bs '
             f'{EV_BATCH})'] = \
          rate / c['cpu_shared_core_img_s' + suffix]
    if suffix and c.get('shared_core_img_s'):
      ratios['ev-predict / shared-core ceiling (tensorflow)'] = \
          rate / c['shared_core_img_s']
    for key in ('naive', 'beam-example', 'ev-predict-tf',
                'ev-predict-2workers'):
      if key in ok:
        ratios[f'ev-predict / {key}'] = rate / ok[key]['marginal_img_s']
    if 'cpu_efficiency' in ev:
      ratios[f'ev-predict CPU efficiency ({name} floor / CPU ms per img)'] \
          = ev['cpu_efficiency']
    for key in ('naive', 'beam-example', 'ev-predict-tf'):
      if key in ok and ev.get('marginal_cpu_ms_per_img', 0) > 0:
        ratios[f'CPU ms per image: {key} / ev-predict'] = \
            ok[key]['marginal_cpu_ms_per_img'] / ev['marginal_cpu_ms_per_img']
  if ev and ok.get('beam-example-ov'):
    ratios['ev-predict / beam-example-ov (same backend)'] = \
        ev['marginal_img_s'] / ok['beam-example-ov']['marginal_img_s']
  tf_ev = ok.get('ev-predict-tf')
  if tf_ev:
    for key in ('naive', 'beam-example'):
      if key in ok:
        ratios[f'ev-predict -Dbackend=tensorflow / {key}'] = \
            tf_ev['marginal_img_s'] / ok[key]['marginal_img_s']
    if c.get('shared_core_img_s'):
      ratios['ev-predict -Dbackend=tensorflow / shared-core ceiling '
             '(tensorflow)'] = tf_ev['marginal_img_s'] / c['shared_core_img_s']
  paired = results.get('paired') or {}
  if paired.get('median_ratio'):
    ratios[f'ev-predict / shared-core ceiling ({paired["backend"]}), paired '
           f'rounds, median of {len(paired["rounds"])}'] = \
        paired['median_ratio']
  if ok.get('ev-predict-tiny') and c.get('decode'):
    ratios['ev-predict tiny model / decode all-core ceiling'] = \
        ok['ev-predict-tiny']['marginal_img_s'] / \
        c['decode']['all_cores']['img_s']
  return ratios


def _fmt(x, spec='.1f'):
  if x is None or (isinstance(x, float) and x != x):
    return '-'
  return format(x, spec)


VARIANT_LABELS = {
    'naive': 'd. naive loop', 'beam-example': 'e. beam-example',
    'beam-example-ov': 'e. beam-example, OpenVINO f32',
    'ev-predict': 'f. ev-predict',
    'ev-predict-tf': 'g. ev-predict, -Dbackend=tensorflow',
    'ev-predict-tiny': 'g. ev-predict, tiny model',
    'ev-predict-2workers': 'g. ev-predict, num_worker=2'}


def ceiling_rows(c: dict) -> list:
  """Table rows (label, img/s, start-up, cpu util, cpu ms/img, rss,
  others) for the ceilings a-c."""
  rows = []
  for key, name in (('model', 'TF'), ('model_openvino', 'OpenVINO')):
    m = c.get(key)
    if not m or 'by_batch' not in m:
      continue
    b32 = m['by_batch'][EV_BATCH]
    best = m['by_batch'][m['best_batch']]
    rows.append((f'a. model ceiling {name} (best bs={m["best_batch"]})',
                 m['img_s'], None, best['cpu_util'], best['cpu_ms_per_img'],
                 None, best['others_util']))
    rows.append((f'   {name} at bs={EV_BATCH} (ev-predict default)',
                 b32['img_s'],
                 None, b32['cpu_util'], b32['cpu_ms_per_img'], None,
                 b32['others_util']))
  d = c.get('decode')
  if d:
    for key, label in (('per_core', 'b. fetch+decode, 1 thread'),
                       ('all_cores', f'b. fetch+decode, {CORES} threads'),
                       ('pil_plain_per_core', '   plain PIL (naive), 1 thr')):
      r = d[key]
      rows.append((label, r['img_s'], None, r['cpu_util'],
                   r['cpu_ms_per_img'], None, r['others_util']))
  for suffix, name in (('', 'TF'), ('_openvino', 'OpenVINO')):
    if c.get('shared_core_img_s' + suffix):
      rows.append((f'c. shared-core ceiling {name}',
                   c['shared_core_img_s' + suffix], None, None, None, None,
                   None))
      rows.append((f'   same, model at bs={EV_BATCH}',
                   c['shared_core_img_s_ev_batch' + suffix], None, None, None,
                   None, None))
      rows.append((f'   same, from CPU time (bs={EV_BATCH})',
                   c['cpu_shared_core_img_s' + suffix], None, None,
                   c['cpu_floor_ms_per_img' + suffix], None, None))
  return rows


def variant_rows(v: dict) -> list:
  """Table rows for the measured variants d-g (marginal figures)."""
  rows = []
  for key, label in VARIANT_LABELS.items():
    r = v.get(key)
    if r and 'error' in r:
      rows.append((label + ' FAILED', None, None, None, None, None, None))
    elif r:
      if r.get('backends'):
        label += ' [' + ','.join(r['backends']) + ']' if key == 'ev-predict' \
            else ''
      if not r.get('reliable', True):
        label += ' (noisy)'
      rows.append((label, r['marginal_img_s'], r['startup_s'],
                   r['marginal_cpu_util'], r['marginal_cpu_ms_per_img'],
                   r['peak_rss_mb'], r['others_util']))
  return rows


def print_table(results: dict) -> None:
  rows = ceiling_rows(results['ceilings']) + \
      variant_rows(results['variants'])
  head = (f'{"variant":38} {"img/s":>7} {"start s":>7} {"cpu":>5} '
          f'{"cpu ms/img":>10} {"RSS MB":>7} {"others":>6}')
  print(head)
  print('-' * len(head))
  pct = lambda x: '-' if x is None else format(x, '.0%')
  for label, rate, start, util, cpu_ms, rss, others in rows:
    print(f'{label:38} {_fmt(rate):>7} {_fmt(start):>7} {pct(util):>5} '
          f'{_fmt(cpu_ms):>10} {_fmt(rss, ".0f"):>7} {pct(others):>6}')
  print('img/s: ceilings (a-c) or marginal (N2-N1)/(t2-t1) (d-g); start s: '
        'intercept; cpu: CPU time / wall / cores (marginal for d-g); cpu '
        'ms/img: CPU time per image (marginal for d-g); others: share of the '
        'machine other processes used meanwhile (noise); (noisy): slope from '
        '< 5 s of extra work or others >= 25%')
  print_notes(results)


def print_notes(results: dict) -> None:
  """Below the table: job-clock rates, each paired round, the ratios."""
  v = results['variants']
  for key in ('ev-predict', 'ev-predict-tf', 'ev-predict-tiny',
              'ev-predict-2workers'):
    if v.get(key, {}).get('job_marginal_img_s'):
      print(f'  {key}: marginal img/s by its own job clock (no interpreter '
            f'start/exit): {v[key]["job_marginal_img_s"]:.1f}')
  paired = results.get('paired') or {}
  for i, r in enumerate(paired.get('rounds', [])):
    if 'ratio' in r:
      c = r['ceilings']
      order = 'ceilings first' if r['ceilings_first'] else \
          'ev-predict first'
      print(f'  paired round {i} ({order}): '
            f'ev-predict {r["ev_predict"]["marginal_img_s"]:.1f} img/s / '
            f'shared-core {c["shared_core_img_s"]:.1f} (model '
            f'{c["model_img_s"]:.1f} at bs {c["best_batch"]}, decode '
            f'{c["decode_per_core"]["img_s"]:.1f}/core) = {r["ratio"]:.3f}')
    else:
      print(f'  paired round {i}: {r.get("error")}')
  for k, val in results.get('ratios', {}).items():
    print(f'  {k:58} {val:.2f}')


def chart_bars(results: dict) -> list:
  """(name, img/s) per bar: the ceilings, then the measured variants."""
  bars = []
  c = results['ceilings']
  for key, name in (('model', 'TF'), ('model_openvino', 'OpenVINO')):
    if c.get(key, {}).get('img_s'):
      bars.append((f'model ceiling {name}', c[key]['img_s']))
  if c.get('decode'):
    bars.append(('decode ceiling, all cores',
                 c['decode']['all_cores']['img_s']))
  for suffix, name in (('', 'TF'), ('_openvino', 'OpenVINO')):
    if c.get('shared_core_img_s' + suffix):
      bars.append((f'shared-core ceiling {name}',
                   c['shared_core_img_s' + suffix]))
  for key in ('naive', 'beam-example', 'beam-example-ov', 'ev-predict',
              'ev-predict-tf',
              'ev-predict-tiny', 'ev-predict-2workers'):
    r = results['variants'].get(key)
    rate = (r or {}).get('marginal_img_s')
    if rate and rate == rate and rate > 0:
      bars.append((key + ('' if r.get('reliable', True) else ' (noisy)'),
                   rate))
  return bars


def draw_chart(results: dict, path: Path) -> str:
  """The bar chart at path; returns what drew it."""
  bars = chart_bars(results)
  if not bars:
    return 'nothing to draw'
  title = (f'img/s per variant ({CORES} cores; ceilings and marginal '
           f'rates, sizes {results["sizes"]})')
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    return _draw_with_pillow(bars, title, path)
  fig, ax = plt.subplots(figsize=(9, 0.5 * len(bars) + 1.5))
  names = [b[0] for b in bars][::-1]
  values = [b[1] for b in bars][::-1]
  ax.barh(names, values, color='#4c72b0')
  for i, value in enumerate(values):
    ax.text(value, i, f' {value:.1f}', va='center')
  ax.set_xlabel('images / s')
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return 'matplotlib'


def _draw_with_pillow(bars, title: str, path: Path) -> str:
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  width, left, bar_h, gap, top = 960, 230, 26, 12, 44
  height = top + len(bars) * (bar_h + gap) + 40
  img = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(img)
  draw.text((10, 12), title, fill='black')
  peak = max(b[1] for b in bars) or 1
  span = width - left - 90
  for i, (name, value) in enumerate(bars):
    y = top + i * (bar_h + gap)
    colour = '#999999' if 'ceiling' in name else '#4c72b0'
    draw.text((10, y + 7), name, fill='black')
    draw.rectangle([left, y, left + max(1, int(span * value / peak)),
                    y + bar_h], fill=colour)
    draw.text((left + int(span * value / peak) + 6, y + 7), f'{value:.1f}',
              fill='black')
  draw.line([left, top - 4, left, height - 30], fill='black')
  draw.text((10, height - 24), 'grey: ceilings; blue: measured pipelines '
            '(marginal img/s)', fill='#555555')
  img.save(path)
  return ('pillow (matplotlib is not installed in the venv: '
          '.venv/bin/pip install matplotlib for a matplotlib chart)')


def machine_info() -> dict:
  info = {'cores': CORES, 'python': platform.python_version(),
          'platform': platform.platform()}
  try:
    for line in open('/proc/cpuinfo'):
      if line.startswith('model name'):
        info['cpu'] = line.split(':', 1)[1].strip()
        break
    flags = next(l for l in open('/proc/cpuinfo') if l.startswith('flags'))
    info['avx512'] = 'avx512f' in flags
    info['bf16'] = 'avx512_bf16' in flags or 'amx_bf16' in flags
  except (OSError, StopIteration):
    pass
  try:
    info['mem_gib'] = round(os.sysconf('SC_PAGE_SIZE') *
                            os.sysconf('SC_PHYS_PAGES') / 2**30, 1)
  except (ValueError, OSError):
    pass
  return info


def print_summary(results: dict, out: Path) -> None:
  print()
  print_table(results)
  if results.get('resume'):
    from bench import resume  # pylint: disable=import-outside-toplevel
    resume.print_summary(results['resume'])
  print(f'\ncorpus: {results["corpus"]["n"]} JPEGs, '
        f'{results["corpus"]["kb_min"]}-{results["corpus"]["kb_max"]} KB; '
        f'load avg {results["load_avg_before"]:.2f} -> '
        f'{results["load_avg_after"]:.2f}; benchmark took '
        f'{results["bench_runtime_s"]:.0f} s')
  print(f'results: {out}; chart: {results["chart"]} '
        f'({results["chart_backend"]})')
