"""transforms.decode: EXIF orientation, lossless and JPEG, and corrupt EXIF."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin

from ev_predict.transforms.decode import DecodeConfig, decode_image
from tests.decode_helpers import (ORIENT, blocks_rgb, encode, exact,
                                  random_rgb, with_orientation)


# --------------------------------------------------------------------------
# EXIF orientation


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
