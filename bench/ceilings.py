"""The ceilings (a-c in bench.run's docstring): the model alone on
pre-decoded batches, fetch + decode alone, and the shared-core ceiling they
imply. The child_* functions run in child processes (bench.child)."""
import time
from pathlib import Path

from bench import harness
from bench.config import BATCH_SIZES, CORES, EV_BATCH, IMAGE, log


def measure(ctx, config, results: dict, small: dict, model: Path) -> None:
  """a/b/c into results['ceilings']: the decode ceiling, the model ceiling
  per backend, and from both the shared-core ceilings (wall clock and CPU
  time)."""
  seconds = config.ceiling_seconds
  log('b. decode ceiling')
  res = harness.run_child(ctx, 'decode-ceiling', {
      'filelist': small['filelist'], 'seconds': seconds}, 'decode-ceiling')
  results['ceilings']['decode'] = d = res.get('result')
  for backend, key in (('tensorflow', 'model'),
                       ('openvino', 'model_openvino')):
    log(f'a. model ceiling ({backend})')
    res = harness.run_child(ctx, 'model-ceiling', {
        'model': str(model), 'filelist': small['filelist'],
        'seconds': seconds, 'backend': backend}, f'model-ceiling-{backend}')
    m = res.get('result')
    if not m:
      results['ceilings'][key] = {'error': f'failed; see {res["log"]}'}
      continue
    # JSON made the batch sizes strings
    m['by_batch'] = {int(k): val for k, val in m['by_batch'].items()}
    results['ceilings'][key] = m
    if d:
      shared_core(results['ceilings'], m, d,
                  '' if backend == 'tensorflow' else '_openvino')


def shared_core(c: dict, m: dict, d: dict, suffix: str) -> None:
  """c. 1 / (1/model + 1/(cores x decode per core)), at the best batch and
  at ev-predict's, and the same from CPU time."""
  per_core = d['per_core']['img_s']
  c['shared_core_img_s' + suffix] = 1 / (
      1 / m['img_s'] + 1 / (CORES * per_core))
  c['shared_core_img_s_ev_batch' + suffix] = 1 / (
      1 / m['img_s_ev_batch'] + 1 / (CORES * per_core))
  # The same from CPU time, which other processes' load barely moves:
  # CPU-ms one image needs at least (model at ev-predict's batch + decode).
  floor = m['by_batch'][EV_BATCH]['cpu_ms_per_img'] + \
      d['per_core']['cpu_ms_per_img']
  c['cpu_floor_ms_per_img' + suffix] = floor
  c['cpu_shared_core_img_s' + suffix] = CORES * 1000 / floor


# --- in the children -------------------------------------------------------

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
    r = harness.windows(lambda b=batch: call(b), bs, arg['seconds'])
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


def child_round_ceilings(arg: dict) -> dict:
  """One paired round's ceilings, back to back in one process: fetch +
  decode on one thread (per core), then the model at each batch size; each
  a mean rate over one window."""
  records, fetch_decode = _fetch_decode(arg['filelist'])
  decode = harness.mean_rate(_eight_at_a_time(fetch_decode, records), 8,
                             arg['seconds'])
  info, call = _model_call(arg)
  by_batch = {}
  for bs, batch in _batches(arg['filelist']).items():
    for _ in range(2):
      call(batch)
    by_batch[bs] = harness.mean_rate(lambda b=batch: call(b), bs,
                                     arg['seconds'])
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
    return harness.windows(_eight_at_a_time(fn, records), 8, arg['seconds'])

  def rate_threads(fn, threads):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      chunk = (records * (1 + 16 * threads // len(records)))[:16 * threads]
      list(pool.map(fn, chunk[:threads * 2]))           # warm threads
      r = harness.windows(lambda: list(pool.map(fn, chunk)), len(chunk),
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
  calls, wall, _, _ = harness.timed_loop(lambda: formatter(done),
                                         min(1.0, arg['seconds']),
                                         min_calls=50)
  out['format_line_ms'] = 1000 * wall / calls
  out['line_bytes'] = len(formatter(done)[1])
  import PIL  # pylint: disable=import-outside-toplevel
  out['pillow_version'] = PIL.__version__
  return out


# --- second wave (bench.wave2): the minimal work, alone and at once ---------

def _corpus_bytes(filelist: str, limit: int = 400):
  paths = [p for p in Path(filelist).read_text().split('\n') if p][:limit]
  return paths, [Path(p).read_bytes() for p in paths]


def child_minimal_decode(arg: dict) -> dict:
  """The minimal reference decode (bench.peers.minimal_decode: open, draft,
  RGB, bilinear resize) on one thread and on one thread per core, beside
  ev-predict's own fetch + decode on one thread (what its ceiling used to
  be): mean rates over one window each."""
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  from bench.peers import minimal_decode  # pylint: disable=import-outside-toplevel
  paths, _ = _corpus_bytes(arg['filelist'])   # page cache warm
  seconds = arg['seconds']
  out = {}
  out['minimal_per_core'] = harness.mean_rate(
      _eight_at_a_time(minimal_decode, paths), 8, seconds)
  with concurrent.futures.ThreadPoolExecutor(CORES) as pool:
    chunk = (paths * (1 + 8 * CORES // len(paths)))[:8 * CORES]
    list(pool.map(minimal_decode, chunk))
    out['minimal_all_cores'] = harness.mean_rate(
        lambda: list(pool.map(minimal_decode, chunk)), len(chunk), seconds)
  records, fetch_decode = _fetch_decode(arg['filelist'])
  out['ev_predict_decode_per_core'] = harness.mean_rate(
      _eight_at_a_time(fetch_decode, records), 8, seconds)
  return out


def child_loop(arg: dict) -> dict:
  """One side of the interference ceiling: the model at its best batch, or
  the minimal decode on `threads` threads, free-running from start_at for
  seconds, in its own process while the other side runs in another."""
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  if arg['side'] == 'model':
    _, call = _model_call(arg)
    batch = np.ascontiguousarray(_batches(arg['filelist'])[arg['batch']])
    call(batch)
    step, per_call = (lambda: call(batch)), arg['batch']
    pool = None
  else:
    from bench.peers import minimal_decode  # pylint: disable=import-outside-toplevel
    threads = arg.get('threads', CORES)
    paths, _ = _corpus_bytes(arg['filelist'])
    pool = concurrent.futures.ThreadPoolExecutor(threads)
    chunk = (paths * (1 + 4 * threads // len(paths)))[:4 * threads]
    list(pool.map(minimal_decode, chunk))
    step, per_call = (lambda: list(pool.map(minimal_decode, chunk))), \
        len(chunk)
  while time.time() < arg['start_at']:
    time.sleep(0.005)
  result = harness.mean_rate(step, per_call, arg['seconds'])
  if pool:
    pool.shutdown()
  return result
