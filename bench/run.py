"""ev-predict throughput benchmark: one command, ratios measured in one run.

    .venv/bin/python bench/run.py [--sizes 200,600] [--quick]
                                  [--out build/bench/results.json]
                                  [--repeat R] [--quiet-wait S]
                                  [--rounds R] [--paired-sizes N1,N2]
                                  [--no-profile] [--no-diagnostics]
                                  [--memory [--memory-lines 1000,100000]]
                                  [--only ceilings,naive,beam,ev]

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
(ReadFileList -> [Reshuffle] -> WriteToText on the FnApiRunner, no TF) with and
without the Reshuffle, to see which step holds the lines; and ev-predict with
the tiny model (same 1000-class, ~37 KB result lines) on 200 vs 3000 real
image lines (1000 with --quick): RSS per extra result line. The cost is
reported.

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
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / 'build' / 'bench'
BIN = Path(sys.executable).parent
CORES = os.cpu_count() or 1

CORPUS_VERSION = 3
CORPUS_SEED = 20240611
MODEL_VERSION = 2
SOURCES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field',
           'immunohistochemistry', 'retina', 'stereo_motorcycle')
MIN_KB, MAX_KB = 40, 120
# ev-predict's default batch size on this machine (pipeline.graph).
sys.path.insert(0, str(ROOT))
from ev_predict.transforms.backends import default_batch_size  # pylint: disable=wrong-import-position
EV_BATCH = default_batch_size(CORES)
BATCH_SIZES = tuple(sorted({8, 16, 32, 64, EV_BATCH}))
IMAGE = 224

# ev-predict's model cache (OpenVINO conversions, remote models) for the
# benchmark, so nothing lands in the user's ~/.cache.
EV_CACHE = BENCH / 'ev-predict-cache'
# What ev-predict's CLI sets before TensorFlow starts; every TF child gets it.
CHILD_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': '',
             'EV_PREDICT_CACHE': str(EV_CACHE)}
WARMED = set()


class VariantFailed(Exception):
  pass


def log(msg: str) -> None:
  sys.stderr.write(f'[bench {time.strftime("%H:%M:%S")}] {msg}\n')
  sys.stderr.flush()


# --------------------------------------------------------------------------
# 1. Corpus
# --------------------------------------------------------------------------

def _load_sources():
  import numpy as np  # pylint: disable=import-outside-toplevel
  from skimage import data  # pylint: disable=import-outside-toplevel
  out = {}
  for name in SOURCES:
    arr = getattr(data, name)()
    if isinstance(arr, tuple):      # stereo_motorcycle: (left, right, disp)
      arr = arr[0]
    arr = np.asarray(arr)
    assert arr.ndim == 3 and arr.shape[2] == 3, name
    out[name] = arr
  return out


def _make_photo(i: int, sources) -> tuple:
  """Image i of the corpus (depends only on the seed and i): JPEG bytes and
  what was done."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image, ImageEnhance  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng([CORPUS_SEED, i])
  name = SOURCES[int(rng.integers(len(SOURCES)))]
  src = sources[name]
  sh, sw = src.shape[:2]
  aspect = 4 / 3 if rng.random() < 0.8 else 3 / 2
  portrait = rng.random() < 0.2
  width = int(round(rng.uniform(450, 550)))
  height = int(round(width / aspect))
  if portrait:
    width, height = height, width
  # Largest crop of that aspect inside the source, then a random fraction.
  ratio = width / height
  cw, ch = (sw, sw / ratio) if sw / ratio <= sh else (sh * ratio, sh)
  frac = rng.uniform(0.45, 1.0)
  cw, ch = max(32, int(cw * frac)), max(32, int(ch * frac))
  x0 = int(rng.integers(0, sw - cw + 1))
  y0 = int(rng.integers(0, sh - ch + 1))
  img = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw])
  img = img.resize((width, height), Image.Resampling.LANCZOS)
  flipped = bool(rng.random() < 0.5)
  if flipped:
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
  img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.25))
  img = ImageEnhance.Color(img).enhance(rng.uniform(0.7, 1.3))
  base = np.asarray(img, dtype=np.float32) * \
      (1 + rng.normal(0, 0.03, 3)).astype(np.float32)   # white balance
  subsampling = 0 if rng.random() < 0.3 else 2
  progressive = bool(rng.random() < 0.2)
  target = rng.uniform(MIN_KB + 5, MAX_KB - 5) * 1024
  sigma = rng.uniform(1.0, 3.0)
  for _ in range(6):
    noisy = base + rng.normal(0, sigma, base.shape).astype(np.float32)
    pix = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    data, quality = _encode_near(pix, target, subsampling, progressive)
    kb = len(data) / 1024
    if kb < MIN_KB:
      sigma += 2.5     # too smooth even at high quality: more grain
    elif kb > MAX_KB:
      sigma = max(0.0, sigma - 1.5)
    else:
      break
  return data, {'source': name, 'width': width, 'height': height,
                'quality': quality, 'kb': round(kb, 1),
                'subsampling': '4:4:4' if subsampling == 0 else '4:2:0',
                'progressive': progressive, 'flipped': flipped,
                'noise_sigma': round(float(sigma), 2)}


def _encode_near(pix, target: float, subsampling: int, progressive: bool):
  """Binary search on JPEG quality for the size nearest target."""
  lo, hi, best = 35, 97, None
  while lo <= hi:
    q = (lo + hi) // 2
    buf = io.BytesIO()
    pix.save(buf, 'JPEG', quality=q, subsampling=subsampling,
             progressive=progressive)
    data = buf.getvalue()
    if best is None or abs(len(data) - target) < abs(len(best[0]) - target):
      best = (data, q)
    if len(data) < target:
      lo = q + 1
    else:
      hi = q - 1
  return best


def ensure_corpus(n: int) -> dict:
  """build/bench/corpus-<n>/ with n photos, filelist.txt and manifest.json."""
  folder = BENCH / f'corpus-{n}'
  manifest_path = folder / 'manifest.json'
  if manifest_path.exists():
    manifest = json.loads(manifest_path.read_text())
    if manifest.get('version') == CORPUS_VERSION and manifest['n'] == n:
      return manifest
  log(f'generating corpus of {n} images in {folder}')
  started = time.time()
  if folder.exists():
    shutil.rmtree(folder)
  folder.mkdir(parents=True)
  # Reuse identical images from other corpora (same version and seed).
  donors = []
  for other in BENCH.glob('corpus-*/manifest.json'):
    try:
      m = json.loads(other.read_text())
    except ValueError:
      continue
    if m.get('version') == CORPUS_VERSION and m.get('seed') == CORPUS_SEED:
      donors.append((other.parent, m))
  sources = None
  images = []
  for i in range(n):
    name = f'img-{i:06d}.jpg'
    target = folder / name
    reused = None
    for donor, m in donors:
      if i < m['n'] and (donor / name).exists():
        reused = m['images'][i]
        os.link(donor / name, target)
        break
    if reused is None:
      if sources is None:
        sources = _load_sources()
      data, info = _make_photo(i, sources)
      target.write_bytes(data)
      images.append(info)
    else:
      images.append(reused)
  (folder / 'filelist.txt').write_text(
      ''.join(f'{folder / f"img-{i:06d}.jpg"}\n' for i in range(n)))
  kbs = sorted(im['kb'] for im in images)
  manifest = {
      'version': CORPUS_VERSION, 'seed': CORPUS_SEED, 'n': n,
      'folder': str(folder), 'filelist': str(folder / 'filelist.txt'),
      'kb_min': kbs[0], 'kb_median': kbs[len(kbs) // 2], 'kb_max': kbs[-1],
      'kb_mean': round(sum(kbs) / len(kbs), 1),
      'in_range': sum(MIN_KB <= k <= MAX_KB for k in kbs),
      'total_mb': round(sum(kbs) / 1024, 1),
      'sources': {s: sum(im['source'] == s for im in images) for s in SOURCES},
      'sizes': _count(f'{im["width"]}x{im["height"]}' for im in images),
      'progressive': sum(im['progressive'] for im in images),
      'quality_min': min(im['quality'] for im in images),
      'quality_max': max(im['quality'] for im in images),
      'generated_seconds': round(time.time() - started, 1),
      'images': images,
  }
  manifest['size_range_px'] = [
      min(im['width'] for im in images), min(im['height'] for im in images),
      max(im['width'] for im in images), max(im['height'] for im in images)]
  manifest_path.write_text(json.dumps(manifest, indent=1))
  log(f'corpus-{n}: {manifest["total_mb"]} MB, {kbs[0]}-{kbs[-1]} KB, '
      f'{manifest["in_range"]}/{n} in {MIN_KB}-{MAX_KB} KB, '
      f'{manifest["generated_seconds"]} s')
  return manifest


def _count(items) -> dict:
  out = {}
  for item in items:
    out[item] = out.get(item, 0) + 1
  return dict(sorted(out.items(), key=lambda kv: -kv[1])[:8])


def corpus_summary(manifest: dict) -> dict:
  return {k: v for k, v in manifest.items() if k != 'images'}


# --------------------------------------------------------------------------
# 2. Models (built in a child process: the parent never imports TensorFlow)
# --------------------------------------------------------------------------

def model_dir(kind: str) -> Path:
  return BENCH / ('model-mobilenetv2' if kind == 'mobilenetv2' else
                  'model-tiny')


def ensure_model(kind: str) -> Path:
  path = model_dir(kind)
  stamp = path / 'bench-stamp.json'
  if stamp.exists() and json.loads(stamp.read_text()).get(
      'version') == MODEL_VERSION:
    return path
  log(f'building {kind} SavedModel in {path}')
  res = run_child(['--_child', 'build-model', '--_arg',
                   json.dumps({'kind': kind, 'path': str(path)})],
                  f'build-model-{kind}')
  if res['rc'] != 0:
    raise SystemExit(f'building the {kind} model failed; see {res["log"]}')
  return path


def child_build_model(arg: dict) -> dict:
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  path = Path(arg['path'])
  if path.exists():
    shutil.rmtree(path)
  keras.utils.set_random_seed(7)
  inputs = keras.Input((IMAGE, IMAGE, 3), dtype='uint8', name='images')
  if arg['kind'] == 'mobilenetv2':
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(IMAGE, IMAGE, 3), classes=1000)
    # MobileNet's preprocess_input (x / 127.5 - 1) inside the graph.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    outputs = base(x)
  else:
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.AveragePooling2D(pool_size=28)(x)     # 8x8x3
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1000, activation='softmax')(x)
  model = keras.Model(inputs, outputs)
  model.export(str(path))
  with open(path / 'labels.txt', 'w', encoding='utf-8') as f:
    f.write(''.join(f'class_{i:04d}\n' for i in range(1000)))
  # Check that the export loads and answers like the Keras model.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  sig = tf.saved_model.load(str(path)).signatures['serving_default']
  batch = np.random.default_rng(0).integers(0, 256, (2, IMAGE, IMAGE, 3),
                                            dtype=np.uint8)
  out = sig(tf.constant(batch))
  (key, value), = out.items()
  probs = value.numpy()
  assert probs.shape == (2, 1000), probs.shape
  np.testing.assert_allclose(probs, model.predict(batch, verbose=0),
                             rtol=1e-3, atol=1e-5)
  info = {'version': MODEL_VERSION, 'kind': arg['kind'],
          'params': int(model.count_params()),
          'input': {k: str(v) for k, v in
                    sig.structured_input_signature[1].items()},
          'output_key': key,
          'saved_model_mb': round(sum(
              f.stat().st_size for f in path.rglob('*') if f.is_file())
                                  / 2**20, 1)}
  (path / 'bench-stamp.json').write_text(json.dumps(info, indent=1))
  return info


# --------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------

QUIET = {'max_wait': 0.0, 'threshold': 0.15, 'waited_s': 0.0}


def wait_quiet() -> float:
  """Waits (at most QUIET['max_wait'] s per measurement) until other
  processes use less than QUIET['threshold'] of the machine; returns their
  last observed share."""
  deadline = time.time() + QUIET['max_wait']
  while True:
    b0 = system_busy_s()
    time.sleep(0.5)
    share = max(0.0, (system_busy_s() - b0) / 0.5 / CORES)
    if share < QUIET['threshold'] or time.time() >= deadline:
      return share
    QUIET['waited_s'] += 0.5


def run_child(args, name: str, exe=None, env_extra=None, timeout=None) -> dict:
  """Runs a child (this script in a child mode, or a command) to completion;
  returns wall time, its CPU time and peak RSS (os.wait4) and its JSON."""
  logs = BENCH / 'logs'
  logs.mkdir(parents=True, exist_ok=True)
  log_path = logs / f'{name}.log'
  result_path = logs / f'{name}.result.json'
  if result_path.exists():
    result_path.unlink()
  cmd = list(exe) if exe else [sys.executable, str(Path(__file__).resolve())]
  cmd += args
  if not exe:
    cmd += ['--_result', str(result_path)]
  env = dict(os.environ)
  env.update(CHILD_ENV)
  env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
  env.update(env_extra or {})
  others_before = wait_quiet() if QUIET['max_wait'] else None
  with open(log_path, 'wb') as out:
    out.write((' '.join(cmd) + '\n').encode())
    out.flush()
    busy0 = system_busy_s()
    started_at = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            cwd=ROOT, env=env)
    deadline = None if timeout is None else started + timeout
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if deadline and time.perf_counter() > deadline:
        proc.kill()
        pid, status, usage = os.wait4(proc.pid, 0)
        break
      time.sleep(0.02)
    wall = time.perf_counter() - started
    busy = system_busy_s() - busy0
  proc.returncode = os.waitstatus_to_exitcode(status)
  res = {
      'rc': proc.returncode, 'wall_s': wall, 'user_s': usage.ru_utime,
      'sys_s': usage.ru_stime, 'cpu_s': usage.ru_utime + usage.ru_stime,
      'cpu_util': (usage.ru_utime + usage.ru_stime) / wall / CORES,
      'peak_rss_mb': usage.ru_maxrss / 1024, 'log': str(log_path),
      'others_util': others_util(busy, usage.ru_utime + usage.ru_stime,
                                 wall),
      'others_before': others_before,
      'started_at': started_at, 'ended_at': started_at + wall,
  }
  if result_path.exists():
    res['result'] = json.loads(result_path.read_text())
  if proc.returncode != 0:
    tail = log_path.read_text(errors='replace')[-1500:]
    log(f'{name} exited {proc.returncode}; log tail:\n{tail}')
  return res


def system_busy_s() -> float:
  """CPU-seconds all processes have spent busy since boot (/proc/stat)."""
  try:
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return float('nan')
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def others_util(busy_delta: float, own_cpu: float, wall: float) -> float:
  """Share of all cores that other processes used while we measured."""
  return max(0.0, (busy_delta - own_cpu) / wall / CORES)


LAST_LOOP = {}


def _timed_loop(fn, min_seconds: float, min_calls: int = 3):
  """Calls fn() until both limits are reached; (calls, wall, cpu). The
  other processes' CPU share meanwhile goes to LAST_LOOP['others_util']."""
  import resource  # pylint: disable=import-outside-toplevel
  r0 = resource.getrusage(resource.RUSAGE_SELF)
  b0 = system_busy_s()
  t0 = time.perf_counter()
  calls = 0
  while calls < min_calls or time.perf_counter() - t0 < min_seconds:
    fn()
    calls += 1
  wall = time.perf_counter() - t0
  r1 = resource.getrusage(resource.RUSAGE_SELF)
  cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
  LAST_LOOP['others_util'] = others_util(system_busy_s() - b0, cpu, wall)
  return calls, wall, cpu


def _windows(fn, per_call: int, seconds: float, windows: int = 5) -> dict:
  """Rate of fn (per_call images per call) over several short windows.

  Other processes come and go; a ceiling is what the code reaches when it
  has the cores, so the best window is the ceiling and the mean is kept
  beside it. CPU-ms per image is taken over all windows."""
  rates, cpu_total, wall_total, images, best = [], 0.0, 0.0, 0, None
  for _ in range(windows):
    calls, wall, cpu = _timed_loop(fn, seconds / windows, min_calls=1)
    rate = calls * per_call / wall
    rates.append(rate)
    cpu_total += cpu
    wall_total += wall
    images += calls * per_call
    if best is None or rate > best['img_s']:
      best = {'img_s': rate, 'cpu_util': cpu / wall / CORES,
              'others_util': LAST_LOOP['others_util']}
  return dict(best, img_s_mean=sum(rates) / len(rates),
              cpu_ms_per_img=1000 * cpu_total / images,
              cpu_util_mean=cpu_total / wall_total / CORES, windows=windows)


def _decoded_images(filelist: str, count: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms.decode import DecodeConfig, decode_image  # pylint: disable=import-outside-toplevel
  cfg = DecodeConfig(size=(IMAGE, IMAGE))
  paths = Path(filelist).read_text().split()[:count]
  return np.stack([decode_image(Path(p).read_bytes(), cfg) for p in paths])


def _model_call(arg: dict):
  """(info, call): the model as a ceiling measures it, on uint8 batches:
  the SavedModel's serving signature through TensorFlow, or (backend
  openvino) ev-predict's OpenVINO backend (transforms.backends) on the same
  SavedModel."""
  info = {'backend': arg.get('backend', 'tensorflow')}
  if info['backend'] == 'openvino':
    from ev_predict.transforms import backends, inference  # pylint: disable=import-outside-toplevel
    openvino = backends.import_openvino()
    spec = inference.inspect_saved_model(arg['model'])
    started = time.perf_counter()
    model = backends.OpenVinoBackend(arg['model'], spec, 'f32')
    info['load_s'] = time.perf_counter() - started
    info['openvino_version'] = openvino.__version__
    return info, model.scores
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  sig = tf.saved_model.load(arg['model']).signatures['serving_default']
  (name, _), = sig.structured_input_signature[1].items()
  info['tf_version'] = tf.__version__

  def call(batch):
    return next(iter(sig(**{name: tf.constant(batch)}).values())).numpy()
  return info, call


def _batches(filelist: str):
  """{batch size: contiguous uint8 batch of decoded corpus images}."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  images = _decoded_images(filelist, max(BATCH_SIZES))
  while len(images) < max(BATCH_SIZES):
    images = np.concatenate([images, images])
  return {bs: np.ascontiguousarray(images[:bs]) for bs in BATCH_SIZES}


def child_model_ceiling(arg: dict) -> dict:
  """The model alone on pre-decoded uint8 batches of corpus images."""
  info, call = _model_call(arg)
  by_batch = {}
  for bs, batch in _batches(arg['filelist']).items():
    for _ in range(2):
      call(batch)
    r = _windows(lambda b=batch: call(b), bs, arg['seconds'])
    r['ms_per_batch'] = 1000 * bs / r['img_s']
    by_batch[bs] = r
  best = max(by_batch, key=lambda b: by_batch[b]['img_s'])
  return dict(info, by_batch=by_batch, best_batch=best,
              img_s=by_batch[best]['img_s'],
              img_s_ev_batch=by_batch[EV_BATCH]['img_s'])


def _fetch_decode(filelist: str):
  """(records, fn): the corpus as records, and ev-predict's fetch + decode
  of one record to the model's input."""
  from ev_predict.transforms.decode import DecodeConfig, decode_image  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms.fetch import Fetcher  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms.record import Record  # pylint: disable=import-outside-toplevel
  paths = Path(filelist).read_text().split()
  cfg = DecodeConfig(size=(IMAGE, IMAGE))
  fetcher = Fetcher()
  records = [Record(line=p.encode(), source=p) for p in paths]
  for p in paths:                 # page cache warm, as for every variant
    Path(p).read_bytes()

  def fetch_decode(r):
    fetched = fetcher(r)
    assert fetched.ok, fetched.message
    return decode_image(fetched.data, cfg)
  fetch_decode(records[0])
  return records, fetch_decode


def _eight_at_a_time(fn, records):
  """A callable that runs fn on the next 8 records (cycling), on this
  thread: one call, 8 images."""
  pos = [0]

  def eight():
    for _ in range(8):
      fn(records[pos[0] % len(records)])
      pos[0] += 1
  return eight


def _mean_rate(fn, per_call: int, seconds: float) -> dict:
  """img/s of fn over one window: images / wall time, the statistic an
  end-to-end run's marginal rate is (no best-of selection)."""
  calls, wall, cpu = _timed_loop(fn, seconds)
  return {'img_s': calls * per_call / wall,
          'cpu_ms_per_img': 1000 * cpu / (calls * per_call),
          'cpu_util': cpu / wall / CORES,
          'others_util': LAST_LOOP['others_util'], 'seconds': wall}


def child_round_ceilings(arg: dict) -> dict:
  """One paired round's ceilings, back to back in one process: fetch +
  decode on one thread (per core), then the model at each batch size; each
  a mean rate over one window."""
  records, fetch_decode = _fetch_decode(arg['filelist'])
  decode = _mean_rate(_eight_at_a_time(fetch_decode, records), 8,
                      arg['seconds'])
  info, call = _model_call(arg)
  by_batch = {}
  for bs, batch in _batches(arg['filelist']).items():
    for _ in range(2):
      call(batch)
    by_batch[bs] = _mean_rate(lambda b=batch: call(b), bs, arg['seconds'])
  best = max(by_batch, key=lambda b: by_batch[b]['img_s'])
  model = by_batch[best]['img_s']
  return dict(info, decode_per_core=decode, by_batch=by_batch,
              best_batch=best, model_img_s=model,
              shared_core_img_s=1 / (1 / model + 1 / (
                  CORES * decode['img_s'])))


def child_decode_ceiling(arg: dict) -> dict:
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms.fetch import Fetcher  # pylint: disable=import-outside-toplevel
  from ev_predict.transforms.format import Formatter  # pylint: disable=import-outside-toplevel

  records, fetch_decode = _fetch_decode(arg['filelist'])
  fetcher = Fetcher()

  def pil_plain(r):     # what the naive loop does
    with Image.open(r.source) as im:
      return np.asarray(im.convert('RGB').resize((IMAGE, IMAGE)))

  def rate_single(fn):
    return _windows(_eight_at_a_time(fn, records), 8, arg['seconds'])

  def rate_threads(fn, threads):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      chunk = (records * (1 + 16 * threads // len(records)))[:16 * threads]
      list(pool.map(fn, chunk[:threads * 2]))           # warm threads
      r = _windows(lambda: list(pool.map(fn, chunk)), len(chunk),
                   arg['seconds'])
    return dict(r, threads=threads)

  out = {
      'per_core': rate_single(fetch_decode),
      'all_cores': rate_threads(fetch_decode, CORES),
      'fetch_only_per_core': rate_single(fetcher),
      'pil_plain_per_core': rate_single(pil_plain),
  }
  # Formatting a result line: 1000 probabilities as JSON.
  probs = np.random.default_rng(0).dirichlet(np.ones(1000)).astype(np.float32)
  labels = [f'class_{i:04d}' for i in range(1000)]
  done = records[0].but(probs=probs)
  formatter = Formatter(labels)
  calls, wall, _ = _timed_loop(lambda: formatter(done),
                               min(1.0, arg['seconds']), min_calls=50)
  out['format_line_ms'] = 1000 * wall / calls
  out['line_bytes'] = len(formatter(done)[1])
  import PIL  # pylint: disable=import-outside-toplevel
  out['pillow_version'] = PIL.__version__
  return out


# --- d. naive baseline -----------------------------------------------------

def pai_line(path: str, probs, labels) -> str:
  """The PAI EasyVision result line, written by hand (as ev-predict does)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  best = int(np.argmax(probs))
  return path + ', ' + json.dumps({
      'class': best, 'class_name': labels[best],
      'class_probs': {n: float(p) for n, p in zip(labels, probs)}},
                                  ensure_ascii=False)


def child_naive(arg: dict) -> dict:
  """What a user writes by hand: one image at a time through the signature."""
  import numpy as np
  import tensorflow as tf
  from PIL import Image
  model = tf.saved_model.load(arg['model'])
  infer = model.signatures['serving_default']
  labels = open(os.path.join(arg['model'], 'labels.txt')).read().split()
  n = 0
  with open(arg['filelist']) as lines, open(arg['output'], 'w') as out:
    for line in lines:
      path = line.strip()
      if not path:
        continue
      img = Image.open(path).convert('RGB').resize((IMAGE, IMAGE))
      x = tf.constant(np.asarray(img)[None])
      probs = next(iter(infer(x).values())).numpy()[0]
      out.write(pai_line(path, probs, labels) + '\n')
      n += 1
  return {'images': n}


# --- e. Beam-example baseline ----------------------------------------------

def _beam_example_pipeline(p, filelist: str, model: str, output: str,
                           backend: str = 'tensorflow'):
  """Shaped like Beam's examples/inference/*_image_classification.py.
  backend 'openvino': the same model through OpenVINO, compiled as
  ev-predict's backend compiles it (f32), for a same-backend comparison."""
  import apache_beam as beam
  import numpy as np
  from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler,
                                             PredictionResult, RunInference)
  from PIL import Image

  class SavedModelHandler(ModelHandler):
    """tf.saved_model.load + the serving signature (Beam's TFModelHandler
    loads through Keras, which cannot load a SavedModel under Keras 3)."""

    def __init__(self, path):
      self._path = path

    def load_model(self):
      if backend == 'openvino':
        # Telemetry off, as in every process here (nothing may call out);
        # the plain import would cost about 1 s of start-up, no throughput.
        from ev_predict.transforms.backends import import_openvino
        ov = import_openvino()
        compiled = ov.Core().compile_model(
            ov.convert_model(self._path), 'CPU',
            {'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY',
             'NUM_STREAMS': 1})
        return lambda x: compiled(x)[compiled.output(0)]
      import tensorflow as tf
      signature = tf.saved_model.load(self._path).signatures['serving_default']
      return lambda x: next(iter(signature(tf.constant(x)).values())).numpy()

    def run_inference(self, batch, model, inference_args=None):
      probs = model(np.stack(batch))
      return [PredictionResult(x, y) for x, y in zip(batch, probs)]

  def read_image(path):
    img = Image.open(path).convert('RGB').resize((IMAGE, IMAGE))
    return path, np.asarray(img)

  class PostProcessor(beam.DoFn):

    def setup(self):
      with open(os.path.join(model, 'labels.txt')) as f:
        self._labels = f.read().split()

    def process(self, element):
      path, result = element
      yield pai_line(path, result.inference, self._labels)

  handler = KeyedModelHandler(SavedModelHandler(model))
  _ = (p
       | 'ReadImageNames' >> beam.io.ReadFromText(filelist)
       | 'FilterEmptyLines' >> beam.Filter(lambda s: s.strip())
       | 'ReadImageData' >> beam.Map(read_image)
       | 'RunInference' >> RunInference(handler)
       | 'PostProcessOutputs' >> beam.ParDo(PostProcessor())
       | 'WriteOutput' >> beam.io.WriteToText(
           output, shard_name_template='', append_trailing_newlines=True))


def fn_api_runner(options):
  """What pipeline/cli.py make_runner() returns for DirectRunner: Beam's
  FnApiRunner directly (DirectRunner would first try to download Prism)."""
  from apache_beam.portability.api import beam_provision_api_pb2
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  from apache_beam.runners.portability.portable_runner import JobServiceHandle
  encoded = JobServiceHandle.encode_pipeline_options(
      options.get_all_options())
  return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
      beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def child_beam_example(arg: dict, backend: str = 'tensorflow') -> dict:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  options = PipelineOptions([])
  with beam.Pipeline(runner=fn_api_runner(options), options=options) as p:
    _beam_example_pipeline(p, arg['filelist'], arg['model'], arg['output'],
                           backend)
  with open(arg['output']) as f:
    return {'images': sum(1 for _ in f)}


def child_beam_example_openvino(arg: dict) -> dict:
  return child_beam_example(arg, 'openvino')


def child_list_memory(arg: dict) -> dict:
  """ev-predict's first steps alone (ReadFileList, optionally its
  Reshuffle) -> WriteToText, on the FnApiRunner: does peak RSS grow with the
  file list because of the Reshuffle?"""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  from ev_predict.transforms import read
  options = PipelineOptions([])
  with beam.Pipeline(runner=fn_api_runner(options), options=options) as p:
    records = p | 'ReadFileList' >> read.ReadFileList(arg['filelist'])
    if arg['reshuffle']:
      records = records | 'Distribute' >> beam.Reshuffle()
    _ = (records
         | 'Line' >> beam.Map(lambda r: r.line + b', {"error": "not_found"}')
         | 'Write' >> beam.io.WriteToText(arg['output'],
                                          shard_name_template=''))
  return {}


CHILDREN = {
    'list-memory': child_list_memory,
    'build-model': child_build_model,
    'model-ceiling': child_model_ceiling,
    'decode-ceiling': child_decode_ceiling,
    'round-ceilings': child_round_ceilings,
    'naive': child_naive,
    'beam-example': child_beam_example,
    'beam-example-ov': child_beam_example_openvino,
}


# --------------------------------------------------------------------------
# 3. End-to-end variants
# --------------------------------------------------------------------------

def ev_predict_cmd(model: Path, filelist: str, output: Path, extra=()):
  return [str(BIN / 'ev-predict'), f'-Dmodel_path={model}',
          f'-Dinput_oss_file={filelist}', f'-Doutput_oss_file={output}',
          *extra]


def run_variant(variant: str, n: int, manifest: dict, model: Path,
                repeat: int, extra=(), tag: str = '') -> dict:
  out_dir = BENCH / 'out'
  out_dir.mkdir(parents=True, exist_ok=True)
  name = f'{variant}{tag}-{n}'
  output = out_dir / f'{name}.txt'
  best = None
  for attempt in range(repeat):
    if output.exists():
      output.unlink()
    if variant.startswith('ev-predict'):
      res = run_child([], f'{name}-{attempt}', exe=ev_predict_cmd(
          model, manifest['filelist'], output, extra))
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
      res = run_child(['--_child', variant, '--_arg', json.dumps({
          'filelist': manifest['filelist'], 'model': str(model),
          'output': str(output)})], f'{name}-{attempt}')
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


def run_warmup(model: Path, manifest: dict) -> dict:
  """ev-predict on 8 images: fills ev-predict's model cache (OpenVINO
  conversion) the way a machine's first job does."""
  listing = BENCH / 'out' / 'warmup-list.txt'
  listing.parent.mkdir(parents=True, exist_ok=True)
  listing.write_text(''.join(
      p + '\n' for p in Path(manifest['filelist']).read_text().split()[:8]))
  output = BENCH / 'out' / f'warmup-{model.name}.txt'
  res = run_child([], f'warmup-{model.name}', exe=ev_predict_cmd(
      model, str(listing), output))
  summary = Path(str(output) + '.summary.json')
  backends = json.loads(summary.read_text()).get('backends') \
      if summary.exists() else None
  return {'rc': res['rc'], 'wall_s': res['wall_s'], 'backends': backends,
          'log': res['log']}


def _suffix_for(backends) -> str:
  """Ceiling keys for the backend a run used ({'openvino-f32': 600})."""
  names = list(backends or {})
  return '_openvino' if names and all(
      n.startswith('openvino') for n in names) else ''


def _median(values):
  values = sorted(values)
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] +
                                               values[mid]) / 2


def paired_rounds(rounds: int, manifests: dict, sizes, model: Path,
                  results: dict, seconds: float) -> dict:
  """The headline ratio, measured so the machine's drift cancels: each
  round measures the shared-core ceiling (fetch+decode per core, the model at
  every batch size; one process, mean rates) and ev-predict's marginal rate
  (both corpus sizes) back to back, ceilings first in even rounds and last in
  odd ones, and takes their ratio; the median round is reported. Both sides
  are throughput over a period (no best-of selection on either)."""
  if str(model) not in WARMED:
    WARMED.add(str(model))
    results.setdefault('warmup', {})[model.name] = run_warmup(
        model, manifests[sizes[0]])
  used = (results.get('warmup', {}).get(model.name) or {}).get('backends')
  backend = 'openvino' if _suffix_for(used or {'openvino': 1}) else \
      'tensorflow'
  out = []
  for i in range(rounds):
    def ceilings():
      res = run_child(['--_child', 'round-ceilings', '--_arg', json.dumps(
          {'model': str(model), 'filelist': manifests[sizes[0]]['filelist'],
           'seconds': seconds, 'backend': backend})], f'round{i}-ceilings')
      if not res.get('result'):
        raise VariantFailed(f'round {i} ceilings failed; see {res["log"]}')
      return res['result']

    def ev():
      return marginal([run_variant('ev-predict', n, manifests[n], model, 1,
                                   tag=f'-round{i}') for n in sizes])
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
  return {'backend': backend, 'seconds_per_point': seconds, 'rounds': out,
          'median_ratio': _median([r['ratio'] for r in ok]) if ok else None,
          'min_ratio': min(r['ratio'] for r in ok) if ok else None,
          'max_ratio': max(r['ratio'] for r in ok) if ok else None,
          'median_ev_img_s': _median([r['ev_predict']['marginal_img_s']
                                      for r in ok]) if ok else None,
          'median_ceiling_img_s': _median([r['ceilings']['shared_core_img_s']
                                           for r in ok]) if ok else None}


def compute_ratios(results: dict) -> dict:
  c, v = results['ceilings'], results['variants']
  ratios = {}
  ok = {k: r for k, r in v.items() if r.get('marginal_img_s')}
  # Each ev-predict variant against the ceilings of the backend it used.
  for key, r in ok.items():
    suffix = _suffix_for(r.get('backends')) if key.startswith(
        'ev-predict') else ''
    floor = c.get('cpu_floor_ms_per_img' + suffix)
    if floor and r.get('marginal_cpu_ms_per_img', 0) > 0:
      r['cpu_efficiency'] = floor / r['marginal_cpu_ms_per_img']
      r['ceiling_backend'] = suffix.strip('_') or 'tensorflow'
  ev = ok.get('ev-predict')
  if ev:
    suffix = _suffix_for(ev.get('backends'))
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


def marginal(runs) -> dict:
  """Slope and intercept between the two corpus sizes."""
  a, b = sorted(runs, key=lambda r: r['n'])
  dt = b['wall_s'] - a['wall_s']
  rate = (b['n'] - a['n']) / dt if dt > 0 else float('nan')
  startup = a['wall_s'] - a['n'] / rate if dt > 0 else float('nan')
  out = {
      'marginal_img_s': rate,
      # A slope from less than 5 s of extra work, or taken while other
      # processes used a quarter of the machine, is noise-prone.
      'reliable': bool(dt >= 5 and max(a['others_util'],
                                        b['others_util']) < 0.25),
      'startup_s': startup,
      'end_to_end_img_s': b['n'] / b['wall_s'],
      'cpu_util': b['cpu_util'],
      'marginal_cpu_util': ((b['cpu_s'] - a['cpu_s']) / dt / CORES
                            if dt > 0 else float('nan')),
      'marginal_cpu_ms_per_img': 1000 * (b['cpu_s'] - a['cpu_s']) / (
          b['n'] - a['n']),
      'peak_rss_mb': b['peak_rss_mb'],
      'peak_rss_mb_small': a['peak_rss_mb'],
      'others_util': max(a['others_util'], b['others_util']),
      'runs': [{k: r[k] for k in ('n', 'wall_s', 'cpu_s', 'cpu_util',
                                  'peak_rss_mb', 'others_util', 'summary',
                                  'phases', 'log')
                if k in r} for r in (a, b)],
  }
  out['backends'] = (b.get('summary') or {}).get('backends')
  if 'summary' in a and 'summary' in b:
    # ev-predict's own clock (plan() to summary written): no interpreter
    # start-up or shutdown in it.
    djob = b['summary']['wall_seconds'] - a['summary']['wall_seconds']
    out['job_marginal_img_s'] = (b['n'] - a['n']) / djob if djob > 0 \
        else float('nan')
  return out


# --------------------------------------------------------------------------
# Profile: ev-predict under py-spy
# --------------------------------------------------------------------------

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


def profile_ev_predict(manifest: dict, model: Path):
  spy = BENCH / 'tools' / 'bin' / 'py-spy'
  if not spy.exists():
    return {'skipped': f'{spy} not found (.venv/bin/pip install --target '
                       'build/bench/tools py-spy)'}
  out_dir = BENCH / 'out'
  output = out_dir / 'profile-ev-predict.txt'
  raw = BENCH / 'profile-ev-predict.collapsed.txt'
  cmd = [str(spy), 'record', '--idle', '--threads', '--rate', '50',
         '--nonblocking',
         '--format', 'raw', '-o', str(raw), '--',
         *ev_predict_cmd(model, manifest['filelist'], output)]
  res = run_child([], f'profile-ev-predict-{manifest["n"]}', exe=cmd)
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


# --------------------------------------------------------------------------
# 4. Memory mode
# --------------------------------------------------------------------------

def memory_check(manifest: dict, model: Path, sizes, result_sizes,
                 real: int = 200) -> dict:
  folder = BENCH / 'memory'
  folder.mkdir(parents=True, exist_ok=True)
  paths = Path(manifest['filelist']).read_text().split()
  out = {'real_images_per_list': real, 'lists': {}}
  started = time.time()
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
    res = run_child([], f'memory-{n}', exe=ev_predict_cmd(
        model, str(listing), output, ['-Dmax_error_ratio=1']))
    s = json.loads(Path(str(output) + '.summary.json').read_text()) \
        if res['rc'] == 0 else {}
    out['lists'][n] = {
        'lines': n, 'rc': res['rc'], 'wall_s': res['wall_s'],
        'peak_rss_mb': res['peak_rss_mb'], 'cpu_util': res['cpu_util'],
        'succeeded': s.get('succeeded'), 'failed': s.get('failed'),
        'accounting_ok': s.get('accounting_ok'), 'log': res['log']}
    log(f'memory {n} lines: {res["wall_s"]:.1f} s, peak RSS '
        f'{res["peak_rss_mb"]:.0f} MB')
  lo, hi = min(sizes), max(sizes)
  # Which step holds the lines: ReadFileList -> [Reshuffle] -> write alone.
  out['read_write_only'] = {}
  for reshuffle in (True, False):
    peaks = {}
    for n in (lo, hi):
      res = run_child(['--_child', 'list-memory', '--_arg', json.dumps({
          'filelist': str(folder / f'list-{n}.txt'), 'reshuffle': reshuffle,
          'output': str(folder / f'readwrite-{n}.txt')})],
                      f'list-memory-{"reshuffle" if reshuffle else "plain"}'
                      f'-{n}')
      peaks[n] = {'peak_rss_mb': res['peak_rss_mb'], 'wall_s': res['wall_s'],
                  'rc': res['rc']}
    peaks['bytes_per_extra_line'] = (
        (peaks[hi]['peak_rss_mb'] - peaks[lo]['peak_rss_mb']) * 2**20 /
        (hi - lo))
    key = 'with_reshuffle' if reshuffle else 'without_reshuffle'
    out['read_write_only'][key] = peaks
    log(f'read->{"reshuffle->" if reshuffle else ""}write: '
        f'{peaks["bytes_per_extra_line"]:.0f} bytes per extra line')
  # Result lines (1000 class probabilities, ~37 KB each): does peak RSS grow
  # with the number of successful images? The tiny model writes the same
  # lines as MobileNetV2 at a few times its speed.
  tiny = ensure_model('tiny')
  out['result_lines'] = {}
  for n in result_sizes:
    listing = folder / f'real-{n}.txt'
    listing.write_text(''.join(paths[i % len(paths)] + '\n'
                               for i in range(n)))
    output = folder / f'real-out-{n}.txt'
    res = run_child([], f'memory-real-{n}', exe=ev_predict_cmd(
        tiny, str(listing), output))
    out['result_lines'][n] = {
        'rc': res['rc'], 'wall_s': res['wall_s'],
        'peak_rss_mb': res['peak_rss_mb'],
        'result_mb': (output.stat().st_size / 2**20 if output.exists()
                      else None)}
    log(f'memory {n} real images (tiny model): {res["wall_s"]:.1f} s, peak '
        f'RSS {res["peak_rss_mb"]:.0f} MB')
  r_lo, r_hi = min(result_sizes), max(result_sizes)
  ra, rb = out['result_lines'][r_lo], out['result_lines'][r_hi]
  out['result_lines']['rss_bytes_per_extra_result'] = (
      (rb['peak_rss_mb'] - ra['peak_rss_mb']) * 2**20 / (r_hi - r_lo))
  if rb['result_mb']:
    out['result_lines']['result_line_bytes'] = (
        rb['result_mb'] * 2**20 / r_hi)
  a, b = out['lists'][lo], out['lists'][hi]
  out['rss_growth_mb'] = b['peak_rss_mb'] - a['peak_rss_mb']
  out['bytes_per_extra_line'] = (
      (b['peak_rss_mb'] - a['peak_rss_mb']) * 2**20 / (hi - lo))
  out['lines_per_s_marginal'] = (hi - lo) / max(1e-9, b['wall_s'] - a['wall_s'])
  out['cost_s'] = time.time() - started
  return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _fmt(x, spec='.1f'):
  if x is None or (isinstance(x, float) and x != x):
    return '-'
  return format(x, spec)


def print_table(results: dict) -> None:
  c = results['ceilings']
  v = results['variants']
  rows = []   # label, img/s, start-up, cpu util, cpu ms/img, rss, others
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
  labels = {'naive': 'd. naive loop', 'beam-example': 'e. beam-example',
            'beam-example-ov': 'e. beam-example, OpenVINO f32',
            'ev-predict': 'f. ev-predict',
            'ev-predict-tf': 'g. ev-predict, -Dbackend=tensorflow',
            'ev-predict-tiny': 'g. ev-predict, tiny model',
            'ev-predict-2workers': 'g. ev-predict, num_worker=2'}
  for key, label in labels.items():
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
  for key in ('ev-predict', 'ev-predict-tf', 'ev-predict-tiny',
              'ev-predict-2workers'):
    if v.get(key, {}).get('job_marginal_img_s'):
      print(f'  {key}: marginal img/s by its own job clock (no interpreter '
            f'start/exit): {v[key]["job_marginal_img_s"]:.1f}')
  paired = results.get('paired') or {}
  for i, r in enumerate(paired.get('rounds', [])):
    if 'ratio' in r:
      c = r['ceilings']
      print(f'  paired round {i} ({"ceilings first" if r["ceilings_first"] else "ev-predict first"}): '
            f'ev-predict {r["ev_predict"]["marginal_img_s"]:.1f} img/s / '
            f'shared-core {c["shared_core_img_s"]:.1f} (model '
            f'{c["model_img_s"]:.1f} at bs {c["best_batch"]}, decode '
            f'{c["decode_per_core"]["img_s"]:.1f}/core) = {r["ratio"]:.3f}')
    else:
      print(f'  paired round {i}: {r.get("error")}')
  for k, val in results.get('ratios', {}).items():
    print(f'  {k:58} {val:.2f}')


def draw_chart(results: dict, path: Path) -> str:
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
  if not bars:
    return 'nothing to draw'
  title = (f'img/s per variant ({CORES} cores; ceilings and marginal '
           f'rates, sizes {results["sizes"]})')
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
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
  except ImportError:
    pass
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


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv=None) -> int:
  ap = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--sizes', default='200,600',
                  help='two corpus sizes N1,N2 (default 200,600)')
  ap.add_argument('--quick', action='store_true',
                  help='shorter ceiling measurements')
  ap.add_argument('--out', default=str(BENCH / 'results.json'))
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
  ap.add_argument('--only', default='',
                  help='comma list of: ceilings,naive,beam,ev,diagnostics,'
                  'paired,profile,memory (default: everything enabled)')
  ap.add_argument('--_child', help=argparse.SUPPRESS)
  ap.add_argument('--_arg', help=argparse.SUPPRESS)
  ap.add_argument('--_result', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)

  if args._child:    # pylint: disable=protected-access
    result = CHILDREN[args._child](json.loads(args._arg or '{}'))  # pylint: disable=protected-access
    if args._result:  # pylint: disable=protected-access
      Path(args._result).write_text(json.dumps(result, indent=1))  # pylint: disable=protected-access
    return 0

  sizes = sorted(int(s) for s in args.sizes.split(','))
  if len(sizes) != 2 or sizes[0] >= sizes[1] or sizes[0] < 1:
    ap.error('--sizes needs two different positive sizes, e.g. 200,600')
  only = set(filter(None, args.only.split(',')))
  want = (lambda part: part in only) if only else (
      lambda part: not ((part == 'profile' and args.no_profile) or
                        (part == 'diagnostics' and args.no_diagnostics) or
                        (part == 'paired' and not args.rounds) or
                        (part == 'memory' and not args.memory)))
  seconds = 1.5 if args.quick else 5.0
  QUIET['max_wait'] = args.quiet_wait
  t_start = time.time()
  BENCH.mkdir(parents=True, exist_ok=True)
  results = {'sizes': sizes, 'quick': args.quick, 'repeat': args.repeat,
             'machine': machine_info(),
             'load_avg_before': os.getloadavg()[0],
             'started': time.strftime('%Y-%m-%d %H:%M:%S'),
             'ceilings': {}, 'variants': {}}

  manifests = {n: ensure_corpus(n) for n in sizes}
  results['corpus'] = corpus_summary(manifests[sizes[1]])
  model = ensure_model('mobilenetv2')
  results['model'] = json.loads((model / 'bench-stamp.json').read_text())
  small, large = manifests[sizes[0]], manifests[sizes[1]]

  if want('ceilings'):
    log('b. decode ceiling')
    res = run_child(['--_child', 'decode-ceiling', '--_arg', json.dumps(
        {'filelist': small['filelist'], 'seconds': seconds})],
                    'decode-ceiling')
    results['ceilings']['decode'] = d = res.get('result')
    for backend, key in (('tensorflow', 'model'),
                         ('openvino', 'model_openvino')):
      log(f'a. model ceiling ({backend})')
      res = run_child(['--_child', 'model-ceiling', '--_arg', json.dumps(
          {'model': str(model), 'filelist': small['filelist'],
           'seconds': seconds, 'backend': backend})],
                      f'model-ceiling-{backend}',
                      env_extra={'EV_PREDICT_CACHE': str(EV_CACHE)})
      m = res.get('result')
      if not m:
        results['ceilings'][key] = {'error': f'failed; see {res["log"]}'}
        continue
      # JSON made the batch sizes strings
      m['by_batch'] = {int(k): val for k, val in m['by_batch'].items()}
      results['ceilings'][key] = m
      if d:
        per_core = d['per_core']['img_s']
        suffix = '' if backend == 'tensorflow' else '_openvino'
        c = results['ceilings']
        c['shared_core_img_s' + suffix] = 1 / (
            1 / m['img_s'] + 1 / (CORES * per_core))
        c['shared_core_img_s_ev_batch' + suffix] = 1 / (
            1 / m['img_s_ev_batch'] + 1 / (CORES * per_core))
        # The same from CPU time, which other processes' load barely moves:
        # CPU-ms one image needs at least (model at ev-predict's batch +
        # decode).
        floor = m['by_batch'][EV_BATCH]['cpu_ms_per_img'] + \
            d['per_core']['cpu_ms_per_img']
        c['cpu_floor_ms_per_img' + suffix] = floor
        c['cpu_shared_core_img_s' + suffix] = CORES * 1000 / floor

  plan = [('naive', 'naive', (), '', model),
          ('beam-example', 'beam', (), '', model),
          ('beam-example-ov', 'beam', (), '', model),
          ('ev-predict', 'ev', (), '', model),
          ('ev-predict-tf', 'diagnostics', ('-Dbackend=tensorflow',), '-tf',
           model),
          ('ev-predict-tiny', 'diagnostics', (), '-tiny', 'tiny'),
          ('ev-predict-2workers', 'diagnostics', ('-Dnum_worker=2',),
           '-2workers', model)]
  for key, part, extra, tag, mdl in plan:
    if not want(part):
      continue
    if mdl == 'tiny':
      mdl = ensure_model('tiny')
    try:
      if key.startswith('ev-predict') and str(mdl) not in WARMED:
        # The first run on a machine converts the model for OpenVINO into
        # ev-predict's model cache; measure that once, apart.
        WARMED.add(str(mdl))
        log(f'warm-up: ev-predict on 8 images with {mdl.name}')
        warm = run_warmup(mdl, small)
        results.setdefault('warmup', {})[mdl.name] = warm
      log(f'{key}: sizes {sizes}')
      variant = 'ev-predict' if key.startswith('ev-predict') else key
      runs = [run_variant(variant, n, manifests[n], mdl, args.repeat, extra,
                          tag) for n in sizes]
      results['variants'][key] = marginal(runs)
    except VariantFailed as e:
      log(f'{key} failed: {e}')
      results['variants'][key] = {'error': str(e)}

  if want('paired'):
    paired_sizes = sorted(int(x) for x in args.paired_sizes.split(',')) \
        if args.paired_sizes else sizes
    for n in paired_sizes:
      if n not in manifests:
        manifests[n] = ensure_corpus(n)
    results['paired'] = paired_rounds(args.rounds, manifests, paired_sizes,
                                      model, results,
                                      1.0 if args.quick else 3.0)
  results['ratios'] = compute_ratios(results)

  if want('profile'):
    log(f'profile: ev-predict on {sizes[1]} images under py-spy')
    results['profile'] = profile_ev_predict(large, model)
  if want('memory'):
    lines = sorted(int(s) for s in args.memory_lines.split(','))
    log(f'memory: ev-predict on {lines} lines')
    results['memory'] = memory_check(
        small, model, lines, (200, 1000) if args.quick else (200, 3000))

  results['load_avg_after'] = os.getloadavg()[0]
  results['quiet_wait_total_s'] = QUIET['waited_s']
  results['bench_runtime_s'] = time.time() - t_start
  chart = BENCH / 'throughput.png'
  results['chart'] = str(chart)
  results['chart_backend'] = draw_chart(results, chart)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1, default=str))
  print()
  print_table(results)
  print(f'\ncorpus: {results["corpus"]["n"]} JPEGs, '
        f'{results["corpus"]["kb_min"]}-{results["corpus"]["kb_max"]} KB; '
        f'load avg {results["load_avg_before"]:.2f} -> '
        f'{results["load_avg_after"]:.2f}; benchmark took '
        f'{results["bench_runtime_s"]:.0f} s')
  print(f'results: {out}; chart: {chart} ({results["chart_backend"]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
