"""transforms.decode: encoded bytes -> uint8 RGB pixels, format by format, and
to_rgb. (Orientation, resize and draft, and the error kinds: the other
tests/test_decode_*.py files.)

Every input is built in memory (tests/decode_helpers.py). Lossless formats
are compared pixel for pixel; lossy ones (JPEG) against the source within a
tight tolerance.
"""
import io

import numpy as np
import pytest
from PIL import Image

from ev_predict.transforms.decode import DecodeConfig, decode_image, to_rgb
from tests.decode_helpers import (encode, exact, random_rgb, smooth_rgb,
                                  ycck_from_cmyk)


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
