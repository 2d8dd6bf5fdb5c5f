"""The run report as one self-contained HTML page: the summary's numbers,
charts drawn by matplotlib as inline SVG, thumbnails as data URIs. Nothing
is loaded from anywhere (no script, no font, no stylesheet from outside), so
it opens from disk on an air-gapped machine.

Every number the summary holds is shown as the summary has it, in an element
carrying ``data-field="<key>"`` (tests read them back in a browser). Every
text that comes from the job's data (lines, class names, messages) is
escaped: a file list is not trusted.
"""
import html
import io
import json
import time
from typing import Dict, List, Mapping, Optional, Sequence

from ev_predict.transforms.report import (BINS, MAX_CLASSES, Example, Stats,
                                          Thumbnail, text)

TOP_CLASSES = 50      # the histogram's bars; the rest are "other"
EXAMPLE_CLASSES = 8   # classes shown with examples
CO_LABELS = 15        # multi-label: the co-occurrence matrix's labels

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#b9c0cc}
main{padding:8px 32px 40px;max-width:1280px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:17px;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 150px;background:#f5f6f8;border-radius:6px;padding:10px 14px}
.card b{display:block;font-size:22px} .card span{color:#5b6475}
.bad b{color:#b3261e} .good b{color:#1e7b34}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e8ec;
vertical-align:top} td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:132px;font-size:11px;color:#5b6475}
figure img,figure .none{width:120px;height:120px;object-fit:contain;
background:#eef0f3;border-radius:4px;display:block}
figure .none{display:flex;align-items:center;justify-content:center;
text-align:center;padding:6px;box-sizing:border-box;color:#b3261e}
figcaption{margin-top:3px;word-break:break-all}
.chart svg{max-width:100%;height:auto}
.warn{background:#fff4e5;border-left:4px solid #e8a33d;padding:8px 12px}
details summary{cursor:pointer;color:#3c5ccf}
"""


def _e(value) -> str:
  return html.escape(str(value), quote=True)


def _t(value) -> str:
  """Text from the data, isolated: a right-to-left override in a file name
  cannot reorder what follows it."""
  return f'<bdi>{_e(value)}</bdi>'


def _num(value) -> str:
  """A number as the summary has it (ints with thousands separators)."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if value is None:
    return '-'
  if isinstance(value, int):
    return f'{value:,}'
  if isinstance(value, float):
    return f'{value:,.3f}'.rstrip('0').rstrip('.') if value else '0'
  return _e(value)


def _field(key: str, value, cls: str = '') -> str:
  if isinstance(value, str):
    value = text(value, 2000)    # a summary on disk may hold anything
  raw = json.dumps(value) if not isinstance(value, str) else value
  return (f'<b data-field="{_e(key)}" data-value="{_e(raw)}"'
          f'{f" class={cls!r}" if cls else ""}>{_num(value)}</b>')


# ------------------------------------------------------------ charts


def _pyplot():
  # pylint: disable=import-outside-toplevel
  import matplotlib
  matplotlib.use('Agg')
  matplotlib.rcParams.update({
      'svg.fonttype': 'none',        # text stays text: small, selectable
      'svg.hashsalt': 'ev-predict',  # the same page for the same data
      'text.parse_math': False,      # a class name with $ is not TeX
      'font.size': 9, 'axes.spines.top': False, 'axes.spines.right': False,
  })
  import matplotlib.pyplot as plt
  return plt


def _svg(fig) -> str:
  plt = _pyplot()
  out = io.StringIO()
  fig.savefig(out, format='svg', bbox_inches='tight', metadata={'Date': None})
  plt.close(fig)
  text = out.getvalue()
  return text[text.index('<svg'):]


def _bars(labels: Sequence[str], values: Sequence[float], xlabel: str,
          color: str = '#3c5ccf') -> str:
  plt = _pyplot()
  height = max(1.6, 0.22 * len(labels) + 0.6)
  fig, ax = plt.subplots(figsize=(8, height))
  positions = list(range(len(labels)))
  ax.barh(positions, values, color=color)
  ax.set_yticks(positions, [_short(l) for l in labels])
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  return _svg(fig)


def _short(label: str, width: int = 40) -> str:
  return label if len(label) <= width else label[:width - 1] + '…'


def _tail(label: str, width: int = 80) -> str:
  """A path's end (its file name) when it is too long."""
  return label if len(label) <= width else '…' + label[1 - width:]


def _histogram(counts: Sequence[int], xlabel: str) -> str:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 2.6))
  edges = [i / BINS for i in range(BINS)]
  ax.bar(edges, counts, width=1 / BINS, align='edge', color='#3c5ccf',
         edgecolor='white')
  ax.set_xlim(0, 1)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('images')
  return _svg(fig)


def _throughput(points: Sequence[Sequence[float]]) -> Optional[str]:
  if len(points) < 2:
    return None
  plt = _pyplot()
  t = [p[0] for p in points]
  done = [p[1] for p in points]
  rate = [0.0] + [(done[i] - done[i - 1]) / max(1e-9, t[i] - t[i - 1])
                  for i in range(1, len(points))]
  fig, ax = plt.subplots(figsize=(8, 2.6))
  ax.plot(t, rate, color='#3c5ccf', label='lines/s')
  ax.set_xlabel('seconds into the run')
  ax.set_ylabel('lines/s')
  ax2 = ax.twinx()
  ax2.plot(t, done, color='#9aa3b5', linestyle='--', label='lines done')
  ax2.set_ylabel('lines done')
  return _svg(fig)


def _matrix(labels: List[str], m) -> str:
  plt = _pyplot()
  n = len(labels)
  fig, ax = plt.subplots(figsize=(1.2 + 0.42 * n, 0.9 + 0.42 * n))
  ax.imshow(m, cmap='Blues')
  ax.set_xticks(range(n), [_short(l, 18) for l in labels], rotation=60,
                ha='right')
  ax.set_yticks(range(n), [_short(l, 18) for l in labels])
  for i in range(n):
    for j in range(n):
      ax.text(j, i, str(int(m[i, j])), ha='center', va='center', fontsize=7,
              color='white' if m[i, j] > m.max() / 2 else '#1d2330')
  return _svg(fig)


# ------------------------------------------------------------ sections


def _cards(summary: Mapping) -> str:
  failed = summary.get('failed', 0)
  cards = [('lines_read', 'lines read', ''), ('succeeded', 'succeeded', 'good'),
           ('failed', 'failed', 'bad' if failed else 'good'),
           ('images_per_second', 'images/s (wall)', ''),
           ('processing_images_per_second', 'images/s (processing)', ''),
           ('wall_seconds', 'wall seconds', ''),
           ('processing_seconds', 'processing seconds', ''),
           ('resumed_lines', 'resumed lines', '')]
  out = []
  for key, caption, cls in cards:
    if key in summary:
      out.append(f'<div class="card {cls}">{_field(key, summary[key])}'
                 f'<span>{_e(caption)}</span></div>')
  return '<div class="cards">' + ''.join(out) + '</div>'


def _facts(summary: Mapping) -> str:
  rows = []
  for key in ('model_path', 'model_input', 'backend_requested', 'batch_size',
              'workers', 'attempts', 'run_id', 'input_file', 'result_file',
              'error_file', 'error_ratio', 'accounting_ok'):
    if key in summary:
      rows.append(f'<tr><th>{_e(key)}</th><td class="mono">'
                  f'{_field(key, summary[key])}</td></tr>')
  for kind, n in sorted((summary.get('failed_by_kind') or {}).items()):
    kind = text(kind, 60)
    rows.append(f'<tr><th>failed: {_e(kind)}</th><td class="mono">'
                f'{_field("failed_by_kind." + kind, n)}</td></tr>')
  for backend, n in sorted((summary.get('backends') or {}).items()):
    backend = text(backend, 60)
    rows.append(f'<tr><th>backend: {_e(backend)}</th><td class="mono">'
                f'{_field("backends." + backend, n)}</td></tr>')
  params = ''.join(f'<tr><th>-D{_t(text(k, 100))}</th><td class="mono">'
                   f'{_t(text(v, 2000))}</td></tr>' for k, v in
                   sorted((summary.get('parameters') or {}).items()))
  return (f'<table>{"".join(rows)}</table><details><summary>parameters'
          f'</summary><table>{params}</table></details>')


def _classes(stats: Stats, multilabel: bool) -> str:
  what = 'label' if multilabel else 'class'
  plural = 'labels' if multilabel else 'classes'
  if not stats.classes:
    return f'<p>No image got a {what}.</p>'
  top = stats.top_classes(TOP_CLASSES)
  rest = sum(stats.classes.values()) - sum(n for _, n in top) + stats.folded
  labels = [name for name, _ in top] + (['(other)'] if rest else [])
  values = [n for _, n in top] + ([rest] if rest else [])
  total = stats.results
  rows = ''.join(
      f'<tr><td class="mono">{_t(name)}</td><td class="n" data-class-count='
      f'"{_e(name)}">{n:,}</td><td class="n">{100 * n / total:.1f} %</td>'
      f'<td class="n">{stats.median(name):.3f}</td></tr>'
      for name, n in top)
  if rest:
    others = f'{len(stats.classes) - len(top):,}'
    if stats.folded:
      others = f'{others} or more'
    rows += (f'<tr><td>({others} other '
             f'{plural})</td><td class="n">{rest:,}</td><td class="n">'
             f'{100 * rest / total:.1f} %</td><td></td></tr>')
  noun = 'images with the label' if multilabel else 'images'
  head = ('<tr><th>' + what + '</th><th class="n">' + noun +
          '</th><th class="n">share</th><th class="n">median top-1 score'
          '</th></tr>')
  return (f'<div class="chart">{_bars(labels, values, noun)}</div>'
          f'<details open><summary>{len(stats.classes):,} {plural}</summary>'
          f'<table>{head}{rows}</table></details>')


def _failures(stats: Stats) -> str:
  if not stats.kinds:
    return '<p>No line failed.</p>'
  parts = []
  for kind, n in sorted(stats.kinds.items(), key=lambda kv: (-kv[1], kv[0])):
    rows = ''.join(f'<tr><td class="mono">{_t(x.label)}</td><td>'
                   f'{_t(x.detail)}</td></tr>' for x in stats.failures[kind])
    parts.append(f'<h3>{_e(kind)}: <span data-kind-count="{_e(kind)}">'
                 f'{n:,}</span></h3><table>{rows}</table>')
  return ''.join(parts)


def _grid(examples: List[Example], thumbs: Dict[int, Thumbnail]) -> str:
  cells = []
  for x in examples:
    thumb = thumbs.get(id(x))
    if thumb is not None and thumb.uri:
      picture = (f'<img src="{thumb.uri}" alt="{_e(x.label)}" '
                 f'title="{_e(x.label)}">')
    else:
      why = thumb.reason if thumb is not None else 'thumbnails off'
      picture = f'<div class="none" title="{_e(why)}">{_e(why[:90])}</div>'
    cells.append(f'<figure>{picture}<figcaption><b>{_t(x.detail)}</b><br>'
                 f'<span class="mono">{_t(_tail(x.label))}</span>'
                 '</figcaption></figure>')
  return '<div class="grid">' + ''.join(cells) + '</div>'


def page_examples(stats: Stats) -> Dict[str, List[Example]]:
  """The examples the page shows, by section: what thumbnails are for."""
  shown = {'borderline': stats.borderline()}
  for name, _ in stats.top_classes(EXAMPLE_CLASSES):
    shown[f'class:{name}'] = stats.examples[name]
  return shown


def render(summary: Mapping, stats: Stats, output: str,
           thumbs: Optional[Dict[int, Thumbnail]] = None,
           notes: Sequence[str] = ()) -> str:
  """The whole page. thumbs: by id() of the Example they picture."""
  thumbs = thumbs or {}
  multilabel = stats.multilabel
  shown = page_examples(stats)
  warnings = list(notes)
  if summary.get('succeeded') is not None and \
      (summary.get('succeeded'), summary.get('failed')) != \
      (stats.results, stats.errors):
    warnings.append(f'the files hold {stats.results:,} results and '
                    f'{stats.errors:,} errors, the summary says '
                    f'{summary.get("succeeded"):,} and '
                    f'{summary.get("failed"):,}: were they changed since?')
  if stats.folded:
    warnings.append(f'more than {MAX_CLASSES:,} distinct class names: '
                    f'{stats.folded:,} results of the later ones are counted '
                    'as other (is this file ev-predict\'s?)')
  if stats.pairs_folded:
    warnings.append('too many distinct label pairs: co-occurrence counts '
                    'leave out pairs first seen late in the file')
  sections = [('Summary', _cards(summary) + _facts(summary))]
  sections.append(('Labels' if multilabel else 'Classes',
                   _classes(stats, multilabel)))
  if stats.results:
    sections.append((
        'Confidence', '<div class="chart">' + _histogram(
            stats.confidence.tolist(), 'top-1 score' if not multilabel else
            'highest label score') + '</div>'))
  if multilabel and stats.classes:
    labels = [n for n, _ in stats.top_classes(CO_LABELS)]
    sets = ''.join(f'<tr><td class="n">{k}</td><td class="n">{n:,}</td></tr>'
                   for k, n in sorted(stats.label_sets.items()))
    sections.append(('Labels per image and co-occurrence',
                     '<table><tr><th class="n">labels</th><th class="n">'
                     f'images</th></tr>{sets}</table><div class="chart">'
                     f'{_matrix(labels, stats.top_pairs(labels))}</div>'))
  sections.append(('Failures', _failures(stats)))
  try:
    chart = _throughput((summary.get('timeline') or {}).get('points') or [])
  except Exception as e:  # pylint: disable=broad-except
    chart = None
    warnings.append(f'the throughput chart could not be drawn '
                    f'({type(e).__name__})')
  if chart:
    sections.append(('Throughput over the run', f'<div class="chart">{chart}'
                     '</div>'))
  what = ('smallest margin to the threshold' if multilabel else
          'lowest top-1 score')
  sections.append((f'Borderline images ({what})',
                   _grid(shown['borderline'], thumbs)))
  examples = ''.join(f'<h3>{_t(key[6:])}</h3>{_grid(xs, thumbs)}'
                     for key, xs in shown.items() if key.startswith('class:'))
  if examples:
    sections.append(('Examples per class', examples))
  body = ''.join(f'<section><h2>{_e(title)}</h2>{content}</section>'
                 for title, content in sections)
  banner = ''.join(f'<p class="warn">{_e(w)}</p>' for w in warnings)
  generated = time.strftime('%Y-%m-%d %H:%M:%S %Z')
  return (
      '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
      '<meta name="viewport" content="width=device-width,initial-scale=1">'
      # Nothing from outside, ever: the page works air-gapped, and a list's
      # text can never turn into a request.
      '<meta http-equiv="Content-Security-Policy" content="default-src '
      '\'none\'; img-src data:; style-src \'unsafe-inline\'">'
      f'<title>ev-predict report: {_e(output)}</title><style>{_CSS}</style>'
      '</head><body><header><h1>ev-predict run report</h1>'
      f'<p class="mono">{_e(output)} · run '
      f'{_e(text(summary.get("run_id", "?"), 100))}'
      f' · written {_e(generated)}</p></header><main>{banner}{body}</main>'
      '</body></html>')
