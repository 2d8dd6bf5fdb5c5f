"""The end-to-end variants (d-g in bench.run's docstring), each at both
corpus sizes in fresh processes, and the paired rounds that give the
headline ratio (ev-predict / shared-core ceiling) with the drift cancelled."""
import json
from pathlib import Path

from bench import harness, models
from bench.config import BIN, VariantFailed, log

# (result key, --only part, extra ev-predict options, tag, model kind)
PLAN = (('naive', 'naive', (), '', 'mobilenetv2'),
        ('beam-example', 'beam', (), '', 'mobilenetv2'),
        ('beam-example-ov', 'beam', (), '', 'mobilenetv2'),
        ('ev-predict', 'ev', (), '', 'mobilenetv2'),
        ('ev-predict-tf', 'diagnostics', ('-Dbackend=tensorflow',), '-tf',
         'mobilenetv2'),
        ('ev-predict-tiny', 'diagnostics', (), '-tiny', 'tiny'),
        ('ev-predict-2workers', 'diagnostics', ('-Dnum_worker=2',),
         '-2workers', 'mobilenetv2'))


def measure(ctx, config, results: dict, manifests: dict) -> None:
  """Every planned variant that config wants, at both sizes, into
  results['variants'] (a failed one as {'error': ...})."""
  sizes = config.sizes
  for key, part, extra, tag, kind in PLAN:
    if not config.want(part):
      continue
    model = models.ensure_model(ctx, kind)
    try:
      if key.startswith('ev-predict'):
        warm(ctx, model, manifests[sizes[0]])
      log(f'{key}: sizes {sizes}')
      variant = 'ev-predict' if key.startswith('ev-predict') else key
      runs = [run_variant(ctx, variant, n, manifests[n], model,
                          config.repeat, extra, tag) for n in sizes]
      results['variants'][key] = harness.marginal(runs)
    except VariantFailed as e:
      log(f'{key} failed: {e}')
      results['variants'][key] = {'error': str(e)}


def ev_predict_cmd(model: Path, filelist: str, output: Path, extra=()):
  return [str(BIN / 'ev-predict'), f'-Dmodel_path={model}',
          f'-Dinput_oss_file={filelist}', f'-Doutput_oss_file={output}',
          *extra]


def run_variant(ctx, variant: str, n: int, manifest: dict, model: Path,
                repeat: int, extra=(), tag: str = '') -> dict:
  """One variant on n images (the fastest of repeat runs), with its
  results checked: every image must have a result."""
  out_dir = ctx.work / 'out'
  out_dir.mkdir(parents=True, exist_ok=True)
  name = f'{variant}{tag}-{n}'
  output = out_dir / f'{name}.txt'
  best = None
  for attempt in range(repeat):
    if output.exists():
      output.unlink()
    if variant.startswith('ev-predict'):
      res = harness.run_cmd(ctx, ev_predict_cmd(
          model, manifest['filelist'], output, extra), f'{name}-{attempt}')
      summary_path = Path(str(output) + '.summary.json')
      if summary_path.exists():
        s = json.loads(summary_path.read_text())
        res['summary'] = {k: s.get(k) for k in (
            'succeeded', 'failed', 'wall_seconds', 'images_per_second',
            'accounting_ok', 'backends')}
        # Where the process time went: before plan() (interpreter, imports),
        # plan .. summary written (the job), after it (shutdown).
        written = summary_path.stat().st_mtime
        res['phases'] = {
            'before_plan_s': written - res['started_at'] - s['wall_seconds'],
            'job_s': s['wall_seconds'],
            'after_summary_s': res['ended_at'] - written}
        res['images'] = s.get('succeeded')
    else:
      res = harness.run_child(ctx, variant, {
          'filelist': manifest['filelist'], 'model': str(model),
          'output': str(output)}, f'{name}-{attempt}')
      res['images'] = (res.get('result') or {}).get('images')
    if res['rc'] != 0 or res.get('images') != n:
      raise VariantFailed(f'{variant}{tag} on {n} images failed (rc '
                          f'{res["rc"]}, {res.get("images")} results); see '
                          f'{res["log"]}')
    log(f'{name}: {res["wall_s"]:.1f} s wall, cpu {res["cpu_util"]:.0%}, '
        f'rss {res["peak_rss_mb"]:.0f} MB')
    if best is None or res['wall_s'] < best['wall_s']:
      best = res
  best['n'] = n
  return best


def warm(ctx, model: Path, manifest: dict) -> None:
  """The first run on a machine converts the model for OpenVINO into
  ev-predict's model cache; measure that once per model, apart."""
  if model.name not in ctx.warmups:
    log(f'warm-up: ev-predict on 8 images with {model.name}')
    ctx.warmups[model.name] = run_warmup(ctx, model, manifest)


def run_warmup(ctx, model: Path, manifest: dict) -> dict:
  """ev-predict on 8 images: fills ev-predict's model cache (OpenVINO
  conversion) the way a machine's first job does."""
  listing = ctx.work / 'out' / 'warmup-list.txt'
  listing.parent.mkdir(parents=True, exist_ok=True)
  listing.write_text(''.join(
      p + '\n' for p in Path(manifest['filelist']).read_text().split()[:8]))
  output = ctx.work / 'out' / f'warmup-{model.name}.txt'
  res = harness.run_cmd(ctx, ev_predict_cmd(model, str(listing), output),
                        f'warmup-{model.name}')
  summary = Path(str(output) + '.summary.json')
  backends = json.loads(summary.read_text()).get('backends') \
      if summary.exists() else None
  return {'rc': res['rc'], 'wall_s': res['wall_s'], 'backends': backends,
          'log': res['log']}


def suffix_for(backends) -> str:
  """Ceiling keys for the backend a run used ({'openvino-f32': 600})."""
  names = list(backends or {})
  return '_openvino' if names and all(
      n.startswith('openvino') for n in names) else ''


def paired_rounds(ctx, rounds: int, manifests: dict, sizes, model: Path,
                  seconds: float) -> dict:
  """The headline ratio, measured so the machine's drift cancels: each
  round measures the shared-core ceiling (fetch+decode per core, the model at
  every batch size; one process, mean rates) and ev-predict's marginal rate
  (both corpus sizes) back to back, ceilings first in even rounds and last in
  odd ones, and takes their ratio; the median round is reported. Both sides
  are throughput over a period (no best-of selection on either)."""
  warm(ctx, model, manifests[sizes[0]])
  used = ctx.warmups[model.name].get('backends')
  backend = 'openvino' if suffix_for(used or {'openvino': 1}) else \
      'tensorflow'
  out = []
  for i in range(rounds):
    def ceilings():
      res = harness.run_child(ctx, 'round-ceilings', {
          'model': str(model), 'filelist': manifests[sizes[0]]['filelist'],
          'seconds': seconds, 'backend': backend}, f'round{i}-ceilings')
      if not res.get('result'):
        raise VariantFailed(f'round {i} ceilings failed; see {res["log"]}')
      return res['result']

    def ev():
      return harness.marginal([run_variant(
          ctx, 'ev-predict', n, manifests[n], model, 1, tag=f'-round{i}')
                               for n in sizes])
    try:
      if i % 2 == 0:
        c, e = ceilings(), ev()
      else:
        e, c = ev(), ceilings()
    except VariantFailed as err:
      log(f'round {i} failed: {err}')
      out.append({'error': str(err)})
      continue
    ratio = e['marginal_img_s'] / c['shared_core_img_s']
    log(f'round {i}: ev-predict {e["marginal_img_s"]:.1f} img/s, shared-core '
        f'ceiling {c["shared_core_img_s"]:.1f} (model {c["model_img_s"]:.1f} '
        f'at bs {c["best_batch"]}, decode {c["decode_per_core"]["img_s"]:.1f}'
        f'/core): {ratio:.3f}')
    out.append({'ceilings': c, 'ev_predict': e, 'ratio': ratio,
                'ceilings_first': i % 2 == 0})
  ok = [r for r in out if 'ratio' in r]

  def middle(values):
    return harness.median(values) if ok else None
  return {'backend': backend, 'seconds_per_point': seconds, 'rounds': out,
          'median_ratio': middle([r['ratio'] for r in ok]),
          'min_ratio': min(r['ratio'] for r in ok) if ok else None,
          'max_ratio': max(r['ratio'] for r in ok) if ok else None,
          'median_ev_img_s': middle([r['ev_predict']['marginal_img_s']
                                     for r in ok]),
          'median_ceiling_img_s': middle([r['ceilings']['shared_core_img_s']
                                          for r in ok])}
