"""The conformance cases that tests/test_conformance.py runs: what a case may
give (Case, the outcomes), and the odd files generated here with theirs.
"""
import dataclasses
import io
import struct
import warnings
import zlib
from typing import Optional

import numpy as np
from PIL import Image

from ev_predict.transforms import record as rec
from tests.decode_helpers import ORIENT, encode, png_chunk, ycck_from_cmyk

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
