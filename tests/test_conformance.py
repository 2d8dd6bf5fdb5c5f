"""Decoding conformance: each file decodes as TensorFlow's decode_image does, or
differs as docs/decoding.md says.

Inputs: two public suites (PngSuite, BMP Suite; ``../shared/conformance`` next to
the repository, copied into a temporary folder before reading) and odd files
generated in tests/conformance_cases.py (every mode Pillow saves, every
orientation, truncated streams, transparency, CMYK/YCCK, 16-bit, interlaced,
animations). Each case names its reference and what is allowed: the reference
is ``tf.io.decode_image(channels=3, expand_animations=False)`` where TensorFlow
reads the format, else Pillow (open, load, exif_transpose, convert('RGB')).
Anything but an exact match, or a failure on both sides, carries the key of
the docs/decoding.md entry that explains it; test_every_difference_is_documented
holds the docs to that.

Ours always runs at the native size (no resize), DecodeConfig(size=(w, h),
draft=False), and for JPEG also with draft at 1/2, 1/4, 1/8 (against
TensorFlow's own DCT scaling, ``decode_jpeg(ratio=n)``).
"""
import dataclasses
import hashlib
import io
import os
import re
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import DecodeConfig, DecodeError, decode_image
from tests.conformance_cases import (BOTH_FAIL, GENERATED, REF_FAILS, SAME,
                                     WE_FAIL, Case)
from tests.decode_helpers import ORIENT

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE_DIR = os.path.join(REPO_ROOT, '..', 'shared', 'conformance')
DOCS = os.path.join(REPO_ROOT, 'docs', 'decoding.md')


# --------------------------------------------------------------------------
# The public suites: what each file must give (see docs/decoding.md).

_BMP_BAD_HEADER = Case(ref='pillow', outcome=BOTH_FAIL)
_BMP = Case(ref='pillow', doc=('bmp-tf',))
_BMP_BAD_ACCEPTED = Case(ref='pillow', doc=('bmp-tf', 'bmp-bad-accepted'))
# Pillow rejects these; TensorFlow returns pixels.
_PILLOW_REJECTS = Case(outcome=WE_FAIL, doc=('bmp-variants',))
SUITE = {
    # PngSuite: against TensorFlow, all exact.
    **{name: Case() for name in (
        'basn0g01.png', 'basn0g02.png', 'basn0g04.png', 'basn0g08.png',
        'basn0g16.png', 'basn2c08.png', 'basn2c16.png', 'basn3p01.png',
        'basn3p04.png', 'basn3p08.png', 'basn4a08.png', 'basn4a16.png',
        'basn6a08.png', 'basn6a16.png', 'ftbbn2c16.png', 'ftbrn2c08.png',
        'ftbwn0g16.png', 'ibasn2c16.png', 'ibasn4a16.png', 'ibasn6a16.png',
        'iftbbn0g02.png', 'iftbbn2c16.png')},
    # BMP Suite: against Pillow, whose reading is ours.
    **{name: _BMP for name in (
        'pal1.bmp', 'pal4.bmp', 'pal4rle.bmp', 'pal4rletrns.bmp', 'pal8os2.bmp',
        'pal8rle.bmp', 'pal8topdown.bmp', 'pal8w125.bmp', 'rgb16-565.bmp',
        'rgb24.bmp', 'rgb32.bmp', 'rgb32fakealpha.bmp', 'rgba32.bmp',
        'rletopdown.bmp')},
    # b/ (bad) files Pillow still reads: what it shows, as we do.
    'badrle.bmp': _BMP_BAD_ACCEPTED,
    'pal8badindex.bmp': _BMP_BAD_ACCEPTED,
    'badbitcount.bmp': _BMP_BAD_HEADER,
    'badheadersize.bmp': _BMP_BAD_HEADER,
    'pal2.bmp': _BMP_BAD_HEADER,
    'rgb24jpeg.bmp': _BMP_BAD_HEADER,
    'rgb24png.bmp': _BMP_BAD_HEADER,
    'shortfile.bmp': _BMP_BAD_HEADER,
    'badwidth.bmp': Case(ref='pillow', outcome=BOTH_FAIL, kind=rec.TOO_LARGE),
    'reallybig.bmp': Case(ref='pillow', outcome=BOTH_FAIL, kind=rec.TOO_LARGE),
    'badpalettesize.bmp': _PILLOW_REJECTS,
    'pal8oversizepal.bmp': _PILLOW_REJECTS,
    'pal8os2v2-16.bmp': _PILLOW_REJECTS,
    'rgb32bf.bmp': _PILLOW_REJECTS,
    'rgb32-111110.bmp': _PILLOW_REJECTS,
    'rgba32abf.bmp': _PILLOW_REJECTS,
}


def _manifest():
  path = os.path.join(SUITE_DIR, 'manifest.tsv')
  entries = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      if line.startswith('#') or line.startswith('file\t'):
        continue
      fields = line.rstrip('\n').split('\t')
      entries[fields[0]] = fields
  return entries


def _require_suite(path):
  if not os.path.isfile(os.path.join(path, 'manifest.tsv')):
    reason = (f'conformance suite not found at {os.path.abspath(path)} '
              '(PngSuite and BMP Suite with manifest.tsv, next to the '
              'repository as shared/conformance)')
    if os.environ.get('CI') == 'true':
      pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope='module')
def suite(tmp_path_factory):
  """name -> bytes, read from a private copy of the read-only suite."""
  _require_suite(SUITE_DIR)
  copy = tmp_path_factory.mktemp('conformance') / 'suite'
  shutil.copytree(SUITE_DIR, copy)
  files = {}
  for name, fields in _manifest().items():
    category = 'bmpsuite' if fields[2] == 'bmp' else fields[2]
    with open(copy / category / name, 'rb') as f:
      data = f.read()
    assert len(data) == int(fields[1]), name
    assert hashlib.sha256(data).hexdigest().startswith(fields[3]), name
    files[name] = data
  return files


# --------------------------------------------------------------------------
# References


@pytest.fixture(scope='module')
def tf():
  import tensorflow  # pylint: disable=import-outside-toplevel
  return tensorflow


def _reference(tf, data, case, size):
  """The reference's pixels, or the exception it raised."""
  try:
    if case.ref == 'nodraft':
      return decode_image(data, DecodeConfig(size=size, draft=False))
    if case.ref == 'pillow':
      return _pillow(data)
    if case.ref == 'accurate' or case.draft > 1:
      out = tf.io.decode_jpeg(data, channels=3, ratio=case.draft,
                              dct_method=('INTEGER_ACCURATE'
                                          if case.ref == 'accurate' else ''))
    else:
      out = tf.io.decode_image(data, channels=3, expand_animations=False)
    return ORIENT[case.orient](out.numpy())
  except Exception as e:  # pylint: disable=broad-except
    return e


def _pillow(data):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(ImageOps.exif_transpose(img).convert('RGB'))


def _native_size(data, draft):
  """The displayed size (what Pillow shows after exif_transpose), divided as
  a JPEG draft divides (rounding up)."""
  try:
    h, w = _pillow(data).shape[:2]
  except Exception:  # pylint: disable=broad-except
    try:
      w, h = Image.open(io.BytesIO(data)).size
    except Exception:  # pylint: disable=broad-except
      return 8, 8
  return -(-w // draft), -(-h // draft)


def _check(tf, data, case):
  size = _native_size(data, case.draft)
  config = DecodeConfig(size=size, draft=case.draft > 1)
  try:
    ours = decode_image(data, config)
  except DecodeError as e:
    ours = e
  ref = _reference(tf, data, case, size)
  ours_ok = isinstance(ours, np.ndarray)
  ref_ok = isinstance(ref, np.ndarray)
  summary = (f'ours: {ours if not ours_ok else ours.shape}, '
             f'{case.ref}: {type(ref).__name__ if not ref_ok else ref.shape}')
  if case.outcome in (BOTH_FAIL, WE_FAIL):
    assert not ours_ok, summary
    assert ours.kind == case.kind, summary
    assert ref_ok == (case.outcome == WE_FAIL), summary
    return
  assert ours_ok, summary
  assert ours.dtype == np.uint8 and ours.shape == (size[1], size[0], 3)
  if case.outcome == REF_FAILS:
    assert not ref_ok, summary
    ref = case.expected if case.expected is not None else _pillow(data)
  elif case.expected is not None:
    assert ref_ok, summary
    ref = case.expected
  else:
    assert ref_ok, summary
  _assert_close(ours, ref, case.tol)
  for other, tol in case.also:
    _assert_close(ours, _reference(tf, data, dataclasses.replace(case, ref=other),
                                   size), tol)


def _assert_close(ours, ref, tol):
  assert isinstance(ref, np.ndarray), ref
  assert ours.shape == ref.shape
  diff = np.abs(ours.astype(int) - ref.astype(int))
  assert diff.max() <= tol, f'max abs diff {diff.max()} > {tol}'


# --------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize('name', sorted(GENERATED))
def test_generated(name, tf):
  data, case = GENERATED[name]
  _check(tf, data, case)


@pytest.mark.parametrize('name', sorted(SUITE))
def test_suite(name, suite, tf):
  _check(tf, suite[name], SUITE[name])


def test_suite_table_covers_the_manifest(suite):
  assert sorted(suite) == sorted(SUITE)


def test_every_difference_is_documented():
  with open(DOCS, encoding='utf-8') as f:
    keys = set(re.findall(r'^#+ .*\{#([a-z0-9-]+)\}', f.read(), re.M))
  cases = [c for _, c in GENERATED.values()] + list(SUITE.values())
  for case in cases:
    # Anything but 'the same as TensorFlow' or 'both fail' is a difference.
    differs = (case.outcome in (WE_FAIL, REF_FAILS) or case.tol or
               case.orient != 1 or case.expected is not None or
               (case.ref != 'tf' and case.outcome == SAME))
    if differs:
      assert case.doc, case
    for key in case.doc:
      assert key in keys, key
  used = {key for c in cases for key in c.doc}
  assert keys == used, f'documented but untested: {keys - used}'


def test_missing_suite_skips_locally_and_fails_in_ci(tmp_path, monkeypatch):
  monkeypatch.delenv('CI', raising=False)
  with pytest.raises(pytest.skip.Exception, match='not found'):
    _require_suite(str(tmp_path))
  monkeypatch.setenv('CI', 'true')
  with pytest.raises(pytest.fail.Exception, match='not found'):
    _require_suite(str(tmp_path))
