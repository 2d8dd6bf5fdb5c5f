"""Table mode (issue #13) on long tables: is the launcher's memory flat in
the number of rows, and what does a table cost over the same lines as a
file list?

    .venv/bin/python -m bench.table [--rows 10000,100000,1000000]
        [--real 0.01] [--out bench/results/table.json]

Each job is ev-predict's console script in a fresh process (this checkout's
code, bench.resume.engine_env), with the tiny model and -Dmax_error_ratio=1.
A table has typed reserved columns (int64 id, a string, a float32) and an
image column: --real of its rows name real images (64 noise JPEGs), the others
missing files (cheap not_found records), so the job's own work is small and
what a table adds (the list made from it, the tables zipped back) shows.

Reported per size: wall and CPU time, the launcher's peak RSS (os.wait4's
ru_maxrss and its VmHWM), the process tree's peak, the rows in each table
and whether every row is in exactly one; and, right after each, the same
lines as a file-list job: the table job's wall time over it, and both
launchers' memory growth from the smallest size to the largest.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import models, resume
from bench.config import ROOT, WORK, Context, log


def write_table(path: Path, n: int, real_paths, share: float) -> Path:
  """n rows, rewritten only when they would change (the resume key holds
  the table's mtime)."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  stamp = path.with_suffix('.stamp')
  want = json.dumps([n, share, list(real_paths[:3]), len(real_paths)])
  if path.exists() and stamp.exists() and stamp.read_text() == want:
    return path
  step = max(1, round(1 / share)) if share else 0
  writer = None
  for start in range(0, n, 100_000):
    ids = range(start, min(n, start + 100_000))
    urls = [real_paths[(i // step) % len(real_paths)]
            if step and i % step == 0 else
            resume.MISSING.format(i).rstrip('\n') for i in ids]
    batch = pa.table({
        'id': pa.array(ids, pa.int64()),
        'note': pa.array([f'row {i}' for i in ids], pa.string()),
        'weight': pa.array([i / 8 for i in ids], pa.float32()),
        'url': pa.array(urls, pa.string())})
    if writer is None:
      writer = pq.ParquetWriter(path, batch.schema)
    writer.write_table(batch, row_group_size=16_384)
  writer.close()
  stamp.write_text(want)
  return path


def table_cmd(model: Path, table: Path, output: Path):
  return [str(resume.BIN / 'ev-predict'), f'-Dmodel_path={model}',
          f'-Dinput_table={table}', f'-Doutput_table={output}',
          '-Dimage_col=url', '-Dreserved_columns=id,note,weight',
          '-Dmax_error_ratio=1']


def _images(folder: Path, n: int):
  """n 320x240 JPEGs of noise (what they show does not matter here)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for i in range(n):
    path = folder / f'noise-{i:03d}.jpg'
    if not path.exists():
      pixels = np.random.default_rng(i).integers(0, 256, (240, 320, 3),
                                                  np.uint8)
      Image.fromarray(pixels).save(path, quality=85)
    paths.append(str(path))
  return paths


def _rows(path: Path) -> int:
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  return pq.ParquetFile(path).metadata.num_rows if path.exists() else -1


def measure(ctx, sizes, share: float) -> dict:
  env = resume.engine_env(ctx, 'table', ROOT)
  model = models.ensure_model(ctx, 'tiny')
  folder = ctx.work / 'table'
  folder.mkdir(parents=True, exist_ok=True)
  real = _images(folder / 'images', 64)
  out = {'model': model.name, 'real_share': share, 'tables': {}}
  for n in sizes:
    table = write_table(folder / f'rows-{n}.parquet', n, real, share)
    run_dir = resume.fresh_folder(folder / f'job-{n}')
    output = run_dir / 'out.parquet'
    res = resume.job(ctx, f'table-{n}', table_cmd(model, table, output), env)
    s = resume.summary_of(output)
    row = resume.brief(res, s)
    ok, bad = _rows(output), _rows(run_dir / 'out.errors.parquet')
    row.update(result_rows=ok, error_rows=bad,
               every_row_once=ok + bad == n and bool(s.get('accounting_ok')),
               table_bytes=table.stat().st_size)
    out['tables'][n] = row
    log(f'table {n} rows: {res["wall_s"]:.1f} s, launcher '
        f'{res["peak_rss_mb"]:.0f} MB, tree {res["peak_tree_mb"]:.0f} MB, '
        f'{ok} + {bad} rows')
    # The same lines as a file list, right after: what a table adds.
    listing = folder / f'rows-{n}.txt'
    _as_list(table, listing)
    list_dir = resume.fresh_folder(folder / f'list-{n}')
    res = resume.job(ctx, f'table-as-list-{n}', resume.ev_cmd(
        model, listing, list_dir / 'out.txt', ['-Dmax_error_ratio=1']), env)
    row['as_list'] = resume.brief(res, resume.summary_of(list_dir / 'out.txt'))
    row['table_over_list_wall'] = row['wall_s'] / res['wall_s']
    log(f'  as a list: {res["wall_s"]:.1f} s, launcher '
        f'{res["peak_rss_mb"]:.0f} MB; table/list wall '
        f'{row["table_over_list_wall"]:.2f}')
  lo, hi = min(sizes), max(sizes)
  a, b = out['tables'][lo], out['tables'][hi]
  for key in ('peak_rss_mb', 'peak_tree_mb'):
    out[f'{key}_growth'] = b[key] - a[key]
    out[f'{key}_bytes_per_extra_row'] = (b[key] - a[key]) * 2**20 / (hi - lo)
    out[f'list_{key}_growth'] = b['as_list'][key] - a['as_list'][key]
  return out


def _as_list(table: Path, listing: Path) -> None:
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  if listing.exists() and listing.stat().st_mtime > table.stat().st_mtime:
    return
  with open(listing, 'w') as f:
    for batch in pq.ParquetFile(table).iter_batches(columns=['url']):
      f.write(''.join(u + '\n' for u in batch.column(0).to_pylist()))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m bench.table',
                               description=__doc__.split('\n\n')[0])
  ap.add_argument('--rows', default='10000,100000,1000000')
  ap.add_argument('--real', type=float, default=0.01)
  ap.add_argument('--out', default=str(WORK / 'table.json'))
  args = ap.parse_args(argv)
  sizes = sorted(int(x) for x in args.rows.split(',') if x)
  ctx = Context()
  ctx.work.mkdir(parents=True, exist_ok=True)
  from bench import report  # pylint: disable=import-outside-toplevel
  results = {'machine': report.machine_info(),
             'started': time.strftime('%Y-%m-%d %H:%M:%S'),
             'load_avg_before': os.getloadavg()[0],
             'table': measure(ctx, sizes, args.real),
             'load_avg_after': os.getloadavg()[0]}
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1, default=str))
  print(f'results: {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
