"""One 1000-class result line, timed: ev-predict's formatter against the
json.dumps it must equal byte for byte.

    .venv/bin/python -m bench.format_speed

The scores are a softmax of normal(0, 3) logits: like a real classifier's,
most of them small, about 30 % between 1e-5 and 1e-4 and 40 % below, the two
ranges where orjson's layout differs from repr's (transforms/format.py)."""
import json
import time

import numpy as np

from ev_predict.transforms import format as fmt


def _best_us(fn, rows, rounds=5) -> float:
  best = float('inf')
  for _ in range(rounds):
    start = time.perf_counter()
    for row in rows:
      fn(row)
    best = min(best, time.perf_counter() - start)
  return best / len(rows) * 1e6


def main() -> None:
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(200, 1000)) * 3
  probs = np.exp(logits)
  probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
  labels = [f'class_{i}' for i in range(1000)]
  formatter = fmt.Formatter(labels)
  for row in probs[:20]:   # the same text, or the timing means nothing
    assert formatter.result(row) == json.dumps(
        fmt.result_json(row, labels), ensure_ascii=False)
  small = ((probs >= 1e-5) & (probs < 1e-4)).mean()
  tiny = (probs < 1e-5).mean()
  print(f'scores in [1e-5, 1e-4): {small:.0%}, below 1e-5: {tiny:.0%}')
  for name, fn in (
      ('Formatter.result', formatter.result),
      ('float_reprs', fmt.float_reprs),
      ('map(float.__repr__)', lambda r: list(map(
          float.__repr__, r.astype(float).tolist()))),
      ('json.dumps(result_json)', lambda r: json.dumps(
          fmt.result_json(r, labels), ensure_ascii=False))):
    print(f'{name:26s} {_best_us(fn, probs):7.1f} us a line')


if __name__ == '__main__':
  main()
