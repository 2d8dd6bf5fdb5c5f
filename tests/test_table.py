"""Table mode's two ends (transforms/table.py): the list a table becomes,
and the output and error tables zipped back from the job's files, typed as
the input, every row in exactly one of them."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from ev_predict.transforms import read, table
from ev_predict.transforms.format import Formatter
from ev_predict.transforms.record import BAD_LINE, NOT_FOUND


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
