"""What a run report shows, gathered from a finished job's files in one
streaming pass: memory is bounded by the classes and the examples kept,
never by the lines (transforms/report_page.py draws it).

A job's outcomes arrive as items: a result or an error, its label (the
input line as given, or a table row's reserved columns), where its image is
(for thumbnails) and the JSON body of its line.
"""
import base64
import concurrent.futures
import dataclasses
import heapq
import io
import itertools
import json
import math
import re
import threading
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ev_predict.transforms import decode, merge, read
from ev_predict.transforms.fetch import FetchConfig, Fetcher
from ev_predict.transforms.record import Record

BINS = 20            # the confidence histogram's bars over [0, 1]
_FINE = 1000         # per-class histograms: medians to within 0.001
_LABEL = 300         # characters of a label shown
_NAME = 200          # characters of a class name kept
_KEEP = 4 << 20      # bytes of a line kept for a thumbnail (base64 lines)
_KEPT = 128 << 20    # bytes of kept lines in all (--thumbnails 1000)
# A result file is not trusted (it may be edited, or not ours): memory stays
# bounded whatever it holds. Beyond these, classes and pairs are folded.
MAX_CLASSES = 30_000
_MAX_PAIRS = 250_000
_PAIR_LABELS = 32    # labels of one image that count in co-occurrence
_DENSE = 64          # a class's score histogram: sparse below this many bins
_CONTROL = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]')


class NotAResult(ValueError):
  """A result line's JSON is not shaped as ev-predict writes results."""


def text(value, limit: int = _LABEL) -> str:
  """Data-borne text as the page may show it: valid UTF-8 (lone surrogates,
  which JSON escapes can carry, become U+FFFD), no control characters
  (an SVG with one does not parse), at most limit characters."""
  if not isinstance(value, str):
    value = str(value)
  if len(value) > limit:
    value = value[:limit - 1] + '…'
  return _CONTROL.sub('\ufffd', value)


def _score(value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or \
      not math.isfinite(value):
    raise NotAResult(f'a score that is not a finite number ({text(value, 40)})')
  return float(value)


def result_shape(body: dict) -> Tuple[bool, List[str], List[float]]:
  """(multi-label?, class names, scores) of a result body; NotAResult when
  it is not shaped as ours (a hand-edited or foreign file)."""
  if 'probs' in body and 'classes' in body:
    names, probs = body.get('class_names') or [], body.get('probs') or []
    if not isinstance(names, list) or not isinstance(probs, list):
      raise NotAResult('class_names and probs must be lists')
    return True, [text(n, _NAME) for n in names], [_score(p) for p in probs]
  name = body.get('class_name', body.get('class'))
  if name is None or isinstance(name, (dict, list)):
    raise NotAResult('no class_name')
  probs = body.get('class_probs') or {}
  if not isinstance(probs, dict):
    raise NotAResult('class_probs must be an object')
  return False, [text(name, _NAME)], [_score(p) for p in probs.values()]


@dataclasses.dataclass
class Item:
  ok: bool
  label: str                    # what the page shows for it
  image: Optional[bytes]        # the input line (or cell) naming its image
  body: dict


@dataclasses.dataclass
class Example:
  label: str
  image: Optional[bytes]
  detail: str                   # class and confidence, or the error message
  score: float = 0.0


@dataclasses.dataclass
class Stats:
  """Counts, histograms and a bounded number of examples."""
  lowest: int = 24              # borderline images kept
  per_class: int = 4            # examples kept per class
  per_kind: int = 5             # examples kept per error kind
  threshold: float = 0.5        # multi-label: the margin is to this

  def __post_init__(self):
    self.results = self.errors = 0
    self.multilabel = False
    self.classes: Dict[str, int] = {}          # name -> count (top-1)
    self.order: List[str] = []                 # class names, first seen
    self.fine: Dict[str, object] = {}   # name -> {bin: n}, or _FINE counts
    self.folded = 0             # results of classes beyond MAX_CLASSES
    self.pairs_folded = False   # co-occurrence stopped at _MAX_PAIRS
    self._kept_bytes = 0
    self.confidence = np.zeros(BINS, np.int64)
    self.examples: Dict[str, List[Example]] = {}
    self.kinds: Dict[str, int] = {}
    self.failures: Dict[str, List[Example]] = {}
    self.pairs: Dict[Tuple[str, str], int] = {}   # multi-label co-occurrence
    self.label_sets: Dict[int, int] = {}          # labels per image -> images
    self._borderline: List[tuple] = []            # a max-heap by -score
    self._seq = itertools.count()

  # -- adding ------------------------------------------------------------
  def add(self, item: Item) -> None:
    if item.ok:
      self._add_result(item)
    else:
      self._add_error(item)

  def _add_result(self, item: Item) -> None:
    try:
      multilabel, names, probs = result_shape(item.body)
    except NotAResult as e:
      self._add_error(Item(False, item.label, None, {
          'error': 'unreadable', 'message': f'a result that is not '
          f'ev-predict\'s: {e}'}))
      return
    self.results += 1
    top = max(probs) if probs else 0.0
    if multilabel:
      self.multilabel = True
      margin = min((abs(p - self.threshold) for p in probs), default=1.0)
      self.label_sets[len(names)] = self.label_sets.get(len(names), 0) + 1
      for name in names:
        self._count(name, top, item)
      self._count_pairs(names)
      detail = ', '.join(names[:8]) + (' …' if len(names) > 8 else '')
      self._keep_borderline(margin, item, f'{detail or "no label"} (closest '
                                          f'score {_closest(probs, self.threshold)})')
    else:
      self._count(names[0], top, item)
      self._keep_borderline(top, item, f'{names[0]} {top:.3f}')
    self.confidence[min(BINS - 1, max(0, int(top * BINS)))] += 1

  def _count(self, name: str, top: float, item: Item) -> None:
    if name not in self.classes:
      if len(self.classes) >= MAX_CLASSES:
        self.folded += 1
        return
      self.classes[name] = 0
      self.order.append(name)
      self.fine[name] = {}
      self.examples[name] = []
    self.classes[name] += 1
    slot = min(_FINE - 1, max(0, int(top * _FINE)))
    fine = self.fine[name]
    if isinstance(fine, dict):
      fine[slot] = fine.get(slot, 0) + 1
      if len(fine) > _DENSE:
        dense = np.zeros(_FINE, np.int64)
        for k, n in fine.items():
          dense[k] = n
        self.fine[name] = dense
    else:
      fine[slot] += 1
    kept = self.examples[name]
    if len(kept) < self.per_class:
      kept.append(Example(item.label, self._kept(item.image),
                          f'{name} {top:.3f}', top))

  def _count_pairs(self, names: List[str]) -> None:
    for pair in itertools.combinations(sorted(set(names))[:_PAIR_LABELS], 2):
      if pair in self.pairs:
        self.pairs[pair] += 1
      elif len(self.pairs) < _MAX_PAIRS:
        self.pairs[pair] = 1
      else:
        self.pairs_folded = True

  def _kept(self, image: Optional[bytes]) -> Optional[bytes]:
    """A line kept for its thumbnail, within the bytes budget."""
    if image is None or len(image) > _KEEP or \
        self._kept_bytes + len(image) > _KEPT:
      return None
    self._kept_bytes += len(image)
    return image

  def _keep_borderline(self, score: float, item: Item, detail: str) -> None:
    # A max-heap of the lowest scores: its root is the highest kept.
    if self.lowest <= 0:
      return
    if len(self._borderline) >= self.lowest and \
        -score <= self._borderline[0][0]:
      return
    if len(self._borderline) >= self.lowest:
      gone = heapq.heappop(self._borderline)
      self._kept_bytes -= len(gone[3] or b'')
    heapq.heappush(self._borderline, (-score, next(self._seq), item.label,
                                      self._kept(item.image), detail))

  def _add_error(self, item: Item) -> None:
    kind = item.body.get('error')
    # Kinds are ours (a dozen words); anything else is one bucket, so a
    # hostile file cannot make a million of them.
    kind = kind if isinstance(kind, str) and re.fullmatch(
        '[a-z_]{1,40}', kind) else 'unknown'
    self.errors += 1
    self.kinds[kind] = self.kinds.get(kind, 0) + 1
    kept = self.failures.setdefault(kind, [])
    if len(kept) < self.per_kind:
      kept.append(Example(item.label, None,
                          text(item.body.get('message', ''))))

  # -- reading -----------------------------------------------------------
  def top_classes(self, n: int) -> List[Tuple[str, int]]:
    """The n commonest classes (ties: first seen first)."""
    rank = {name: i for i, name in enumerate(self.order)}
    return sorted(self.classes.items(),
                  key=lambda kv: (-kv[1], rank[kv[0]]))[:n]

  def median(self, name: str) -> float:
    """A class's median top-1 score, to within 1/_FINE."""
    counts = self.fine[name]
    if isinstance(counts, dict):
      dense = np.zeros(_FINE, np.int64)
      for k, n in counts.items():
        dense[k] = n
      counts = dense
    half = (counts.sum() + 1) / 2
    return (int(np.searchsorted(np.cumsum(counts), half)) + 0.5) / _FINE

  def borderline(self) -> List[Example]:
    """The kept images, lowest score (or smallest margin) first (the same
    objects each call: thumbnails are looked up by them)."""
    if getattr(self, '_sorted', None) is None:
      self._sorted = [Example(label, image, detail, -neg)
                      for neg, _, label, image, detail in
                      sorted(self._borderline, key=lambda e: (-e[0], e[1]))]
    return self._sorted

  def top_pairs(self, labels: List[str]) -> np.ndarray:
    """Co-occurrence counts among labels (the diagonal: each label's)."""
    m = np.zeros((len(labels), len(labels)), np.int64)
    for i, a in enumerate(labels):
      m[i, i] = self.classes.get(a, 0)
      for j in range(i + 1, len(labels)):
        b = labels[j]
        m[i, j] = m[j, i] = self.pairs.get(tuple(sorted((a, b))), 0)
    return m


def _closest(probs, threshold) -> str:
  if not probs:
    return '-'
  return f'{min(probs, key=lambda p: abs(p - threshold)):.3f}'


# ------------------------------------------------------------ the files


def _open(path: str):
  return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def line_items(path: str, ok: bool) -> Iterator[Item]:
  """A result or error file's lines as items (a line that does not parse
  is an item of kind `unreadable`: counted, never a crash)."""
  f = _open(path)
  try:
    for head, tail in bounded_lines(f):
      line = head.rstrip(b'\r') if tail is None else tail.rstrip(b'\r')
      if tail is None and not line.strip():
        continue
      try:
        # A line too long to hold (a base64 image): its JSON is at its end.
        value, part = merge.split_output_line(line)
        body = json.loads(part.decode('utf-8'))
        if not isinstance(body, dict):
          raise ValueError('not an object')
      except (ValueError, UnicodeDecodeError, RecursionError):
        yield Item(False, _label(head), None,
                   {'error': 'unreadable', 'message': 'a line of '
                    f'{path} that is not <input>,  <json>'})
        continue
      if tail is not None:
        value = None     # too long to keep for a thumbnail anyway
      yield Item(ok and 'error' not in body, _label(head if value is None
                                                    else value), value, body)
  finally:
    f.close()


_HEAD = _KEEP        # bytes of a long line kept from its start ...
_TAIL = 4 << 20      # ... and from its end (where its JSON is)


def bounded_lines(f, chunk: int = 1 << 20) -> Iterator[tuple]:
  """(line, None) per line, or (its first _HEAD bytes, its last _TAIL
  bytes) for a longer one: a file with a 1 GiB line costs 8 MiB, not 1 GiB
  (iterating a file reads a whole line first)."""
  head, tail = bytearray(), None
  while True:
    block = f.read(chunk)
    if not block:
      break
    start = 0
    while True:
      end = block.find(b'\n', start)
      piece = block[start:end if end >= 0 else len(block)]
      if tail is None:
        head += piece
        if len(head) > _HEAD + _TAIL:
          tail = bytearray(head[-_TAIL:])
          del head[_HEAD:]
      else:
        tail += piece
        if len(tail) > 2 * _TAIL:
          del tail[:-_TAIL]
      if end < 0:
        break
      yield bytes(head), None if tail is None else bytes(tail[-_TAIL:])
      head, tail = bytearray(), None
      start = end + 1
  if head or tail:
    yield bytes(head), None if tail is None else bytes(tail[-_TAIL:])


def table_items(path: str, ok: bool, result_column: str,
                image_col: Optional[str], label_columns: List[str]
                ) -> Iterator[Item]:
  """A table job's output (or error) table as items, a batch at a time."""
  from ev_predict.transforms import table  # pylint: disable=import-outside-toplevel
  for batch in table.batches(path):
    rows = batch.to_pylist()
    for row in rows:
      label = text(', '.join(f'{c}={row.get(c)}' for c in label_columns)
                   or '-')
      image = row.get(image_col) if image_col else None
      if isinstance(image, str):
        image = image.encode('utf-8', 'surrogateescape')
      if ok:
        try:
          body = json.loads(row.get(result_column) or '')
        except ValueError:
          body = {'error': 'unreadable', 'message': 'a result cell that is '
                  'not JSON'}
      else:
        body = {'error': row.get('error'), 'message': row.get('message')}
      if not isinstance(body, dict):
        body = {'error': 'unreadable', 'message': 'a result cell that is '
                'not a JSON object'}
      yield Item(ok and 'error' not in body, label, image, body)


def _label(value: bytes) -> str:
  return text(value[:4 * _LABEL].decode('utf-8', 'replace'))


def gather(items: Iterable[Item], stats: Stats) -> Stats:
  for item in items:
    stats.add(item)
  return stats


# ------------------------------------------------------------ thumbnails


@dataclasses.dataclass(frozen=True)
class Thumbnail:
  uri: Optional[str]            # data:image/jpeg;base64,... when it worked
  reason: str = ''              # why not, in one line


def make_thumbnails(images: List[Optional[bytes]], config: FetchConfig,
                    max_pixels: int, image_type: str = 'url',
                    size: int = 112, threads: int = 4) -> List[Thumbnail]:
  """Each image line (or cell) -> a small JPEG, fetched through the job's
  own access policy and caps; one that cannot be had says why."""
  fetcher = Fetcher(config)
  # Fetches overlap; decodes take turns: a 48-Mpixel PNG is 137 MiB
  # decoded (no DCT scaling for it), and the report runs in the launcher.
  decoding = threading.Semaphore(1)

  def one(image: Optional[bytes]) -> Thumbnail:
    if image is None:
      return Thumbnail(None, 'no image reference kept for this line')
    record = read.parse_line(image, image_type)
    if record is None or not record.ok:
      return Thumbnail(None, record.message if record else 'blank line')
    if record.data is None:
      record = fetcher(record)
      if not record.ok:
        return Thumbnail(None, f'{record.error}: {record.message}')
    with decoding:
      return _thumbnail(record, max_pixels, size)

  with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    return list(pool.map(one, images))


# Beyond this many pixels only a JPEG is pictured (its DCT scaling decodes
# it small); another format would be decoded whole in the launcher.
THUMBNAIL_PIXELS = 24_000_000


def _thumbnail(record: Record, max_pixels: int, size: int) -> Thumbnail:
  try:
    header = decode.open_image(record.data, max_pixels)
    pixels = header.size[0] * header.size[1]
    if header.format != 'JPEG' and pixels > THUMBNAIL_PIXELS:
      return Thumbnail(None, f'too_large: {header.size[0]}x{header.size[1]} '
                       f'{header.format}: no thumbnail over '
                       f'{THUMBNAIL_PIXELS // 1_000_000} Mpixel but of a JPEG')
    del header
    img = decode.decode_rgb(record.data, max_pixels, (size, size))
    img.thumbnail((size, size))
    out = io.BytesIO()
    img.save(out, 'JPEG', quality=72)
  except decode.DecodeError as e:
    return Thumbnail(None, f'{e.kind}: {e}')
  except Exception as e:  # pylint: disable=broad-except
    return Thumbnail(None, f'decode: {type(e).__name__}')
  return Thumbnail('data:image/jpeg;base64,' +
                   base64.b64encode(out.getvalue()).decode('ascii'))
