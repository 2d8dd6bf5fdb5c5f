"""Table mode's two ends (transforms/table.py): the list a table becomes,
and the output and error tables zipped back from the job's files, typed as
the input, every row in exactly one of them."""
import base64
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from ev_predict.pipeline import cli, launcher
from ev_predict.transforms import merge, read, table
from ev_predict.transforms.format import Formatter
from ev_predict.transforms.record import BAD_LINE, NOT_FOUND
from tests import models
from tests.conftest import write_image
from tests.helpers import read_lines, split_output_line
from tests.test_pipeline import expected_probs


def _input(tmp_path, n=10_000, kind='parquet'):
  ids = pa.array(range(n), pa.int64())
  urls = pa.array([None if i % 97 == 5 else f'/img/{i}.jpg' for i in range(n)])
  score = pa.array([i / 7 for i in range(n)], pa.float32())
  t = pa.table({'id': ids, 'url': urls, 'score': score})
  path = tmp_path / f'in.{kind}'
  if kind == 'parquet':
    pq.write_table(t, path, row_group_size=1000)
  else:
    pcsv.write_csv(t, path)
  return str(path), t


def _fake_job(listing, results, errors):
  """What the job writes for the list: rows divisible by 3 fail."""
  fmt = Formatter(['a', 'b'])
  with open(listing, 'rb') as f, open(results, 'wb') as ok, \
      open(errors, 'wb') as err:
    for line in f:
      record = read.parse_line(line)
      row = json.loads(record.line)['row']
      if record.ok and row % 3:
        record = record.but(probs=np.array([0.25, 0.75], np.float32))
      elif record.ok:
        record = record.fail(NOT_FOUND, f'gone {row}')
      kind, text = fmt(record)
      (ok if kind == 'ok' else err).write(text + b'\n')


@pytest.mark.parametrize('kind', ['parquet', 'csv'])
def test_a_table_round_trip_keeps_types_and_every_row(tmp_path, kind):
  path, source = _input(tmp_path, kind=kind)
  files = table.table_files(path)
  kept = table.check(files, 'url', ['id', 'score'], 'url')
  listing = tmp_path / 'list.jsonl'
  assert table.export_list(files, 'url', 'url', str(listing)) == 10_000
  _fake_job(listing, tmp_path / 'r.txt', tmp_path / 'e.txt')
  out, bad = tmp_path / f'out.{kind}', tmp_path / f'out.errors.{kind}'
  counts = table.write_tables(files, 'url', ['id', 'score'], kept, 'result',
                              str(tmp_path / 'r.txt'), str(tmp_path / 'e.txt'),
                              str(out), str(bad))
  read_back = (pq.read_table if kind == 'parquet' else pcsv.read_csv)
  ok, err = read_back(str(out)), read_back(str(bad))
  assert counts == (ok.num_rows, err.num_rows)
  assert ok.num_rows + err.num_rows == 10_000
  if kind == 'parquet':
    assert ok.schema.field('id').type == pa.int64()
    assert ok.schema.field('score').type == pa.float32()
  ids = sorted(ok.column('id').to_pylist() + err.column('id').to_pylist())
  assert ids == list(range(10_000))
  for i, result in zip(ok.column('id').to_pylist()[:50],
                       ok.column('result').to_pylist()):
    assert i % 3 and i % 97 != 5
    assert json.loads(result)['class_name'] == 'b'
  errors = dict(zip(err.column('id').to_pylist(),
                    zip(err.column('error').to_pylist(),
                        err.column('message').to_pylist())))
  assert errors[5] == (BAD_LINE, 'the image cell is empty')
  assert errors[3] == (NOT_FOUND, 'gone 3')
  scores = dict(zip(ok.column('id').to_pylist(),
                    ok.column('score').to_pylist()))
  assert scores[1] == pytest.approx(source.column('score')[1].as_py())


def test_a_table_changed_during_the_job_pairs_no_row_with_another(tmp_path):
  """The same number of rows, two swapped: refused, nothing kept (a
  result is never attached to another row's image)."""
  path, source = _input(tmp_path, n=50)
  files = table.table_files(path)
  kept = table.check(files, 'url', ['id'], 'url')
  listing = tmp_path / 'list.jsonl'
  table.export_list(files, 'url', 'url', str(listing))
  _fake_job(listing, tmp_path / 'r.txt', tmp_path / 'e.txt')
  order = list(range(50))
  order[20], order[21] = 21, 20
  pq.write_table(source.take(order), path)
  with pytest.raises(table.TableError, match=f'row 20 of {path} is not the '
                     'row the job classified: the table changed during the '
                     'job'):
    table.write_tables(files, 'url', ['id'], kept, 'result',
                       str(tmp_path / 'r.txt'), str(tmp_path / 'e.txt'),
                       str(tmp_path / 'o.parquet'),
                       str(tmp_path / 'o.errors.parquet'))


def test_schema_problems_are_one_line(tmp_path):
  path, _ = _input(tmp_path, n=10)
  files = table.table_files(path)
  with pytest.raises(table.TableError, match='has no column picture'):
    table.check(files, 'picture', [], 'url')
  with pytest.raises(table.TableError, match='-Dimage_col=id is int64'):
    table.check(files, 'id', [], 'url')
  with pytest.raises(table.TableError, match='MaxCompute is not reachable'):
    table.table_files('odps://project/tables/images')
  with pytest.raises(table.TableError, match='no table file matches'):
    table.table_files(str(tmp_path / 'none-*.parquet'))


def test_binary_cells_are_image_bytes():
  line = table.list_line(7, b'\x89PNG...', 'url')
  record = read.parse_line(line)
  assert record.ok and record.data == b'\x89PNG...'
  assert json.loads(line)['row'] == 7


# ------------------------------------------------------------ real jobs


def _images(tmp_path, n):
  """n small images of their own pixels, as files and as bytes."""
  paths = [write_image(tmp_path / f't{i}.png', 700 + i, size=(20 + i % 9, 16))
           for i in range(n)]
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  return paths


def _rows(tmp_path, n=45):
  """A table of n rows: typed reserved columns, and an image column with
  a missing file, a broken image and an empty cell among the images."""
  paths = _images(tmp_path, n)
  urls = list(paths)
  urls[4] = str(tmp_path / 'gone.png')
  urls[9] = str(tmp_path / 'broken.png')
  urls[7] = None
  urls[10] = '   '
  return pa.table({
      'id': pa.array([1000 + i for i in range(n)], pa.int64()),
      'url': pa.array(urls, pa.string()),
      'weight': pa.array([i / 4 for i in range(n)], pa.float32()),
      'flag': pa.array([i % 2 == 0 for i in range(n)], pa.bool_()),
  })


def _list_job(tmp_path, urls, model, *extra):
  """The same images as a file-list job: its JSON per line, in order."""
  listing = tmp_path / 'as-list.txt'
  listing.write_text(''.join(u + '\n' for u in urls))
  out = tmp_path / 'as-list' / 'result.txt'
  launcher.run([f'-Dmodel_path={model}', f'-Dinput_oss_file={listing}',
                f'-Doutput_oss_file={out}', '-Dmax_error_ratio=1',
                '-Dbatch_size=4', *extra])
  return {split_output_line(l)[0].decode(): merge.split_output_line(l)[1]
          for l in read_lines(out)}


def _table_argv(model, table_in, table_out, *extra):
  return [f'-Dmodel_path={model}', f'-Dinput_table={table_in}',
          f'-Doutput_table={table_out}', '-Dimage_col=url',
          '-Dreserved_columns=id,weight,flag', '-Dmax_error_ratio=1',
          '-Dbatch_size=4', *extra]


def test_a_parquet_table_job_row_by_row(tmp_path, model_dirs):
  """A Parquet table in, Parquet tables out: each row that succeeded
  carries, as its result column, the very JSON a file-list job writes for
  its image (same batches, same bits), with its reserved columns typed as
  the input's; each that failed is in the error table with its kind; rows
  in input order, every row in exactly one table."""
  source = _rows(tmp_path)
  pq.write_table(source, tmp_path / 'in.parquet', row_group_size=8)
  out = tmp_path / 'out' / 'scored.parquet'
  summary = launcher.run(_table_argv(model_dirs['uint8'],
                                     tmp_path / 'in.parquet', out))
  ok = pq.read_table(out)
  bad = pq.read_table(tmp_path / 'out' / 'scored.errors.parquet')
  assert ok.schema.names == ['id', 'weight', 'flag', 'result']
  assert [ok.schema.field(c).type for c in ('id', 'weight', 'flag')] == \
      [pa.int64(), pa.float32(), pa.bool_()]
  assert bad.schema.names == ['id', 'weight', 'flag', 'error', 'message']
  failed = {r['id']: (r['error'], r['message']) for r in bad.to_pylist()}
  assert failed == {
      1004: ('not_found', f'no such file: {tmp_path / "gone.png"}'),
      1007: ('bad_line', 'the image cell is empty'),
      1009: ('decode', failed[1009][1]),
      1010: ('bad_line', 'the image cell is empty')}
  assert ok.column('id').to_pylist() == [
      1000 + i for i in range(45) if i not in (4, 7, 9, 10)]
  assert bad.column('id').to_pylist() == [1004, 1007, 1009, 1010]
  urls = source.column('url').to_pylist()
  # A file-list job over the same lines (the empty cells left out: a list
  # has no empty lines) classifies in the same batches only where no line
  # is missing: compare to a list of the same lines, placeholders kept.
  reference = _list_job(tmp_path, [u if u and u.strip() else
                                   str(tmp_path / 'gone.png') for u in urls],
                        model_dirs['uint8'])
  for row in ok.to_pylist():
    i = row['id'] - 1000
    assert row['weight'] == source.column('weight')[i].as_py()
    assert row['flag'] == (i % 2 == 0)
    assert row['result'].encode() == reference[urls[i]], i
    probs = json.loads(row['result'])['class_probs']
    np.testing.assert_allclose(list(probs.values()),
                               expected_probs(model_dirs['uint8'], urls[i]),
                               atol=1e-5)
  assert summary['accounting_ok'] and summary['lines_read'] == 45
  assert (summary['result_rows'], summary['error_rows']) == (41, 4)
  assert summary['output_table'] == str(out)
  assert summary['result_bytes'] == out.stat().st_size
  assert summary['parameters']['input_table'] == str(tmp_path / 'in.parquet')
  assert sorted(os.listdir(out.parent)) == [
      'scored.errors.parquet', 'scored.parquet', 'scored.parquet.report.html',
      'scored.parquet.summary.json']


def test_csv_and_json_lines_tables_and_image_bytes(tmp_path, model_dirs):
  """A CSV in, a JSON-lines table out; a glob of two Parquet files whose
  image column holds the images' bytes, in path order; base64 text cells
  with -Dimage_type=base64. Ints stay ints in each."""
  source = _rows(tmp_path, n=12)
  pcsv.write_csv(source, tmp_path / 'in.csv')
  out = tmp_path / 'csv' / 'scored.jsonl'
  launcher.run(_table_argv(model_dirs['uint8'], tmp_path / 'in.csv', out))
  rows = [json.loads(l) for l in out.read_text().splitlines()]
  assert [r['id'] for r in rows] == [1000 + i for i in range(12)
                                    if i not in (4, 7, 9, 10)]
  assert all(isinstance(r['id'], int) and isinstance(r['flag'], bool)
             for r in rows)
  errors = [json.loads(l) for l in
            (tmp_path / 'csv' / 'scored.errors.jsonl').read_text()
            .splitlines()]
  assert [(e['id'], e['error']) for e in errors] == [
      (1004, 'not_found'), (1007, 'bad_line'), (1009, 'decode'),
      (1010, 'bad_line')]
  by_id = {r['id']: r['result'] for r in rows}

  # The same images as bytes, split over two files matched by a glob.
  blobs = [open(u, 'rb').read() if u and os.path.exists(u) else b''
           for u in source.column('url').to_pylist()]
  binary = source.set_column(1, 'url', pa.array(blobs, pa.binary()))
  pq.write_table(binary.slice(0, 5), tmp_path / 'part-0.parquet')
  pq.write_table(binary.slice(5), tmp_path / 'part-1.parquet')
  out = tmp_path / 'bin' / 'scored.parquet'
  launcher.run(_table_argv(model_dirs['uint8'], tmp_path / 'part-*.parquet',
                           out))
  got = pq.read_table(out).to_pylist()
  assert [r['id'] for r in got] == [1000 + i for i in range(12)
                                    if i not in (4, 7, 9, 10)]
  for r in got:
    assert json.loads(r['result']) == json.loads(by_id[r['id']])
  bad = pq.read_table(tmp_path / 'bin' / 'scored.errors.parquet').to_pylist()
  assert [(e['id'], e['error']) for e in bad] == [
      (1004, 'bad_line'), (1007, 'bad_line'), (1009, 'decode'),
      (1010, 'bad_line')]

  text = source.set_column(1, 'url', pa.array(
      [base64.b64encode(b).decode() for b in blobs], pa.string()))
  pq.write_table(text, tmp_path / 'b64.parquet')
  out = tmp_path / 'b64' / 'scored.csv'
  launcher.run(_table_argv(model_dirs['uint8'], tmp_path / 'b64.parquet',
                           out, '-Dimage_type=base64'))
  got = pcsv.read_csv(out).to_pylist()
  assert [r['id'] for r in got] == [1000 + i for i in range(12)
                                    if i not in (4, 7, 9, 10)]
  for r in got:
    assert json.loads(r['result']) == json.loads(by_id[r['id']])


def test_tables_on_oss(tmp_path, model_dirs, oss_env):
  """Input and output tables on oss:// (the OSS double): read a row group
  at a time through ranged GETs, written through the same uploads as the
  result file."""
  server = oss_env
  source = _rows(tmp_path, n=12)
  urls = []
  for i, url in enumerate(source.column('url').to_pylist()):
    if url and os.path.exists(url):
      with open(url, 'rb') as f:
        server.put('data', f'img/{i}.png', f.read())
      url = f'oss://data/img/{i}.png'
    urls.append(url)
  source = source.set_column(1, 'url', pa.array(urls, pa.string()))
  sink = pa.BufferOutputStream()
  pq.write_table(source, sink, row_group_size=3)
  server.put('data', 'tables/in.parquet', sink.getvalue().to_pybytes())
  summary = launcher.run(_table_argv(
      model_dirs['uint8'], 'oss://data/tables/in.parquet',
      'oss://data/scored/out.parquet', f'-DossHost={server.endpoint}'))
  ok = pq.read_table(pa.BufferReader(server.get('data', 'scored/out.parquet')))
  bad = pq.read_table(pa.BufferReader(
      server.get('data', 'scored/out.errors.parquet')))
  assert ok.column('id').to_pylist() == [1000 + i for i in range(12)
                                         if i not in (4, 7, 9, 10)]
  assert bad.column('error').to_pylist() == ['not_found', 'bad_line',
                                             'decode', 'bad_line']
  assert json.loads(ok.column('result')[0].as_py())['class_name'] in \
      models.LABELS
  assert summary['accounting_ok']
  assert sorted(k for k in server.keys('data') if k.startswith('scored/')) == [
      'scored/out.errors.parquet', 'scored/out.parquet',
      'scored/out.parquet.report.html', 'scored/out.parquet.summary.json']


def _main(argv, capsys):
  code = cli.main(argv)
  err = capsys.readouterr().err
  return code, [l for l in err.splitlines() if l.startswith('ev-predict:')]


def test_table_problems_are_one_line_before_any_work(tmp_path, model_dirs,
                                                     capsys):
  source = _rows(tmp_path, n=12)
  pq.write_table(source, tmp_path / 'in.parquet')
  model = model_dirs['uint8']
  inp, out = tmp_path / 'in.parquet', tmp_path / 'o' / 'out.parquet'
  cases = [
      (_table_argv(model, inp, out, '-Dimage_col=picture'),
       f'{inp} has no column picture (columns: id, url, weight, flag)'),
      (_table_argv(model, inp, out, '-Dimage_col=id'),
       f'{inp}: -Dimage_col=id is int64; it must hold text (url) or image '
       'bytes'),
      (_table_argv(model, inp, out, '-Dreserved_columns=id,nope'),
       f'{inp} has no column nope (columns: id, url, weight, flag)'),
      (_table_argv(model, 'odps://proj/tables/images', out),
       'odps://proj/tables/images: MaxCompute is not reachable from here; '
       'export the table to Parquet (or CSV, JSON lines) and give that path'),
      (_table_argv(model, tmp_path / 'none-*.parquet', out),
       f'no table file matches {tmp_path / "none-*.parquet"}'),
      (_table_argv(model, inp, tmp_path / 'o' / 'out.txt'),
       f'{tmp_path / "o" / "out.txt"}: a table is .parquet, .csv or .jsonl '
       '(got .txt)'),
      (_table_argv(model, tmp_path / '*.parquet', tmp_path / 'out.parquet'),
       f'-Doutput_table={tmp_path / "out.parquet"} matches -Dinput_table='
       f'{tmp_path / "*.parquet"}: a rerun would read it as input; write it '
       'elsewhere'),
      (_table_argv(model, inp, out, '-Dresult_column=id'),
       '-Dresult_column=id must be a name that is not a reserved column'),
      (_table_argv(model, inp, out, '-Dreserved_columns=id,id'),
       '-Dreserved_columns names id twice'),
      (_table_argv(model, inp, out, f'-Dinput_oss_file={inp}'),
       '-Dinput_oss_file does not go with -Dinput_table (a table job writes '
       '-Doutput_table and -Derror_table)'),
      ([f'-Dmodel_path={model}', f'-Dinput_table={inp}'],
       '-Doutput_oss_file (or -Doutput_table) is required'),
      ([f'-Dmodel_path={model}', f'-Dinput_oss_file={inp}',
        f'-Doutput_table={out}'],
       '-Doutput_table goes with -Dinput_table (a file list is written to '
       '-Doutput_oss_file)'),
      ([f'-Dmodel_path={model}'],
       '-Dinput_oss_file (or -Dinput_table) is required; -Doutput_oss_file '
       '(or -Doutput_table) is required'),
  ]
  for argv, message in cases:
    code, said = _main(argv, capsys)
    assert (code, said) == (2, [f'ev-predict: error: {message}']), argv
  assert not (tmp_path / 'o').exists() or not os.listdir(tmp_path / 'o')
  # A cell that does not fit its column, far down a CSV: found while the
  # list is made, before any image is fetched.
  lines = ['id,url'] + [f'{i},{tmp_path}/t0.png' for i in range(200_000)] + \
      ['oops,x']
  (tmp_path / 'bad.csv').write_text('\n'.join(lines) + '\n')
  code, said = _main([f'-Dmodel_path={model}',
                      f'-Dinput_table={tmp_path / "bad.csv"}',
                      f'-Doutput_table={out}', '-Dimage_col=url',
                      '-Dreserved_columns=id'], capsys)
  said = [l for l in said if ': error: ' in l]
  assert code == 2 and len(said) == 1, said
  assert said[0].startswith(f'ev-predict: error: cannot read the table '
                            f'{tmp_path / "bad.csv"}: ArrowInvalid: '), said
  assert not out.exists()


def test_retry_refuses_a_table_job(tmp_path, model_dirs, capsys):
  source = _rows(tmp_path, n=12)
  pq.write_table(source, tmp_path / 'in.parquet')
  out = tmp_path / 'o' / 'out.parquet'
  launcher.run(_table_argv(model_dirs['uint8'], tmp_path / 'in.parquet', out))
  capsys.readouterr()
  code, said = _main(['retry', str(out)], capsys)
  assert (code, said) == (2, [
      f'ev-predict: error: {out} is a table job\'s output; `ev-predict retry` '
      'reruns file-list jobs only: rerun the table job (its failed rows are '
      'in -Derror_table)'])
