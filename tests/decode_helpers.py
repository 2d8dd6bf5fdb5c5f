"""Builders of decode test inputs, shared by the tests/test_decode*.py files
and tests/test_conformance.py.

Every input is built in memory, with Pillow/numpy/zlib.
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image

from ev_predict.transforms.decode import DecodeConfig


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
