"""Table input and output (PAI's table mode, on open formats): Parquet, CSV
and JSON lines on any Beam file system, streamed a record batch at a time.

A table job is a file-list job in disguise, so resume, order and the
exactly-once accounting are the list's:

1. check(): the schema, before any work (missing column, wrong type).
2. export_list(): the image column becomes a list in the job's state folder,
   one JSON line per row, ``{"row": i, "url": ...}`` or ``{"row": i, "image":
   <base64>}``; an empty cell a line the reader fails as ``bad_line``, so every
   row yields one record.
3. The job runs over that list; its result and error files are in input order.
4. write_tables(): the input is read again beside the two files, and each
   output row takes its reserved columns from the input batch itself, so
   their types are the input's (ints stay ints), plus the result's JSON
   string (or ``error``/``message``).
"""
import base64
import dataclasses
import json
import posixpath
from typing import Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

PARQUET, CSV, JSONL = 'parquet', 'csv', 'jsonl'
_EXTENSIONS = {'.parquet': PARQUET, '.pq': PARQUET, '.csv': CSV,
               '.jsonl': JSONL, '.ndjson': JSONL, '.json': JSONL}
BATCH_ROWS = 4096


class TableError(ValueError):
  """A one-line problem with a table (exit 2, before any work)."""


def table_format(path: str) -> str:
  if path.startswith('odps://'):
    raise TableError(f'{path}: MaxCompute is not reachable from here; export '
                     'the table to Parquet (or CSV, JSON lines) and give '
                     'that path')
  ext = posixpath.splitext(path.rstrip('/'))[1].lower()
  if ext not in _EXTENSIONS:
    raise TableError(f'{path}: a table is .parquet, .csv or .jsonl '
                     f'(got {ext or "no extension"})')
  return _EXTENSIONS[ext]


def table_files(pattern: str) -> List[str]:
  """The files of a path or glob, in path order (rows in that order)."""
  table_format(pattern)
  try:
    found = FileSystems.match([pattern])[0].metadata_list
  except Exception as e:  # pylint: disable=broad-except
    raise TableError(f'cannot list {pattern}: {type(e).__name__}') from e
  files = sorted(m.path for m in found)
  if not files:
    raise TableError(f'no table file matches {pattern}')
  return files


def _open(path: str):
  return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def batches(path: str, columns: Optional[Sequence[str]] = None
            ) -> Iterator[pa.RecordBatch]:
  """The file's rows, a record batch at a time (memory: one batch)."""
  kind = table_format(path)
  f = _open(path)
  try:
    if kind == PARQUET:
      import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
      # pre_buffer (pyarrow's default) keeps read-ahead buffers for the
      # whole file: measured, its peak grew with the rows (164 MB at 100k
      # rows, 210 MB at 2M); without it, flat (bench/table.py).
      yield from pq.ParquetFile(f, pre_buffer=False).iter_batches(
          batch_size=BATCH_ROWS, columns=list(columns) if columns else None)
      return
    if kind == CSV:
      import pyarrow.csv as pcsv  # pylint: disable=import-outside-toplevel
      reader = pcsv.open_csv(
          f, read_options=pcsv.ReadOptions(block_size=1 << 20),
          convert_options=pcsv.ConvertOptions(
              include_columns=list(columns) if columns else None))
    else:
      import pyarrow.json as pjson  # pylint: disable=import-outside-toplevel
      reader = pjson.open_json(f, read_options=pjson.ReadOptions(
          block_size=1 << 20))
    for batch in reader:
      yield batch.select(list(columns)) if columns else batch
  finally:
    f.close()


def schema(path: str) -> pa.Schema:
  kind = table_format(path)
  if kind == PARQUET:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    f = _open(path)
    try:
      return pq.ParquetFile(f, pre_buffer=False).schema_arrow
    finally:
      f.close()
  for batch in batches(path):
    return batch.schema
  return pa.schema([])


def check(files: Sequence[str], image_col: str, reserved: Sequence[str],
          image_type: str) -> pa.Schema:
  """The reserved columns' schema; a TableError for a missing column, an
  image column that is neither text nor bytes, or files that disagree."""
  first = None
  for path in files:
    try:
      found = schema(path)
    except TableError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise TableError(f'cannot read the table {path}: {type(e).__name__}: '
                       f'{str(e)[:200]}') from e
    missing = [c for c in [image_col, *reserved] if c not in found.names]
    if missing:
      raise TableError(f'{path} has no column {", ".join(missing)} '
                       f'(columns: {", ".join(found.names)})')
    kind = found.field(image_col).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or
            pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
      raise TableError(f'{path}: -Dimage_col={image_col} is {kind}; it must '
                       f'hold text ({image_type}) or image bytes')
    kept = pa.schema([found.field(c) for c in reserved])
    if first is None:
      first = kept
    elif not kept.equals(first):
      raise TableError(f'{path}: its reserved columns are typed '
                       f'{kept} where {files[0]} has {first}')
  return first


def list_line(row: int, value, image_type: str) -> bytes:
  """One row's line in the exported list (transforms/read.py parses it)."""
  if isinstance(value, (bytes, bytearray)):
    value = base64.b64encode(value).decode('ascii') if value else None
    key = 'image'
  else:
    key = 'image' if image_type == 'base64' else 'url'
  if value is None or not str(value).strip():
    return json.dumps({'row': row, 'empty': True}).encode() + b'\n'
  return json.dumps({'row': row, key: value}, ensure_ascii=False).encode(
      'utf-8') + b'\n'


def _columns(image_col: str, reserved: Sequence[str]) -> List[str]:
  return list(dict.fromkeys([image_col, *reserved]))


def export_list(files: Sequence[str], image_col: str, image_type: str,
                target: str, reserved: Sequence[str] = ()) -> int:
  """Writes the list a table job runs over; returns the rows. The reserved
  columns are read too (and dropped): a CSV or JSON cell that does not fit
  its column's type fails here, before any work, not after the job."""
  rows = 0
  out = FileSystems.create(target,
                           compression_type=CompressionTypes.UNCOMPRESSED)
  try:
    for path in files:
      for batch in batches(path, _columns(image_col, reserved)):
        for value in batch.column(image_col).to_pylist():
          out.write(list_line(rows, value, image_type))
          rows += 1
  finally:
    out.close()
  return rows


def _row_of(line: bytes) -> Tuple[int, bytes, bytes]:
  """(row, the list line echoed, the JSON after the separator) of a result
  or error line."""
  from ev_predict.transforms import merge  # pylint: disable=import-outside-toplevel
  value, part = merge.split_output_line(line)
  return json.loads(value)['row'], value, part


def _lines(path: str) -> Iterator[Tuple[int, bytes, bytes]]:
  f = _open(path)
  try:
    for line in f:
      if line.strip():
        yield _row_of(line.rstrip(b'\n'))
  finally:
    f.close()


class _Writer:
  """One output table, written a batch at a time in its format."""

  def __init__(self, path: str, schema_: pa.Schema, kind: str):
    self._kind = kind
    self._file = FileSystems.create(
        path, compression_type=CompressionTypes.UNCOMPRESSED)
    self._schema = schema_
    if self._kind == PARQUET:
      import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
      self._writer = pq.ParquetWriter(self._file, schema_)
    elif self._kind == CSV:
      import pyarrow.csv as pcsv  # pylint: disable=import-outside-toplevel
      self._writer = pcsv.CSVWriter(self._file, schema_)
    else:
      self._writer = None

  def write(self, columns: List[pa.Array]) -> None:
    batch = pa.RecordBatch.from_arrays(columns, schema=self._schema)
    if self._writer is not None:
      self._writer.write_batch(batch)
      return
    for row in batch.to_pylist():
      self._file.write(json.dumps(row, ensure_ascii=False,
                                  default=str).encode('utf-8') + b'\n')

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
    self._file.close()


def write_tables(files: Sequence[str], image_col: str,
                 reserved: Sequence[str], kept: pa.Schema, result_column: str,
                 results: str, errors: str, output_table: str,
                 error_table: str, image_type: str = 'url',
                 kinds: Optional[Tuple[str, str]] = None) -> Tuple[int, int]:
  """The output and error tables from the input and the job's two files
  (each in input order); returns the rows written to each. Every input row
  is in exactly one, else a TableError (and the caller keeps nothing).
  kinds: the two tables' formats (default: from their names)."""
  kinds = kinds or (table_format(output_table), table_format(error_table))
  ok_lines, err_lines = _lines(results), _lines(errors)
  next_ok, next_err = next(ok_lines, None), next(err_lines, None)
  writers = (
      _Writer(output_table, kept.append(pa.field(result_column, pa.string())),
              kinds[0]),
      _Writer(error_table, kept.append(pa.field('error', pa.string())).append(
          pa.field('message', pa.string())), kinds[1]))
  row, counts = 0, [0, 0]
  try:
    for path in files:
      for batch in batches(path, _columns(image_col, reserved)):
        ok_rows, ok_json, err_rows, kinds, messages = [], [], [], [], []
        cells = batch.column(image_col).to_pylist()
        for i in range(batch.num_rows):
          if next_ok is not None and next_ok[0] == row:
            line, next_ok = next_ok, next(ok_lines, None)
            ok_rows.append(i)
            ok_json.append(line[2].decode('utf-8'))
          elif next_err is not None and next_err[0] == row:
            line, next_err = next_err, next(err_lines, None)
            body = json.loads(line[2])
            err_rows.append(i)
            kinds.append(body['error'])
            messages.append(body.get('message', ''))
          else:
            raise TableError(f'row {row} of the table has no record')
          # The row's image is the one its record is of: a table rewritten
          # during the job would otherwise pair results with other rows.
          if line[1] != list_line(row, cells[i], image_type).rstrip(b'\n'):
            raise TableError(f'row {row} of {path} is not the row the job '
                             'classified: the table changed during the job; '
                             'run it again (it starts fresh)')
          row += 1
        columns = batch.select(list(reserved)).columns
        if ok_rows:
          take = pa.array(ok_rows, pa.int64())
          writers[0].write([c.take(take) for c in columns] +
                           [pa.array(ok_json, pa.string())])
        if err_rows:
          take = pa.array(err_rows, pa.int64())
          writers[1].write([c.take(take) for c in columns] +
                           [pa.array(kinds, pa.string()),
                            pa.array(messages, pa.string())])
        counts[0] += len(ok_rows)
        counts[1] += len(err_rows)
    if next_ok is not None or next_err is not None:
      raise TableError('the job wrote records for rows the table does not '
                       'have (it changed during the job)')
  finally:
    for w in writers:
      w.close()
  return counts[0], counts[1]


def default_error_table(output_table: str) -> str:
  """results.parquet -> results.errors.parquet: the same format, beside."""
  stem, ext = posixpath.splitext(output_table)
  return f'{stem}.errors{ext}'


def _one_line(e: BaseException, path: str) -> TableError:
  if isinstance(e, TableError):
    return e
  text = ' '.join(str(e).split())[:300]
  return TableError(f'cannot read the table {path}: {type(e).__name__}: '
                    f'{text}')


@dataclasses.dataclass(frozen=True)
class TableJob:
  """A table job's two ends, checked before any work (check())."""
  files: Tuple[str, ...]
  image_col: str
  image_type: str
  reserved: Tuple[str, ...]
  kept: pa.Schema            # the reserved columns' fields, as the input's
  result_column: str
  output: str
  errors: str

  @classmethod
  def plan(cls, pattern: str, image_col: str, image_type: str,
           reserved: Sequence[str], result_column: str, output: str,
           errors: Optional[str]) -> 'TableJob':
    errors = errors or default_error_table(output)
    table_format(output)
    table_format(errors)
    files = tuple(table_files(pattern))
    kept = check(files, image_col, reserved, image_type)
    return cls(files, image_col, image_type, tuple(reserved), kept,
               result_column, output, errors)

  def export(self, listing: str) -> int:
    """Writes the list the job runs over; returns its rows."""
    try:
      return export_list(self.files, self.image_col, self.image_type,
                         listing, self.reserved)
    except Exception as e:  # pylint: disable=broad-except
      raise _one_line(e, self.input_name) from e

  def write(self, results: str, errors: str, output: str,
            error_output: str) -> Tuple[int, int]:
    """The two tables, at output and error_output (staging names: the
    formats are the targets'), from the job's result and error lines."""
    try:
      return write_tables(self.files, self.image_col, self.reserved,
                          self.kept, self.result_column, results, errors,
                          output, error_output, self.image_type,
                          kinds=(table_format(self.output),
                                 table_format(self.errors)))
    except Exception as e:  # pylint: disable=broad-except
      raise _one_line(e, self.input_name) from e

  @property
  def input_name(self) -> str:
    return self.files[0] if len(self.files) == 1 else \
        f'{self.files[0]} (and {len(self.files) - 1} more)'
