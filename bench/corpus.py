"""The benchmark's corpus: N JPEG photos made from scikit-image's colour
samples (see bench.run's docstring), a file list and a manifest, cached
under build/bench/corpus-<N>/."""
import io
import json
import os
import shutil
import time

from bench.config import log

CORPUS_VERSION = 3
CORPUS_SEED = 20240611
SOURCES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field',
           'immunohistochemistry', 'retina', 'stereo_motorcycle')
MIN_KB, MAX_KB = 40, 120


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


def ensure_corpus(ctx, n: int) -> dict:
  """build/bench/corpus-<n>/ with n photos, filelist.txt and manifest.json."""
  folder = ctx.work / f'corpus-{n}'
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
  for other in ctx.work.glob('corpus-*/manifest.json'):
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


PHONE_VERSION = 1
PHONE_SIZE = (4032, 3024)
PHONE_MB = (2.0, 4.0)


def _make_phone_photo(i: int, sources) -> tuple:
  """Phone photo i: a 4032x3024 (or portrait) JPEG of 2-4 MB, made by
  upscaling a crop of a sample photograph, with sensor noise and the
  quality a phone uses (the noise is what makes phone JPEGs that big)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng([CORPUS_SEED, 4032, i])
  name = SOURCES[int(rng.integers(len(SOURCES)))]
  src = sources[name]
  width, height = PHONE_SIZE if rng.random() < 0.75 else PHONE_SIZE[::-1]
  sh, sw = src.shape[:2]
  ratio = width / height
  cw, ch = (sw, sw / ratio) if sw / ratio <= sh else (sh * ratio, sh)
  frac = rng.uniform(0.6, 1.0)
  cw, ch = max(32, int(cw * frac)), max(32, int(ch * frac))
  x0 = int(rng.integers(0, sw - cw + 1))
  y0 = int(rng.integers(0, sh - ch + 1))
  img = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw]).resize(
      (width, height), Image.Resampling.BICUBIC)
  base = np.asarray(img, dtype=np.int16)
  sigma = rng.uniform(2.0, 4.0)
  for _ in range(5):
    noise = rng.normal(0, sigma, (height // 2, width // 2, 3)).astype(np.int16)
    noisy = base + noise.repeat(2, 0).repeat(2, 1)
    pix = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    pix.save(buf, 'JPEG', quality=92, subsampling=2)
    size = len(buf.getvalue())
    if size < PHONE_MB[0] * 2**20:
      sigma *= 1.6
    elif size > PHONE_MB[1] * 2**20:
      sigma /= 1.5
    else:
      break
  return buf.getvalue(), {'source': name, 'width': width, 'height': height,
                          'mb': round(size / 2**20, 2)}


def ensure_phone_corpus(ctx, n: int) -> dict:
  """build/bench/phone-<n>/: n phone photos (4032x3024, 2-4 MB), where
  decoding is most of the work."""
  folder = ctx.work / f'phone-{n}'
  manifest_path = folder / 'manifest.json'
  if manifest_path.exists():
    manifest = json.loads(manifest_path.read_text())
    if manifest.get('version') == PHONE_VERSION and manifest['n'] == n:
      return manifest
  log(f'generating {n} phone photos in {folder}')
  started = time.time()
  if folder.exists():
    shutil.rmtree(folder)
  folder.mkdir(parents=True)
  donors = [p.parent for p in ctx.work.glob('phone-*/manifest.json')
            if json.loads(p.read_text()).get('version') == PHONE_VERSION]
  sources, images = None, []
  for i in range(n):
    target = folder / f'phone-{i:05d}.jpg'
    donor = next((d for d in donors if (d / target.name).exists()), None)
    if donor is not None:
      os.link(donor / target.name, target)
      images.append(next(im for im in json.loads(
          (donor / 'manifest.json').read_text())['images'] if im['i'] == i))
      continue
    if sources is None:
      sources = _load_sources()
    data, info = _make_phone_photo(i, sources)
    target.write_bytes(data)
    images.append(dict(info, i=i))
  (folder / 'filelist.txt').write_text(
      ''.join(f'{folder / f"phone-{i:05d}.jpg"}\n' for i in range(n)))
  mbs = sorted(im['mb'] for im in images)
  manifest = {'version': PHONE_VERSION, 'n': n, 'folder': str(folder),
              'filelist': str(folder / 'filelist.txt'),
              'mb_min': mbs[0], 'mb_median': mbs[len(mbs) // 2],
              'mb_max': mbs[-1], 'total_mb': round(sum(mbs), 1),
              'generated_seconds': round(time.time() - started, 1),
              'images': images}
  manifest_path.write_text(json.dumps(manifest, indent=1))
  log(f'phone-{n}: {manifest["total_mb"]} MB, {mbs[0]}-{mbs[-1]} MB each')
  return manifest
