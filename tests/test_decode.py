"""transforms.decode: encoded bytes -> uint8 RGB pixels, and its error kinds.

Every input is built here, in memory, with Pillow/numpy/zlib. Lossless formats
are compared pixel for pixel; lossy ones (JPEG) against the source within a
tight tolerance.
"""
import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin

from ev_predict.transforms import decode
from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import (DecodeConfig, DecodeError, check_image,
                               decode_image, prepare_record, to_rgb)
from ev_predict.transforms.record import Record


# --------------------------------------------------------------------------
# Builders


def encode(img, fmt, **kw):
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def exact(size):
  """Config for exact comparisons: no draft, size equals the image's."""
  return DecodeConfig(size=size, draft=False)


def random_rgb(w, h, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def smooth_rgb(w, h):
  """A gradient JPEG compresses almost losslessly: good for tolerances."""
  x = np.linspace(0, 1, w)[None, :]
  y = np.linspace(0, 1, h)[:, None]
  r = 40 + 180 * x + 0 * y
  g = 30 + 190 * y + 0 * x
  b = 128 + 60 * np.sin(3 * x + 2 * y)
  return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def blocks_rgb(cols, rows, block):
  """cols x rows solid blocks of distinct colours, block px each."""
  rng = np.random.default_rng(7)
  colours = rng.integers(0, 256, (rows, cols, 3), np.uint8)
  # Keep the colours far apart so a lossy codec cannot blur one into another.
  colours = (colours // 64) * 64 + 32
  return np.kron(colours, np.ones((block, block, 1), np.uint8)), colours


def png_chunk(kind, data):
  return (struct.pack('>I', len(data)) + kind + data +
          struct.pack('>I', zlib.crc32(kind + data)))


@pytest.fixture(scope='module')
def png_bomb():
  """A real 30000x30000 1-bit PNG (900 Mpixels) of ~100 KB, built row by row
  so the test never holds the pixels (Image.new would allocate 900 MB)."""
  w = h = 30000
  row = b'\x00' * (1 + (w + 7) // 8)         # filter byte + packed bits
  comp = zlib.compressobj(9)
  idat = b''.join([comp.compress(row) for _ in range(h)] + [comp.flush()])
  data = (b'\x89PNG\r\n\x1a\n' +
          png_chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0)) +
          png_chunk(b'IDAT', idat) + png_chunk(b'IEND', b''))
  assert len(data) < 1_000_000
  return data


@pytest.fixture(scope='module')
def gif_bomb():
  """A GIF whose screen and frame both claim 30000x30000."""
  data = bytearray(encode(Image.new('P', (1, 1)), 'GIF'))
  assert data[:6] == b'GIF89a' or data[:6] == b'GIF87a'
  data[6:10] = struct.pack('<HH', 30000, 30000)       # logical screen
  flags = data[10]
  desc = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
  while data[desc] == 0x21:                           # skip extension blocks
    pos = desc + 2
    while data[pos]:
      pos += data[pos] + 1
    desc = pos + 1
  assert data[desc] == 0x2C                           # image descriptor
  data[desc + 5:desc + 9] = struct.pack('<HH', 30000, 30000)
  return bytes(data)


# --------------------------------------------------------------------------
# Formats


def test_png_rgb_is_exact():
  arr = random_rgb(13, 7)
  out = decode_image(encode(Image.fromarray(arr), 'PNG'), exact((13, 7)))
  assert out.dtype == np.uint8 and out.shape == (7, 13, 3)
  np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize('progressive', [False, True])
def test_jpeg_baseline_and_progressive(progressive):
  arr = smooth_rgb(64, 48)
  data = encode(Image.fromarray(arr), 'JPEG', quality=95,
                progressive=progressive, subsampling=0)
  assert bool(Image.open(io.BytesIO(data)).info.get('progressive')) == \
      progressive
  out = decode_image(data, exact((64, 48)))
  assert out.shape == (48, 64, 3) and out.dtype == np.uint8
  diff = np.abs(out.astype(int) - arr.astype(int))
  assert diff.mean() < 1.5 and diff.max() <= 8


def test_cmyk_jpeg_becomes_rgb():
  # Pure cyan, magenta, yellow, black quadrants; Pillow writes Adobe CMYK.
  cmyk = np.zeros((16, 16, 4), np.uint8)
  cmyk[:8, :8, 0] = 255
  cmyk[:8, 8:, 1] = 255
  cmyk[8:, :8, 2] = 255
  cmyk[8:, 8:, 3] = 255
  data = encode(Image.fromarray(cmyk, 'CMYK'), 'JPEG', quality=100)
  assert Image.open(io.BytesIO(data)).mode == 'CMYK'
  out = decode_image(data, exact((16, 16))).astype(int)
  expected = {(2, 2): (0, 255, 255), (2, 13): (255, 0, 255),
              (13, 2): (255, 255, 0), (13, 13): (0, 0, 0)}
  for (y, x), rgb in expected.items():
    assert np.abs(out[y, x] - rgb).max() <= 6, ((y, x), out[y, x])


def _cmyk_stripes(w, h):
  # Columns alternate (C, K) = (255, 0) and (0, 255): red is 0 in every pixel,
  # but averaging C and K first (what a DCT-scaled decode does) gives about
  # (255 - 128) * (255 - 128) / 255 = 63.
  cmyk = np.zeros((h, w, 4), np.uint8)
  cmyk[:, 0::2, 0] = 255
  cmyk[:, 1::2, 3] = 255
  cmyk[:, :, 2] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
  return cmyk


@pytest.mark.parametrize('adobe_transform', [0, 2])
def test_cmyk_and_ycck_jpeg_draft_equals_full_decode(adobe_transform):
  data = encode(Image.fromarray(_cmyk_stripes(256, 64), 'CMYK'), 'JPEG',
                quality=95, subsampling=0)
  if adobe_transform == 2:
    data = ycck_from_cmyk(_cmyk_stripes(256, 64))
  opened = Image.open(io.BytesIO(data))
  assert opened.mode == 'CMYK'
  assert opened.info['adobe_transform'] == adobe_transform
  # The file holds the stripes (the builder is right), within JPEG's loss.
  diff = np.asarray(opened).astype(int) - _cmyk_stripes(256, 64)
  assert np.abs(diff).max() <= 12
  for size in ((32, 8), (64, 16), (128, 32)):       # 1/8, 1/4, 1/2
    drafted = decode_image(data, DecodeConfig(size=size, draft=True))
    full = decode_image(data, DecodeConfig(size=size, draft=False))
    np.testing.assert_array_equal(drafted, full)
    assert full[..., 0].max() <= 40, size          # red stays near 0


def ycck_from_cmyk(cmyk, quality=95):
  """A YCCK JPEG (Adobe transform 2) of a CMYK image. Pillow writes only
  CMYK, as inverted samples: handing it (Y, Cb, Cr, K) of the inverted CMY,
  inverted once more, and flipping the APP14 transform flag gives exactly
  what a YCCK encoder writes. (libjpeg turns YCC into RGB and outputs
  255 - RGB with K as stored; Adobe's samples are inverted, so YCC carries
  the CMY values themselves and K is stored inverted.)"""
  cmy = cmyk.astype(np.float64)
  r, g, b = cmy[..., 0], cmy[..., 1], cmy[..., 2]
  y = 0.299 * r + 0.587 * g + 0.114 * b
  cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
  cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
  ycck = np.stack([y, cb, cr, 255 - cmy[..., 3]], -1)
  ycck = np.clip(np.rint(ycck), 0, 255).astype(np.uint8)
  data = bytearray(encode(Image.fromarray(255 - ycck, 'CMYK'), 'JPEG',
                          quality=quality, subsampling=0))
  app14 = data.find(b'Adobe') - 4                # FF EE, length, 'Adobe'
  assert app14 > 0 and data[app14:app14 + 2] == b'\xff\xee'
  assert data[app14 + 15] == 0
  data[app14 + 15] = 2                           # the transform byte
  return bytes(data)


def test_png_grayscale_l_is_replicated_to_three_channels():
  arr = np.array([[0, 1, 127], [128, 254, 255]], np.uint8)
  out = decode_image(encode(Image.fromarray(arr, 'L'), 'PNG'), exact((3, 2)))
  np.testing.assert_array_equal(out, np.repeat(arr[..., None], 3, -1))


def test_png_rgba_drops_alpha_without_compositing():
  arr = np.array([[[10, 20, 30, 0], [200, 100, 50, 128]],
                  [[1, 2, 3, 255], [255, 255, 255, 0]]], np.uint8)
  out = decode_image(encode(Image.fromarray(arr, 'RGBA'), 'PNG'),
                     exact((2, 2)))
  np.testing.assert_array_equal(out, arr[..., :3])
  assert tuple(out[0, 0]) == (10, 20, 30)


def test_png_la_drops_alpha():
  arr = np.array([[[77, 0], [200, 255]]], np.uint8)
  out = decode_image(encode(Image.fromarray(arr, 'LA'), 'PNG'), exact((2, 1)))
  np.testing.assert_array_equal(out, [[[77] * 3, [200] * 3]])


def test_png_palette_with_transparency_keeps_palette_colours():
  img = Image.new('P', (3, 1), 0)
  img.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9))
  img.putpixel((1, 0), 1)
  img.putpixel((2, 0), 2)
  data = encode(img, 'PNG', transparency=0)   # index 0 fully transparent
  opened = Image.open(io.BytesIO(data))
  assert opened.mode == 'P' and 'transparency' in opened.info
  out = decode_image(data, exact((3, 1)))
  np.testing.assert_array_equal(out, [[[10, 20, 30], [200, 100, 50],
                                       [0, 255, 0]]])


def test_png_palette_with_alpha_table():
  img = Image.new('P', (2, 1), 0)
  img.putpalette([90, 80, 70, 5, 6, 7] + [0] * (256 * 3 - 6))
  img.putpixel((1, 0), 1)
  out = decode_image(encode(img, 'PNG', transparency=bytes([0, 128])),
                     exact((2, 1)))
  np.testing.assert_array_equal(out, [[[90, 80, 70], [5, 6, 7]]])


def test_png_16bit_grayscale_is_scaled_not_clipped():
  arr = np.array([[0, 257, 32896, 65535, 1000]], np.uint16)
  img = Image.fromarray(arr)
  data = encode(img, 'PNG')
  assert Image.open(io.BytesIO(data)).mode.startswith('I')
  out = decode_image(data, exact((5, 1)))
  assert out.dtype == np.uint8
  # The high byte, as TensorFlow's decode_png gives (1000 -> 3, not 4).
  np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255, 3])
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_png_16bit_dark_image_is_still_scaled():
  # All samples < 1024 is a nearly black 16-bit image, not an 8-bit one.
  arr = np.array([[0, 100, 255, 256, 1000]], np.uint16)
  out = decode_image(encode(Image.fromarray(arr), 'PNG'), exact((5, 1)))
  np.testing.assert_array_equal(out[0, :, 0], [0, 0, 0, 1, 3])


def test_gif_animated_uses_first_frame():
  first = Image.new('RGB', (6, 4), (255, 0, 0))
  second = Image.new('RGB', (6, 4), (0, 0, 255))
  data = encode(first, 'GIF', save_all=True, append_images=[second],
                duration=100, loop=0)
  assert Image.open(io.BytesIO(data)).n_frames == 2
  out = decode_image(data, exact((6, 4)))
  assert (out == np.array([255, 0, 0], np.uint8)).all()


def test_gif_transparent_pixels_are_black_as_in_tensorflow():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  img = Image.new('P', (4, 2), 0)
  img.putpalette([200, 100, 50, 10, 20, 30, 90, 180, 40] + [0] * 759)
  img.putpixel((1, 0), 1)
  img.putpixel((2, 1), 2)
  data = encode(img, 'GIF', transparency=0)
  out = decode_image(data, exact((4, 2)))
  expected = tf.io.decode_image(data, channels=3,
                                expand_animations=False).numpy()
  np.testing.assert_array_equal(out, expected)
  # Not vacuous: TensorFlow's black is not the palette colour.
  assert tuple(out[0, 0]) == (0, 0, 0)
  assert tuple(out[0, 1]) == (10, 20, 30) and tuple(out[1, 2]) == (90, 180, 40)


def test_gif_transparency_on_a_grey_gif():
  # Pillow opens a GIF with the full grey palette as 'L'; index = value.
  arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
  data = encode(Image.fromarray(arr, 'L'), 'GIF', transparency=60)
  opened = Image.open(io.BytesIO(data))
  assert opened.mode == 'L' and opened.info['transparency'] == 60
  out = decode_image(data, exact((16, 16)))
  expected = np.where(arr == 60, 0, arr)
  np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, -1))


def test_bmp_is_exact():
  arr = random_rgb(5, 3, seed=1)
  out = decode_image(encode(Image.fromarray(arr), 'BMP'), exact((5, 3)))
  np.testing.assert_array_equal(out, arr)


def test_webp_lossless_is_exact_and_alpha_dropped():
  arr = random_rgb(9, 6, seed=2)
  np.testing.assert_array_equal(
      decode_image(encode(Image.fromarray(arr), 'WEBP', lossless=True),
                   exact((9, 6))), arr)
  rgba = np.dstack([arr, np.zeros((6, 9), np.uint8) + 50])
  out = decode_image(encode(Image.fromarray(rgba, 'RGBA'), 'WEBP',
                            lossless=True, exact=True), exact((9, 6)))
  np.testing.assert_array_equal(out, arr)


def test_tiff_rgb_is_exact():
  arr = random_rgb(7, 5, seed=3)
  out = decode_image(encode(Image.fromarray(arr), 'TIFF'), exact((7, 5)))
  np.testing.assert_array_equal(out, arr)


def test_tiff_float_0_to_1_is_scaled_by_255():
  arr = np.array([[0.0, 0.2, 0.5, 1.0]], np.float32)
  img = Image.fromarray(arr)
  assert img.mode == 'F'
  out = decode_image(encode(img, 'TIFF'), exact((4, 1)))
  np.testing.assert_array_equal(out[0, :, 0], [0, 51, 128, 255])
  assert (out[..., 0] == out[..., 2]).all()


def test_tiff_16bit_is_scaled():
  arr = np.array([[0, 32896, 65535]], np.uint16)
  out = decode_image(encode(Image.fromarray(arr), 'TIFF'), exact((3, 1)))
  np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize('fmt', ['PNG', 'JPEG', 'GIF', 'BMP', 'WEBP', 'TIFF'])
def test_one_pixel_image(fmt):
  img = Image.new('RGB', (1, 1), (200, 40, 90))
  out = decode_image(encode(img, fmt), exact((1, 1)))
  assert out.shape == (1, 1, 3) and out.dtype == np.uint8
  tol = 0 if fmt in ('PNG', 'BMP', 'TIFF') else 12
  assert np.abs(out[0, 0].astype(int) - (200, 40, 90)).max() <= tol


def test_one_pixel_image_upscaled_is_solid():
  img = Image.new('RGB', (1, 1), (200, 40, 90))
  out = decode_image(encode(img, 'PNG'), exact((5, 3)))
  assert out.shape == (3, 5, 3)
  assert (out == np.array([200, 40, 90], np.uint8)).all()


# --------------------------------------------------------------------------
# to_rgb directly


@pytest.mark.parametrize('mode,value,expected', [
    ('1', 1, (255, 255, 255)),
    ('L', 33, (33, 33, 33)),
    ('RGBA', (1, 2, 3, 0), (1, 2, 3)),
    ('LA', (9, 0), (9, 9, 9)),
    ('I', 65535, (255, 255, 255)),      # 32-bit 'I' holding 16-bit samples
    ('I', 200, (200, 200, 200)),        # 32-bit 'I' holding 8-bit samples
    ('I;16', 200, (0, 0, 0)),           # 16-bit: the high byte
    ('I;16', 300, (1, 1, 1)),
    ('F', 0.5, (128, 128, 128)),
    ('F', 200.0, (200, 200, 200)),      # floats > 1 are taken as 0..255
])
def test_to_rgb_modes(mode, value, expected):
  out = to_rgb(Image.new(mode, (2, 2), value))
  assert out.mode == 'RGB' and out.size == (2, 2)
  assert out.getpixel((1, 1)) == expected


def test_to_rgb_rgb_is_identity():
  img = Image.new('RGB', (2, 2), (1, 2, 3))
  assert to_rgb(img) is img


def test_to_rgb_pa_drops_alpha():
  img = Image.new('PA', (1, 1), (1, 0))
  img.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
  assert to_rgb(img).getpixel((0, 0)) == (30, 60, 90)


# --------------------------------------------------------------------------
# EXIF orientation


# What a viewer shows for each orientation, as numpy operations on [h, w].
ORIENT = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.transpose(a, (1, 0, 2)),
    6: lambda a: np.rot90(a, -1),     # stored rotated: turn 90 deg clockwise
    7: lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2),
    8: lambda a: np.rot90(a, 1),
}


def with_orientation(n):
  exif = Image.Exif()
  exif[0x0112] = n
  return exif


@pytest.mark.parametrize('orientation', range(1, 9))
@pytest.mark.parametrize('fmt,kw', [
    ('PNG', {}), ('WEBP', {'lossless': True}),
    # Pillow >= 12 turns TIFFs itself inside load() (both its own decoder and
    # libtiff's, which LZW uses): turning again was 180 degrees off.
    ('TIFF', {}), ('TIFF', {'compression': 'tiff_lzw'})])
def test_exif_orientation_lossless(orientation, fmt, kw):
  arr = random_rgb(4, 2, seed=orientation)    # 8 distinct pixels, asymmetric
  assert len({tuple(p) for p in arr.reshape(-1, 3)}) == 8
  data = encode(Image.fromarray(arr), fmt, exif=with_orientation(orientation),
                **kw)
  expected = ORIENT[orientation](arr)
  # Cross-check the table against Pillow's own notion of the transform.
  via_pillow = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
                          .convert('RGB'))
  np.testing.assert_array_equal(via_pillow, expected)
  h, w = expected.shape[:2]
  assert (w, h) == ((2, 4) if orientation >= 5 else (4, 2))
  out = decode_image(data, exact((w, h)))
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('orientation', range(1, 9))
@pytest.mark.parametrize('draft', [False, True])
def test_exif_orientation_jpeg(orientation, draft):
  arr, colours = blocks_rgb(3, 2, 16)         # 48x32, 6 solid 16px blocks
  data = encode(Image.fromarray(arr), 'JPEG', quality=95, subsampling=0,
                exif=with_orientation(orientation))
  expected = ORIENT[orientation](colours)     # one entry per block
  rows, cols = expected.shape[:2]
  # Without draft decode at full size; with draft at half size, which the
  # JPEG decoder produces itself (DCT scaling 1/2), so no resize blurs blocks.
  block = 8 if draft else 16
  out = decode_image(data, DecodeConfig(size=(cols * block, rows * block),
                                        draft=draft))
  assert out.shape == (rows * block, cols * block, 3)
  centres = out[block // 2::block, block // 2::block]
  assert np.abs(centres.astype(int) - expected.astype(int)).max() <= 10


def test_exif_orientation_out_of_range_is_ignored():
  arr = random_rgb(4, 2, seed=11)
  for value in (0, 9, 300):
    data = encode(Image.fromarray(arr), 'PNG', exif=with_orientation(value))
    np.testing.assert_array_equal(decode_image(data, exact((4, 2))), arr)


@pytest.mark.filterwarnings('ignore:Corrupt EXIF data:UserWarning')
@pytest.mark.parametrize('garbage', [
    b'Exif\x00\x00' + b'\xde\xad\xbe\xef' * 8,          # not a TIFF header
    b'Exif\x00\x00MM\x00\x2a\x00\x00\xff\xf0',          # IFD offset past end
    b'Exif\x00\x00II\x2a\x00\x08\x00\x00\x00\xff\xff',  # truncated IFD
])
def test_corrupt_exif_still_decodes(garbage):
  arr, _ = blocks_rgb(2, 2, 8)
  data = encode(Image.fromarray(arr), 'JPEG', quality=95, subsampling=0,
                exif=garbage)
  assert garbage in data
  out = decode_image(data, exact((16, 16)))
  assert np.abs(out.astype(int) - arr.astype(int)).max() <= 10


def test_corrupt_exif_orientation_lookup_failure_is_swallowed(monkeypatch):
  # Whatever getexif raises, the image is classified as stored.
  def broken(self):
    raise SyntaxError('bad exif')
  monkeypatch.setattr(Image.Image, 'getexif', broken)
  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'getexif', broken,
                      raising=False)
  arr, _ = blocks_rgb(2, 2, 8)
  data = encode(Image.fromarray(arr), 'JPEG', quality=95, subsampling=0)
  out = decode_image(data, exact((16, 16)))
  assert np.abs(out.astype(int) - arr.astype(int)).max() <= 10


# --------------------------------------------------------------------------
# Errors


def expect_error(data, kind, config=None):
  with pytest.raises(DecodeError) as info:
    decode_image(data, config or DecodeConfig(size=(8, 8)))
  assert info.value.kind == kind, str(info.value)
  assert kind in rec.ERROR_KINDS
  return str(info.value)


def test_zero_bytes():
  assert 'empty' in expect_error(b'', rec.DECODE)


def test_text_is_not_an_image():
  # Named .jpg upstream; the name does not matter, only the bytes.
  msg = expect_error(b'this is just a note, saved as photo.jpg\n', rec.DECODE)
  assert 'text' in msg


@pytest.mark.parametrize('svg', [
    b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns='
    b'"http://www.w3.org/2000/svg" width="10" height="10"/>',
    b'  \n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
    b'<rect width="4" height="4"/></svg>',
])
def test_svg_is_rejected_by_name(svg):
  assert 'SVG' in expect_error(svg, rec.DECODE)


def test_heic_is_rejected_by_name():
  data = struct.pack('>I', 24) + b'ftypheic' + b'\x00' * 40
  assert 'HEIC' in expect_error(data, rec.DECODE)


def test_unknown_binary():
  assert 'unknown format' in expect_error(bytes(range(255, -1, -1)), rec.DECODE)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_truncated_image_fails_instead_of_padding(fmt):
  arr = random_rgb(64, 48, seed=4)
  data = encode(Image.fromarray(arr), fmt, **({'quality': 90}
                                              if fmt == 'JPEG' else {}))
  cut = data[:len(data) // 2]
  assert Image.open(io.BytesIO(cut)).size == (64, 48)   # header survives
  expect_error(cut, rec.DECODE, exact((64, 48)))
  expect_error(cut, rec.DECODE, DecodeConfig(size=(8, 6), draft=True))


@pytest.mark.parametrize('fraction', [0.1, 0.3, 0.6, 0.9])
def test_truncated_png_at_any_point_in_the_pixels(fraction):
  arr = random_rgb(64, 48, seed=5)
  data = encode(Image.fromarray(arr), 'PNG')
  expect_error(data[:int(len(data) * fraction)], rec.DECODE, exact((64, 48)))


def _png_idat(data):
  """(start of IDAT's data, its length) of a PNG with one IDAT."""
  at = data.find(b'IDAT')
  assert data.find(b'IDAT', at + 4) < 0
  return at + 4, struct.unpack('>I', data[at - 4:at])[0]


@pytest.mark.parametrize('where', [0.05, 0.3, 0.6, 0.95])
def test_png_bit_flip_in_idat_fails(where):
  # A flipped bit as a transfer leaves it: data changed, CRC now wrong. Pillow
  # raised inside getexif(), which decoded the image first; that was swallowed
  # and the second load() returned the rows decoded so far.
  arr = random_rgb(64, 48, seed=5)
  data = bytearray(encode(Image.fromarray(arr), 'PNG'))
  start, length = _png_idat(data)
  data[start + int(length * where)] ^= 0x10
  expect_error(bytes(data), rec.DECODE, exact((64, 48)))
  expect_error(bytes(data), rec.DECODE, DecodeConfig(size=(8, 6)))


@pytest.mark.parametrize('keep', ['half_idat', 'no_adler32', 'no_crc',
                                  'no_iend', 'half_iend'])
def test_png_cut_anywhere_after_the_header_fails(keep):
  arr = random_rgb(64, 48, seed=6)
  data = encode(Image.fromarray(arr), 'PNG')
  start, length = _png_idat(data)
  end = {'half_idat': start + length // 2,
         'no_adler32': start + length - 4,    # every row is there
         'no_crc': start + length,
         'no_iend': start + length + 4,
         'half_iend': len(data) - 6}[keep]
  expect_error(data[:end], rec.DECODE, exact((64, 48)))


def test_png_with_bytes_after_iend_still_decodes():
  arr = random_rgb(8, 4, seed=7)
  data = encode(Image.fromarray(arr), 'PNG') + b'appended by some tool'
  np.testing.assert_array_equal(decode_image(data, exact((8, 4))), arr)


SECRET = b'K3Y!s3cr'   # '!': no PNG chunk name, no PPM comment


def _png_with_chunk_between_idats(name):
  arr = random_rgb(64, 48, seed=8)
  data = encode(Image.fromarray(arr), 'PNG')
  start, length = _png_idat(data)
  idat = data[start:start + length]
  half = length // 2
  return (data[:start - 8] + png_chunk(b'IDAT', idat[:half]) +
          png_chunk(name, b'') + png_chunk(b'IDAT', idat[half:]) +
          data[start + length + 4:])


@pytest.mark.parametrize('data', [
    SECRET + b'\xff\xfe' + bytes(range(200)),            # unknown binary
    b'P6\n' + SECRET + b'_' + SECRET + b' 4\n255\n',      # PPM header token
    _png_with_chunk_between_idats(SECRET[:4]),           # PNG chunk name
    b'%s\n' % SECRET + b'not an image',                  # text
], ids=['binary', 'ppm_token', 'png_chunk', 'text'])
def test_error_messages_never_quote_the_file(data):
  with pytest.raises(DecodeError) as info:
    decode_image(data, DecodeConfig(size=(8, 8)))
  message = str(info.value)
  for leak in (SECRET, SECRET[:4], SECRET.hex(), SECRET[:4].hex(),
               repr(SECRET[:4])):
    text = leak if isinstance(leak, str) else leak.decode('latin-1')
    assert text not in message, message
  out = prepare_record(Record(line=b'x', data=data), DecodeConfig(size=(8, 8)),
                       encoded_input=False)
  assert out.error == rec.DECODE and SECRET.decode('latin-1') not in \
      out.message and SECRET[:4].decode('latin-1') not in out.message


def test_error_messages_name_the_cause_in_our_words():
  arr = random_rgb(64, 48, seed=4)
  data = encode(Image.fromarray(arr), 'PNG')
  assert expect_error(data[:len(data) // 2], rec.DECODE, exact((64, 48))) == \
      'decode failed: OSError (truncated)'
  assert expect_error(bytes(range(255, -1, -1)), rec.DECODE) == \
      'not a supported image (unknown format)'


def test_a_file_cannot_choose_its_cause():
  # Pillow quotes the header token after its own words: a token spelling a
  # cause names none (matching anywhere in the text would say truncated).
  assert expect_error(b'P6\ntruncated_unsupported 4\n255\n', rec.DECODE) \
      == 'open failed: ValueError'
  assert expect_error(b'P6\n4', rec.DECODE) == \
      'open failed: ValueError (truncated)'


@pytest.mark.parametrize('error, cause', [
    # The type decides where there is one, whatever the text says.
    (SyntaxError('truncated? no: broken PNG file'), 'corrupt data'),
    (zlib.error('Error -3 while decompressing data'), 'corrupt data'),
    (struct.error('unpack requires a buffer of 4 bytes'), 'truncated'),
    (EOFError(), 'truncated'),
    # Pillow's own phrase opens the message, or it names nothing.
    (OSError('image file is truncated (3 bytes not processed)'), 'truncated'),
    (OSError('x: image file is truncated'), None),
    (OSError('Unsupported BMP compression (6)'), 'unsupported variant'),
    (ValueError('Unsupported BMP compression (6)'), None),
    (OSError('could not create decoder object'), None),
], ids=repr)
def test_failure_cause_by_type_then_by_pillows_leading_phrase(error, cause):
  suffix = f' ({cause})' if cause else ''
  assert decode._failure('decode failed', error) == \
      f'decode failed: {type(error).__name__}{suffix}'


def test_failure_cause_from_a_chained_read_error():
  # ImageFile.load raises OSError from the struct.error of a short read.
  try:
    try:
      struct.unpack('>I', b'ab')
    except struct.error as e:
      raise OSError('reading failed') from e
  except OSError as e:
    assert decode._failure('decode failed', e) == \
        'decode failed: OSError (truncated)'


def test_pillow_still_says_the_phrases_matched():
  # A rewording in a Pillow upgrade would silently drop a cause: look for
  # each phrase in the installed Pillow (Python sources and the C module).
  folder = os.path.dirname(Image.__file__)
  text = b''.join(
      open(os.path.join(folder, name), 'rb').read().lower()
      for name in os.listdir(folder) if name.endswith(('.py', '.so', '.pyd')))
  missing = [phrase for _, phrase, _ in decode._PILLOW_PHRASES
             if phrase.encode() not in text]
  assert not missing, missing


def test_png_bomb_is_too_large_and_fast(png_bomb):
  start = time.perf_counter()
  msg = expect_error(png_bomb, rec.TOO_LARGE)
  assert time.perf_counter() - start < 2
  assert '900000000' in msg or '30000x30000' in msg


def test_gif_bomb_is_too_large_and_fast(gif_bomb):
  start = time.perf_counter()
  expect_error(gif_bomb, rec.TOO_LARGE)
  assert time.perf_counter() - start < 2


def test_bombs_rejected_by_check_image_fast(png_bomb, gif_bomb):
  for data in (png_bomb, gif_bomb):
    start = time.perf_counter()
    with pytest.raises(DecodeError) as info:
      check_image(data, DecodeConfig(size=(1, 1)).max_pixels)
    assert info.value.kind == rec.TOO_LARGE
    assert time.perf_counter() - start < 2


def test_max_pixels_is_enforced_before_decoding():
  data = encode(Image.fromarray(random_rgb(100, 50)), 'PNG')
  msg = expect_error(data, rec.TOO_LARGE,
                     DecodeConfig(size=(8, 8), max_pixels=4999))
  assert '100x50' in msg and '4999' in msg
  # Exactly at the limit is allowed.
  out = decode_image(data, DecodeConfig(size=(100, 50), max_pixels=5000,
                                        draft=False))
  assert out.shape == (50, 100, 3)


def test_too_large_below_pillows_own_limit():
  # A header-only PNG claiming 10000x10000 (1e8 > default 89,478,485 but
  # below Pillow's 2x hard limit): our own check must catch it.
  data = (b'\x89PNG\r\n\x1a\n' +
          png_chunk(b'IHDR', struct.pack('>IIBBBBB', 10000, 10000, 8, 0, 0, 0,
                                         0)) +
          png_chunk(b'IDAT', zlib.compress(b'')) + png_chunk(b'IEND', b''))
  start = time.perf_counter()
  assert '10000x10000' in expect_error(data, rec.TOO_LARGE)
  assert time.perf_counter() - start < 2


# --------------------------------------------------------------------------
# Resize and draft


def test_resize_to_non_square_target():
  arr = smooth_rgb(120, 80)
  out = decode_image(encode(Image.fromarray(arr), 'PNG'),
                     DecodeConfig(size=(30, 50)))
  assert out.shape == (50, 30, 3) and out.dtype == np.uint8
  expected = np.asarray(Image.fromarray(arr).resize(
      (30, 50), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(out, expected)


def test_resize_of_solid_image_keeps_colour():
  data = encode(Image.new('RGB', (37, 23), (12, 34, 56)), 'PNG')
  out = decode_image(data, DecodeConfig(size=(224, 224)))
  assert out.shape == (224, 224, 3)
  assert (out == np.array([12, 34, 56], np.uint8)).all()


@pytest.fixture(scope='module')
def large_jpeg():
  arr = smooth_rgb(2000, 1500)
  return arr, encode(Image.fromarray(arr), 'JPEG', quality=90)


def test_draft_is_close_to_full_decode(large_jpeg):
  arr, data = large_jpeg
  config = DecodeConfig(size=(224, 160), draft=True)
  drafted = decode_image(data, config)
  full = decode_image(data, DecodeConfig(size=(224, 160), draft=False))
  assert drafted.shape == full.shape == (160, 224, 3)
  assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 3
  reference = np.asarray(Image.fromarray(arr).resize((224, 160),
                                                     Image.Resampling.BILINEAR))
  assert np.abs(drafted.astype(int) - reference.astype(int)).mean() < 3


def _spy_draft(monkeypatch):
  calls = []
  original = JpegImagePlugin.JpegImageFile.draft

  def spy(self, mode, size):
    result = original(self, mode, size)
    calls.append((size, self.size))
    return result
  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'draft', spy)
  return calls


def test_draft_requests_target_size_and_never_undershoots(monkeypatch,
                                                          large_jpeg):
  _, data = large_jpeg
  calls = _spy_draft(monkeypatch)
  decode_image(data, DecodeConfig(size=(224, 160), draft=True))
  assert len(calls) == 1
  requested, decoded = calls[0]
  assert requested == (224, 160)
  # 2000x1500 at 1/8 is 250x188: still at least the target, and reduced.
  assert decoded == (250, 188)


def test_draft_not_used_when_disabled_or_not_jpeg(monkeypatch, large_jpeg):
  _, data = large_jpeg
  calls = _spy_draft(monkeypatch)
  decode_image(data, DecodeConfig(size=(224, 160), draft=False))
  decode_image(encode(Image.new('RGB', (64, 64)), 'PNG'),
               DecodeConfig(size=(8, 8), draft=True))
  assert calls == []


def test_draft_swaps_target_for_rotated_jpeg(monkeypatch):
  arr = smooth_rgb(800, 400)
  data = encode(Image.fromarray(arr), 'JPEG', quality=90,
                exif=with_orientation(6))
  calls = _spy_draft(monkeypatch)
  # Displayed 400x800; the model wants 50x100 of the displayed image.
  out = decode_image(data, DecodeConfig(size=(50, 100), draft=True))
  assert out.shape == (100, 50, 3)
  assert calls[0][0] == (100, 50)       # requested in stored orientation
  assert calls[0][1] == (100, 50)       # 800x400 at 1/8
  expected = np.asarray(Image.fromarray(np.rot90(arr, -1)).resize(
      (50, 100), Image.Resampling.BILINEAR))
  assert np.abs(out.astype(int) - expected.astype(int)).mean() < 3


# --------------------------------------------------------------------------
# prepare_record and check_image


def valid_png():
  return encode(Image.fromarray(random_rgb(20, 10, seed=9)), 'PNG')


def test_prepare_record_encoded_input_passes_original_bytes():
  data = valid_png()
  record = Record(line=b'a.png', source='a.png', data=data)
  out = prepare_record(record, DecodeConfig(size=(8, 8)), encoded_input=True)
  assert out.ok and out.error is None
  assert out.tensor is data
  assert out.data is None
  assert out.line == b'a.png' and out.source == 'a.png'


def test_prepare_record_encoded_input_rejects_text():
  record = Record(line=b'a.jpg', source='a.jpg', data=b'not an image at all')
  out = prepare_record(record, DecodeConfig(size=(8, 8)), encoded_input=True)
  assert out.error == rec.DECODE and not out.ok
  assert out.tensor is None and out.data is None
  assert 'text' in out.message and '\n' not in out.message
  assert out.line == b'a.jpg'


def test_prepare_record_encoded_input_rejects_bomb(png_bomb):
  out = prepare_record(Record(line=b'b', data=png_bomb),
                       DecodeConfig(size=(8, 8)), encoded_input=True)
  assert out.error == rec.TOO_LARGE and out.tensor is None


def test_prepare_record_decodes_to_array():
  data = valid_png()
  record = Record(line=b'a.png', data=data)
  out = prepare_record(record, DecodeConfig(size=(20, 10), draft=False),
                       encoded_input=False)
  assert out.ok and out.data is None
  assert isinstance(out.tensor, np.ndarray)
  assert out.tensor.dtype == np.uint8 and out.tensor.shape == (10, 20, 3)
  np.testing.assert_array_equal(out.tensor, random_rgb(20, 10, seed=9))


def test_prepare_record_decode_failure_becomes_error_record():
  data = valid_png()
  out = prepare_record(Record(line=b'x', data=data[:len(data) // 2]),
                       DecodeConfig(size=(20, 10)), encoded_input=False)
  assert out.error == rec.DECODE and out.tensor is None and out.data is None
  out = prepare_record(Record(line=b'x', data=data),
                       DecodeConfig(size=(20, 10), max_pixels=100),
                       encoded_input=False)
  assert out.error == rec.TOO_LARGE and out.tensor is None


def test_check_image_accepts_valid_and_rejects_garbage():
  check_image(valid_png(), 10_000)                     # no exception
  with pytest.raises(DecodeError) as info:
    check_image(b'', 10_000)
  assert info.value.kind == rec.DECODE
  with pytest.raises(DecodeError) as info:
    check_image(valid_png(), 199)
  assert info.value.kind == rec.TOO_LARGE


def test_module_keeps_truncated_images_strict():
  from PIL import ImageFile
  assert ImageFile.LOAD_TRUNCATED_IMAGES is False
  assert decode._EXIF_ORIENTATION == 0x0112
