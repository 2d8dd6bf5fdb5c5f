"""Decoding conformance: each file decodes as TensorFlow's decode_image does, or
differs as docs/decoding.md says.

Inputs: two public suites (PngSuite, BMP Suite; ``../shared/conformance`` next to
the repository, copied into a temporary folder before reading) and odd files
generated here (every mode Pillow saves, every orientation, truncated streams,
transparency, CMYK/YCCK, 16-bit, interlaced, animations). Each case names its
reference and what is allowed: the reference is ``tf.io.decode_image(channels=3,
expand_animations=False)`` where TensorFlow reads the format, else Pillow
(open, load, exif_transpose, convert('RGB')). Anything but an exact match, or a
failure on both sides, carries the key of the docs/decoding.md entry that
explains it; test_every_difference_is_documented holds the docs to that.

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
import struct
import warnings
import zlib
from typing import Optional

import numpy as np
import pytest
from PIL import Image, ImageOps

from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import DecodeConfig, DecodeError, decode_image
from tests.test_decode import ORIENT, encode, png_chunk, ycck_from_cmyk

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE_DIR = os.path.join(REPO_ROOT, '..', 'shared', 'conformance')
DOCS = os.path.join(REPO_ROOT, 'docs', 'decoding.md')

# Outcomes.
SAME = 'both decode'            # within tol of the reference
BOTH_FAIL = 'both fail'
WE_FAIL = 'we fail, the reference decodes'
REF_FAILS = 'we decode, the reference fails'


@dataclasses.dataclass(frozen=True)
class Case:
  ref: str = 'tf'          # 'tf', 'pillow', 'accurate' (TF's decode_jpeg with
                           # the accurate IDCT), 'nodraft' (ours, no draft)
  outcome: str = SAME
  tol: int = 0             # max abs difference from the reference
  doc: tuple = ()          # docs/decoding.md keys explaining a difference
  orient: int = 1          # EXIF orientation: we apply it, TensorFlow doesn't
  draft: int = 1           # 2, 4, 8: JPEG drafted to 1/draft of the size
  kind: str = rec.DECODE   # our error kind where we fail
  # Where our pixels follow a documented rule instead of the reference (or
  # the reference fails): what they must be.
  expected: Optional[np.ndarray] = None
  also: tuple = ()         # further (ref, tol) that must hold too


# --------------------------------------------------------------------------
# Generated files


def photo(w, h):
  """Smooth with an off-centre block: asymmetric, and JPEG keeps it well."""
  x = np.linspace(0, 1, w)[None, :]
  y = np.linspace(0, 1, h)[:, None]
  arr = np.stack([40 + 180 * x + 0 * y, 30 + 190 * y + 0 * x,
                  128 + 60 * np.sin(6 * x + 4 * y)], -1)
  arr[h // 4:h // 2, w // 5:w // 2] = (230, 30, 60)
  return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def noise(w, h, channels=3, seed=0):
  arr = np.random.default_rng(seed).integers(0, 256, (h, w, channels), np.uint8)
  return arr[..., 0] if channels == 1 else arr


def exif(orientation):
  tags = Image.Exif()
  tags[0x0112] = orientation
  return tags


def png(w, h, colour_type, depth, raw, interlace=0):
  return (b'\x89PNG\r\n\x1a\n' +
          png_chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, depth, colour_type,
                                         0, 0, interlace)) +
          png_chunk(b'IDAT', zlib.compress(raw)) + png_chunk(b'IEND', b''))


def rows(arr):
  return b''.join(b'\x00' + row.tobytes() for row in arr)


def adam7(arr):
  """Adam7-interlaced scanlines (filter 0), which Pillow cannot write."""
  out = b''
  for y0, x0, dy, dx in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4),
                         (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)):
    sub = arr[y0::dy, x0::dx]
    if sub.size:
      out += rows(sub)
  return out


def gif_first_frame_at(data, screen, offset):
  """The GIF with a larger logical screen and its first frame moved."""
  data = bytearray(data)
  data[6:10] = struct.pack('<HH', *screen)
  flags = data[10]
  desc = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
  while data[desc] == 0x21:                   # extension blocks
    pos = desc + 2
    while data[pos]:
      pos += data[pos] + 1
    desc = pos + 1
  assert data[desc] == 0x2C
  data[desc + 1:desc + 5] = struct.pack('<HH', *offset)
  return bytes(data)


def idat(data):
  at = data.find(b'IDAT')
  return at + 4, struct.unpack('>I', data[at - 4:at])[0]


def _generated():
  """name -> (bytes, Case)."""
  cases = {}
  P = photo(64, 48)
  N = noise(12, 8)
  jpeg = dict(ref='tf', tol=4, doc=('jpeg-idct',), also=(('accurate', 0),))

  # JPEG: layouts, colour spaces, drafts.
  jpegs = {
      'jpeg_420': encode(Image.fromarray(P), 'JPEG', quality=90),
      'jpeg_422': encode(Image.fromarray(P), 'JPEG', quality=90, subsampling=1),
      'jpeg_444': encode(Image.fromarray(P), 'JPEG', quality=90, subsampling=0),
      'jpeg_progressive': encode(Image.fromarray(P), 'JPEG', quality=90,
                                 progressive=True),
      'jpeg_restarts': encode(Image.fromarray(P), 'JPEG', quality=90,
                              restart_marker_blocks=1),
      'jpeg_L': encode(Image.fromarray(P).convert('L'), 'JPEG', quality=90),
      'jpeg_1': encode(Image.fromarray(P).convert('1'), 'JPEG', quality=90),
      'jpeg_RGBX': encode(Image.fromarray(P).convert('RGBX'), 'JPEG',
                          quality=90),
      'jpeg_YCbCr': encode(Image.fromarray(P).convert('YCbCr'), 'JPEG',
                           quality=90),
  }
  for name, data in jpegs.items():
    # A bilevel image's sharp edges ring most: the IDCTs differ by up to 6.
    cases[name] = data, Case(**dict(jpeg, tol=6 if name == 'jpeg_1' else 4))
    for n in (2, 4, 8):
      # At 1/4 and 1/8 libjpeg's scaled IDCTs are one method: exact.
      cases[f'{name}@1/{n}'] = data, Case(
          **dict(jpeg, draft=n, tol=4 if n == 2 else 0))
  cmyk = np.dstack([P, 255 - P[..., :1]])
  for name, data in (
      ('jpeg_CMYK', encode(Image.fromarray(cmyk, 'CMYK'), 'JPEG', quality=90)),
      ('jpeg_YCCK', ycck_from_cmyk(cmyk, quality=90))):
    # TensorFlow converts CMYK with a floor, Pillow rounds: one more level.
    cases[name] = data, Case(ref='tf', tol=5, doc=('jpeg-idct',),
                             also=(('accurate', 1),))
    for n in (2, 4, 8):
      cases[f'{name}@1/{n}'] = data, Case(ref='nodraft', draft=n,
                                          doc=('cmyk-draft',))
  for o in range(1, 9):
    data = encode(Image.fromarray(P), 'JPEG', quality=90, exif=exif(o))
    doc = ('jpeg-idct',) + (('orientation',) if o > 1 else ())
    cases[f'jpeg_orientation{o}'] = data, Case(**dict(jpeg, orient=o, doc=doc))
    cases[f'jpeg_orientation{o}@1/2'] = data, Case(
        **dict(jpeg, orient=o, draft=2, doc=doc))
  full = jpegs['jpeg_420']
  cases['jpeg_cut_half'] = full[:len(full) // 2], Case(outcome=BOTH_FAIL)
  cases['jpeg_no_eoi'] = full[:-2], Case(outcome=BOTH_FAIL)
  cases['jpeg_cut_half@1/8'] = full[:len(full) // 2], Case(outcome=BOTH_FAIL,
                                                           draft=8)

  # PNG: every colour type and depth Pillow writes, plus hand-made ones.
  rgba = Image.fromarray(noise(12, 8, 4, seed=3), 'RGBA')
  for mode in ('1', 'L', 'LA', 'P', 'RGB', 'RGBA'):
    cases[f'png_{mode}'] = encode(rgba.convert(mode), 'PNG'), Case()
  g16 = (noise(12, 8, 1, seed=4).astype(np.uint16) * 257 +
         noise(12, 8, 1, seed=5))
  cases['png_I;16'] = encode(Image.fromarray(g16), 'PNG'), Case()
  cases['png_I;16B'] = (encode(Image.fromarray(g16).convert('I;16B'), 'PNG'),
                        Case())
  for name, colour_type, channels in (('png_RGB16', 2, 3), ('png_RGBA16', 6, 4),
                                      ('png_LA16', 4, 2)):
    arr = np.random.default_rng(colour_type).integers(
        0, 65536, (8, 12, channels)).astype('>u2')
    cases[name] = png(12, 8, colour_type, 16, rows(arr)), Case()
  pal = Image.new('P', (4, 2), 0)
  pal.putpalette([200, 100, 50, 10, 20, 30, 90, 180, 40] + [0] * 759)
  pal.putpixel((1, 0), 1)
  pal.putpixel((2, 1), 2)
  cases['png_P_transparent'] = encode(pal, 'PNG', transparency=0), Case()
  cases['png_P_alpha_table'] = (encode(pal, 'PNG',
                                       transparency=bytes([0, 128, 255])),
                                Case())
  clear = noise(6, 4, 4, seed=11)
  clear[..., 3] = np.array([0, 128, 255, 0, 0, 255])[None, :]
  cases['png_RGBA_transparent'] = (encode(Image.fromarray(clear, 'RGBA'), 'PNG'),
                                   Case())
  cases['png_interlaced'] = (png(13, 11, 2, 8, adam7(noise(13, 11, seed=9)),
                                 interlace=1), Case())
  g16i = np.random.default_rng(10).integers(0, 65536, (11, 13)).astype('>u2')
  cases['png_interlaced_16'] = png(13, 11, 0, 16, adam7(g16i), 1), Case()
  for o in range(1, 9):
    cases[f'png_orientation{o}'] = (
        encode(Image.fromarray(N), 'PNG', exif=exif(o)),
        Case(orient=o, doc=('orientation',) if o > 1 else ()))
  frames = [Image.fromarray(noise(12, 8, seed=s)) for s in (20, 21)]
  cases['png_animated'] = (encode(frames[0], 'PNG', save_all=True,
                                  append_images=frames[1:], duration=50),
                           Case())
  whole = encode(Image.fromarray(noise(64, 48, seed=2)), 'PNG')
  start, length = idat(whole)
  cases['png_cut_half'] = whole[:len(whole) // 2], Case(outcome=BOTH_FAIL)
  cases['png_cut_in_adler32'] = (whole[:start + length - 2],
                                 Case(outcome=BOTH_FAIL))
  cases['png_no_iend'] = whole[:-12], Case(outcome=BOTH_FAIL)
  flipped = bytearray(whole)
  flipped[start + length // 2] ^= 0x10
  cases['png_bit_flip'] = bytes(flipped), Case(outcome=BOTH_FAIL)
  bad_crc = bytearray(whole)
  bad_crc[start + length] ^= 0xFF
  cases['png_bad_crc_only'] = bytes(bad_crc), Case(
      outcome=REF_FAILS, doc=('png-crc',), expected=noise(64, 48, seed=2))
  cases['png_bytes_after_iend'] = whole + b'appended by a tool', Case()

  # GIF.
  for mode in ('1', 'L', 'P', 'RGB', 'RGBA'):
    cases[f'gif_{mode}'] = encode(rgba.convert(mode), 'GIF'), Case()
  cases['gif_transparent'] = encode(pal, 'GIF', transparency=0), Case()
  grey = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), 'L')
  cases['gif_L_transparent'] = encode(grey, 'GIF', transparency=60), Case()
  anim = [Image.fromarray(noise(10, 6, seed=s)).quantize(16) for s in (12, 13)]
  cases['gif_animated'] = (encode(anim[0], 'GIF', save_all=True,
                                  append_images=anim[1:], duration=50, loop=0),
                           Case())
  cases['gif_animated_transparent'] = (
      encode(pal, 'GIF', save_all=True, append_images=[pal.rotate(180)],
             transparency=0, duration=50, disposal=2), Case())
  # First frame 2x2 at (1, 1) on a 4x3 screen, colour 0 transparent.
  small = Image.new('P', (2, 2), 1)
  small.putpalette([200, 100, 50, 10, 20, 30] + [0] * 762)
  shifted = np.zeros((3, 4, 3), np.uint8)
  shifted[1:3, 1:3] = (10, 20, 30)
  cases['gif_small_first_frame'] = (
      gif_first_frame_at(encode(small, 'GIF', transparency=0, optimize=False),
                         (4, 3), (1, 1)),
      Case(doc=('gif-small-frame',), expected=shifted))
  gif = encode(Image.fromarray(noise(64, 48, seed=14)).quantize(256), 'GIF')
  cases['gif_cut_half'] = gif[:len(gif) // 2], Case(outcome=BOTH_FAIL)
  cases['gif_no_trailer'] = gif[:-1], Case()

  # BMP: TensorFlow reads palette BMPs as grey indices; Pillow is the reference.
  for mode in ('1', 'L', 'P', 'RGB', 'RGBA'):
    cases[f'bmp_{mode}'] = (encode(rgba.convert(mode), 'BMP'),
                            Case(ref='pillow', doc=('bmp-tf',)))

  # WebP.
  cases['webp_lossy'] = (encode(Image.fromarray(P), 'WEBP', quality=90),
                         Case())
  cases['webp_lossless'] = (encode(Image.fromarray(N), 'WEBP', lossless=True),
                            Case())
  for name, kw in (('webp_RGBA_exact', dict(lossless=True, exact=True)),
                   ('webp_RGBA', dict(lossless=True)),
                   ('webp_RGBA_lossy', dict(quality=90))):
    cases[name] = (encode(Image.fromarray(clear, 'RGBA'), 'WEBP', **kw),
                   Case(outcome=REF_FAILS, doc=('webp-alpha',)))
  for mode in ('1', 'L', 'LA', 'P', 'PA', 'I;16', 'CMYK', 'YCbCr', 'HSV'):
    data = encode(rgba.convert(mode), 'WEBP', lossless=True)
    alpha = Image.open(io.BytesIO(data)).mode == 'RGBA'
    cases[f'webp_{mode}'] = data, (Case(outcome=REF_FAILS,
                                        doc=('webp-alpha',))
                                   if alpha else Case())
  for o in range(1, 9):
    cases[f'webp_orientation{o}'] = (
        encode(Image.fromarray(N), 'WEBP', lossless=True, exif=exif(o)),
        Case(orient=o, doc=('orientation',) if o > 1 else ()))
  cases['webp_animated'] = (encode(frames[0], 'WEBP', save_all=True,
                                   append_images=frames[1:], lossless=True,
                                   duration=50),
                            Case(outcome=REF_FAILS, doc=('webp-alpha',)))
  lossy = encode(Image.fromarray(photo(64, 48)), 'WEBP', quality=90)
  cases['webp_cut_half'] = lossy[:len(lossy) // 2], Case(outcome=BOTH_FAIL)

  # TIFF: TensorFlow has no TIFF decoder; Pillow is the reference.
  tiff = dict(outcome=REF_FAILS, doc=('tf-no-tiff',))
  for mode in ('1', 'L', 'LA', 'P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK',
               'LAB'):
    cases[f'tiff_{mode}'] = encode(rgba.convert(mode), 'TIFF'), Case(**tiff)
  # Pillow writes YCbCr TIFFs it cannot read back (3-byte samples, RGBX tile).
  cases['tiff_YCbCr'] = (encode(rgba.convert('YCbCr'), 'TIFF'),
                         Case(ref='pillow', outcome=BOTH_FAIL))
  wide_tiff = dict(outcome=REF_FAILS, doc=('tf-no-tiff', 'wide-samples'))
  for mode, dtype in (('I;16', '<u2'), ('I;16B', '>u2')):
    # frombytes: Pillow's convert('I;16B') clips to 8 bits.
    img = Image.frombytes(mode, (12, 8), g16.astype(dtype).tobytes())
    cases[f'tiff_{mode}'] = (encode(img, 'TIFF'),
                             Case(**wide_tiff, expected=grey3(g16 >> 8)))
  wide = g16.astype(np.int32)
  cases['tiff_I'] = (encode(Image.fromarray(wide, 'I'), 'TIFF'),
                     Case(**wide_tiff, expected=grey3(wide >> 8)))
  unit = noise(12, 8, 1, seed=6).astype(np.float32) / 255
  cases['tiff_F'] = (encode(Image.fromarray(unit), 'TIFF'),
                     Case(**wide_tiff, expected=grey3(np.rint(unit * 255))))
  for compression in ('tiff_lzw', 'tiff_adobe_deflate', 'packbits'):
    cases[f'tiff_{compression}'] = (
        encode(Image.fromarray(N), 'TIFF', compression=compression),
        Case(**tiff))
  cases['tiff_jpeg'] = (encode(Image.fromarray(P), 'TIFF', compression='jpeg'),
                        Case(**tiff))
  for o in range(1, 9):
    for compression in (None, 'tiff_lzw'):
      suffix = '_lzw' if compression else ''
      cases[f'tiff_orientation{o}{suffix}'] = (
          encode(Image.fromarray(N), 'TIFF', exif=exif(o),
                 compression=compression),
          Case(**tiff, expected=ORIENT[o](N)))
  tif = encode(Image.fromarray(noise(64, 48, seed=15)), 'TIFF')
  cases['tiff_cut_half'] = (tif[:len(tif) // 2],
                            Case(ref='pillow', outcome=BOTH_FAIL))
  return cases


def grey3(arr):
  return np.repeat(np.clip(arr, 0, 255).astype(np.uint8)[..., None], 3, -1)


with warnings.catch_warnings():
  warnings.simplefilter('ignore')
  GENERATED = _generated()


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
