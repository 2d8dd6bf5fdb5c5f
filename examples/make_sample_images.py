"""Writes the demo's sample images and file list (bundled in the repository).

Draws 24 digits from the held-out test split of ``build_demo_model.py`` (never
seen in training), upscales them to 64x64 or 96x96 so ev-predict has to resize
them, and saves them as real PNG, JPEG, WebP and BMP files whose names carry
the true label (``digit_07_label-seven.png``). ``filelist.txt`` lists them
relative to the repository root and ends with two lines that must fail: a
missing file and a text file named .jpg.

    python examples/make_sample_images.py

Deterministic: rerunning rewrites the same files.
"""
import glob
import os
import sys

import numpy as np

# Run as a script, Python puts this folder first on sys.path.
from build_demo_model import LABELS, digit_to_image, load_split

HERE = os.path.dirname(os.path.abspath(__file__))

ROOT = os.path.dirname(HERE)
IMAGE_DIR = os.path.join('examples', 'data', 'images')   # relative to ROOT
FILELIST = os.path.join('examples', 'data', 'filelist.txt')
COUNT = 24
PER_CLASS = 2   # every class at least this often

# (extension, Pillow format, save options, side, mode), cycled over images.
FORMATS = [
    ('png', 'PNG', {'optimize': True}, 64, 'RGB'),
    ('jpg', 'JPEG', {'quality': 95}, 96, 'RGB'),
    ('png', 'PNG', {'optimize': True}, 96, 'L'),
    ('jpg', 'JPEG', {'quality': 95}, 64, 'RGB'),
    ('png', 'PNG', {'optimize': True}, 64, 'RGB'),
    ('jpeg', 'JPEG', {'quality': 95}, 64, 'L'),
]
EXTRA_FORMATS = {   # image number -> format, for the rarer ones
    5: ('webp', 'WEBP', {'lossless': True}, 64, 'RGB'),
    11: ('bmp', 'BMP', {}, 64, 'RGB'),
    17: ('webp', 'WEBP', {'quality': 95}, 96, 'RGB'),
    22: ('bmp', 'BMP', {}, 64, 'L'),
}
MISSING = 'missing.jpg'
NOT_AN_IMAGE = 'not_an_image.jpg'


def pick(labels: np.ndarray, count: int = COUNT, per_class: int = PER_CLASS):
  """Test-set indices: the first per_class of every class, then the next
  ones in test order; sorted back into test order."""
  chosen = []
  for cls in range(len(LABELS)):
    chosen += [int(i) for i in np.flatnonzero(labels == cls)[:per_class]]
  rest = [i for i in range(len(labels)) if i not in set(chosen)]
  chosen += rest[:count - len(chosen)]
  return sorted(chosen)


def main() -> int:
  _, test_digits, _, test_labels = load_split()
  image_dir = os.path.join(ROOT, IMAGE_DIR)
  os.makedirs(image_dir, exist_ok=True)
  for stale in glob.glob(os.path.join(image_dir, 'digit_*')):
    os.remove(stale)
  lines = []
  total = 0
  for n, index in enumerate(pick(test_labels)):
    ext, fmt, options, side, mode = EXTRA_FORMATS.get(
        n, FORMATS[n % len(FORMATS)])
    label = LABELS[int(test_labels[index])]
    name = f'digit_{n:02d}_label-{label}.{ext}'
    img = digit_to_image(test_digits[index], side).convert(mode)
    img.save(os.path.join(image_dir, name), fmt, **options)
    total += os.path.getsize(os.path.join(image_dir, name))
    lines.append(f'{IMAGE_DIR}/{name}')

  with open(os.path.join(image_dir, NOT_AN_IMAGE), 'w', encoding='utf-8') as f:
    f.write('This is plain text, not a JPEG: ev-predict must report it as a '
            'decode error.\n')
  missing = os.path.join(image_dir, MISSING)
  if os.path.exists(missing):
    os.remove(missing)
  lines += [f'{IMAGE_DIR}/{MISSING}', f'{IMAGE_DIR}/{NOT_AN_IMAGE}']
  with open(os.path.join(ROOT, FILELIST), 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'wrote {len(lines) - 2} images ({total / 1024:.1f} KiB) to '
        f'{IMAGE_DIR}, plus {NOT_AN_IMAGE}; file list {FILELIST} '
        f'({len(lines)} lines, the last 2 must fail)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
