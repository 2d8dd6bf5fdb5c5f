"""Does storage latency cost throughput? ev-predict over the local OSS server
with 0 and 20 ms added to every request, marginal throughput from two list
sizes (so start-up cost cancels out).

    .venv/bin/python -m bench.oss_latency [--sizes 200,600] [--latency 0.02]

(from the repository root: it uses the test suite's fake OSS server).

Images are ~500x375 JPEG crops of scikit-image's sample photographs; the model
is a tiny one so that fetching, not inference, is what could limit the run.
Each setting gets its own OSS server in a separate process, as the real
service would be: a server inside the pipeline's process would compete with
it for the GIL and measure itself rather than the pipeline.
"""
import argparse
import io
import json
import multiprocessing
import os
import tempfile
import time

import numpy as np
from PIL import Image

from tests import models
from tests.fakes.oss_server import OssServer

ID, SECRET = 'bench-id', 'bench-secret'


def photos(count, seed=0):
  import skimage.data  # pylint: disable=import-outside-toplevel
  sources = [skimage.data.astronaut(), skimage.data.coffee(),
             skimage.data.chelsea(), skimage.data.rocket()]
  rng = np.random.default_rng(seed)
  for i in range(count):
    src = Image.fromarray(sources[i % len(sources)])
    w, h = src.size
    cw, ch = int(w * rng.uniform(0.6, 1)), int(h * rng.uniform(0.6, 1))
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    img = src.crop((x, y, x + cw, y + ch)).resize((500, 375))
    if rng.random() < 0.5:
      img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    img.save(buf, 'JPEG', quality=int(rng.integers(80, 95)))
    yield buf.getvalue()


def _serve(latency, queue):
  with OssServer(credentials={ID: SECRET},
                 buckets=('data', 'models', 'out')) as server:
    server.latency = latency
    queue.put(server.endpoint)
    queue.get()  # until told to stop


class RemoteServer:
  """An OssServer in a child process; filled over HTTP with oss2."""

  def __init__(self, latency):
    ctx = multiprocessing.get_context('spawn')
    self._queue = ctx.Queue()
    self._proc = ctx.Process(target=_serve, args=(latency, self._queue),
                             daemon=True)
    self._proc.start()
    self.endpoint = self._queue.get(timeout=60)

  def put(self, bucket, key, data):
    import oss2  # pylint: disable=import-outside-toplevel
    oss2.Bucket(oss2.Auth(ID, SECRET), self.endpoint, bucket).put_object(
        key, data)

  def stop(self):
    self._queue.put('stop')
    self._proc.join(10)


def fill(server, images, sizes, model_dir):
  for i, data in enumerate(images):
    server.put('data', f'img/{i:06d}.jpg', data)
  for n in sizes:
    server.put('data', f'list-{n}.txt', ''.join(
        f'oss://data/img/{i:06d}.jpg\n' for i in range(n)).encode())
  for root, _, files in os.walk(model_dir):
    for f in files:
      full = os.path.join(root, f)
      with open(full, 'rb') as fh:
        server.put('models', f'm/{os.path.relpath(full, model_dir)}',
                   fh.read())


def run_job(server, name, size):
  from ev_predict.pipeline import launcher  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  summary = launcher.run([
      '-Dmodel_path=oss://models/m', f'-Dinput_oss_file=oss://data/list-{size}.txt',
      f'-Doutput_oss_file=oss://out/{name}/result.txt',
      f'-DossHost={server.endpoint}', '-Dmax_error_ratio=0'])
  assert summary['succeeded'] == size, summary
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--sizes', default='200,600')
  parser.add_argument('--latency', type=float, default=0.02)
  parser.add_argument('--out', default='build/bench/oss_latency.json')
  args = parser.parse_args()
  n1, n2 = (int(s) for s in args.sizes.split(','))
  os.environ.update(OSS_ACCESS_KEY_ID=ID, OSS_ACCESS_KEY_SECRET=SECRET,
                    EV_PREDICT_CACHE=tempfile.mkdtemp())
  images = list(photos(n2))
  servers = {0.0: RemoteServer(0.0), args.latency: RemoteServer(args.latency)}
  try:
    with tempfile.TemporaryDirectory() as tmp:
      model_dir = models.save_uint8_model(os.path.join(tmp, 'm'),
                                          labels=models.LABELS)
      for server in servers.values():
        fill(server, images, (n1, n2), model_dir)
    for server in servers.values():
      run_job(server, 'warm', n1)   # model cache, imports
    times = {}
    # Interleave the runs so drift in machine load hits both settings.
    for latency in (0.0, args.latency, 0.0, args.latency):
      for n in (n1, n2):
        times.setdefault((latency, n), []).append(
            run_job(servers[latency], f'l{latency}-{n}-{time.time()}', n))
  finally:
    for server in servers.values():
      server.stop()
  result = {}
  for latency in (0.0, args.latency):
    t1, t2 = min(times[(latency, n1)]), min(times[(latency, n2)])
    result[f'{latency * 1000:.0f}ms'] = {
        'marginal_img_per_s': round((n2 - n1) / (t2 - t1), 1),
        'startup_s': round(t1 - n1 * (t2 - t1) / (n2 - n1), 2),
        f'wall_{n1}': round(t1, 2), f'wall_{n2}': round(t2, 2)}
  base = result['0ms']['marginal_img_per_s']
  slow = result[f'{args.latency * 1000:.0f}ms']['marginal_img_per_s']
  result['ratio'] = round(slow / base, 3)
  result['image_kb_mean'] = round(np.mean([len(d) for d in images]) / 1024, 1)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
