"""Decode and resize: encoded bytes -> uint8 RGB pixels of the model's size.

Colour handling mirrors TensorFlow's ``decode_image(channels=3)``, which is what
most classifiers were trained on: alpha is dropped rather than composited (but a
GIF's transparent pixels are black, as TensorFlow leaves them), 16-bit samples
are scaled (not clipped) to 8 bits; unlike TensorFlow, EXIF orientation is
applied. docs/decoding.md lists every known difference and the tests that pin
them (tests/test_conformance.py).

Error messages are our own words plus exception class names: never text from
the exception, which can quote the file's bytes (a local file's first bytes,
PNG chunk names, header tokens).
"""
import dataclasses
import io
import re
import struct
import warnings
import zlib
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ev_predict.transforms import record as rec
from ev_predict.transforms.record import Record

# Partial images must fail, never decode as grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Orientation values that swap width and height.
_TRANSPOSED = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112
# An IEND chunk: length 0, type, CRC.
_PNG_END = b'\x00\x00\x00\x00IEND\xaeB`\x82'


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  size: Tuple[int, int]             # (width, height) the model wants
  max_pixels: int = 89_478_485      # decompression-bomb guard (Pillow's)
  draft: bool = True                # let JPEG decode at 1/2, 1/4, 1/8 scale


class DecodeError(Exception):

  def __init__(self, kind: str, message: str):
    super().__init__(message)
    self.kind = kind


def open_image(data: bytes, max_pixels: int) -> Image.Image:
  """Opens (header only) and checks the pixel budget before any decoding."""
  if not data:
    raise DecodeError(rec.DECODE, 'empty file')
  try:
    with warnings.catch_warnings():
      # Our own limit below decides; Pillow's warning would only be noise.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      img = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError as e:
    raise DecodeError(rec.TOO_LARGE, _bomb_message(e)) from e
  except UnidentifiedImageError as e:
    raise DecodeError(
        rec.DECODE, f'not a supported image ({_sniff(data)})') from e
  except Exception as e:  # pylint: disable=broad-except
    raise DecodeError(rec.DECODE, _failure('open failed', e)) from e
  width, height = img.size
  if width * height > max_pixels:
    raise DecodeError(
        rec.TOO_LARGE,
        f'{width}x{height} pixels exceeds the {max_pixels}-pixel limit')
  if width < 1 or height < 1:
    raise DecodeError(rec.DECODE, f'empty image {width}x{height}')
  return img


def decode_image(data: bytes, config: DecodeConfig) -> np.ndarray:
  """Encoded image -> uint8 array [height, width, 3] at config.size."""
  rgb = decode_rgb(data, config.max_pixels,
                   tuple(config.size) if config.draft else None)
  try:
    if rgb.size != tuple(config.size):
      rgb = rgb.resize(config.size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)
  except MemoryError as e:
    raise DecodeError(rec.TOO_LARGE, 'out of memory while decoding') from e
  except Exception as e:  # pylint: disable=broad-except
    raise DecodeError(rec.DECODE, _failure('decode failed', e)) from e


def decode_rgb(data: bytes, max_pixels: int,
               draft: Optional[Tuple[int, int]] = None) -> Image.Image:
  """Encoded image -> 8-bit RGB, upright, at its own size; a JPEG decoded
  at the smallest DCT scale that keeps at least draft (width, height)."""
  img = open_image(data, max_pixels)
  fmt = img.format            # a transposed copy has none
  try:
    if fmt == 'JPEG':
      # A JPEG's EXIF comes with its header, so draft can aim at the stored
      # orientation before anything is decoded.
      orientation = _orientation(img)
      # CMYK/YCCK (both open as CMYK) convert to RGB multiplicatively: a draft
      # averages C and K before that product and shifts colours.
      if draft and img.mode != 'CMYK':
        w, h = draft
        if orientation in _TRANSPOSED:
          w, h = h, w
        # draft keeps at least the requested size, so resizing still reduces.
        img.draft('RGB', (w, h))
      img.load()
    else:
      # Decode first: PNG's getexif decodes itself (and a failure in there
      # must not be lost), and TIFF applies its orientation inside load()
      # (Pillow >= 12) and drops the tag, so only what remains is ours to do.
      img.load()
      if fmt == 'PNG' and not _png_complete(data):
        raise DecodeError(rec.DECODE, 'decode failed: truncated (no IEND)')
      orientation = _orientation(img)
    if orientation not in (None, 1):
      img = _apply_orientation(img, orientation)
    if fmt == 'GIF' and img.mode in ('P', 'L') and 'transparency' in img.info:
      return _gif_to_rgb(img)
    return to_rgb(img)
  except DecodeError:
    raise
  except Image.DecompressionBombError as e:
    raise DecodeError(rec.TOO_LARGE, _bomb_message(e)) from e
  except MemoryError as e:
    raise DecodeError(rec.TOO_LARGE, 'out of memory while decoding') from e
  except Exception as e:  # pylint: disable=broad-except
    raise DecodeError(rec.DECODE, _failure('decode failed', e)) from e


def to_rgb(img: Image.Image) -> Image.Image:
  """Any Pillow mode -> 8-bit RGB, without clipping wide samples."""
  mode = img.mode
  if mode == 'RGB':
    return img
  if mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F'):
    return Image.fromarray(
        _wide_to_uint8(np.asarray(img), sixteen_bit=mode.startswith('I;16')),
        'L').convert('RGB')
  if mode == 'P':
    # Palette images with transparency go through RGBA so the palette is
    # resolved correctly; alpha is then dropped like the rest.
    img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
    return img.convert('RGB')
  if mode == 'PA':
    return img.convert('RGBA').convert('RGB')
  return img.convert('RGB')


def _png_complete(data: bytes) -> bool:
  # Pillow returns every row of a PNG cut after its last row (in zlib's
  # checksum, a CRC or before IEND); libpng, so TensorFlow, rejects it: it was
  # cut, and the unchecked tail may hide corruption. Trailing bytes after IEND
  # are allowed, as libpng allows them.
  return data.endswith(_PNG_END) or _PNG_END in data


def _gif_to_rgb(img: Image.Image) -> Image.Image:
  # TensorFlow's GIF decoder never writes a transparent pixel, so on the first
  # frame it stays at the canvas's 0: black, not the palette colour.
  transparent = np.asarray(img) == img.info['transparency']
  rgb = np.array(img.convert('RGB'))
  rgb[transparent] = 0
  return Image.fromarray(rgb, 'RGB')


def _wide_to_uint8(arr: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
  if arr.dtype.kind == 'f':
    arr = np.nan_to_num(arr.astype(np.float64))
    # Float images are usually 0..1; anything larger is taken as 0..255.
    scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
  arr = arr.astype(np.int64)
  peak = int(arr.max(initial=0))
  # I;16 modes are 16-bit whatever their values (a dark image peaks below 256);
  # only for 32-bit 'I' (16-bit PNGs in older Pillow) is the range guessed.
  if sixteen_bit or peak > 255:
    # 16-bit samples (also 16-bit PNGs that Pillow opens as 32-bit 'I'): the
    # high byte, as TensorFlow gives (libpng's strip_16) and as Pillow itself
    # reads 16-bit RGB(A) PNGs; rounding would differ from both by one level.
    return np.clip(arr >> 8, 0, 255).astype(np.uint8)
  return np.clip(arr, 0, 255).astype(np.uint8)


def _orientation(img: Image.Image):
  try:
    value = img.getexif().get(_EXIF_ORIENTATION)
    return int(value) if value in range(1, 9) else None
  except Exception:  # pylint: disable=broad-except
    # Corrupt EXIF must not cost the image: classify it as stored.
    return None


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
  method = {
      2: Image.Transpose.FLIP_LEFT_RIGHT,
      3: Image.Transpose.ROTATE_180,
      4: Image.Transpose.FLIP_TOP_BOTTOM,
      5: Image.Transpose.TRANSPOSE,
      6: Image.Transpose.ROTATE_270,
      7: Image.Transpose.TRANSVERSE,
      8: Image.Transpose.ROTATE_90,
  }[orientation]
  return img.transpose(method)


def check_image(data: bytes, max_pixels: int) -> None:
  """For models that take encoded bytes: reject what is clearly not an image
  (and pixel bombs) without decoding, so the model sees only plausible input."""
  img = open_image(data, max_pixels)
  img.close()


def _sniff(data: bytes) -> str:
  head = data[:64].lstrip()
  if head.startswith(b'<?xml') or head.startswith(b'<svg'):
    return 'SVG is not supported'
  if data[4:12] in (b'ftypheic', b'ftypheix', b'ftypmif1', b'ftypavif'):
    return 'HEIC/AVIF is not supported'
  try:
    head.decode('utf-8')
    return 'text, not image data'
  except UnicodeDecodeError:
    return 'unknown format'


# Where Pillow's exception type names the cause, the type decides: plugins
# raise SyntaxError for a malformed structure ("broken PNG file"), struct.error
# and EOFError when a read comes up short (ImageFile.load chains such an error
# into its OSError), zlib.error for a corrupt compressed stream.
_TYPED_CAUSES = (
    (SyntaxError, 'corrupt data'),
    (zlib.error, 'corrupt data'),
    (struct.error, 'truncated'),
    (EOFError, 'truncated'),
)
# For the rest Pillow raises a bare OSError or ValueError, and its message is
# the only thing that tells "truncated" from "corrupt" from "unsupported":
# there is no subclass, errno or attribute to read. So these few fixed
# phrases, each Pillow's own, are matched at the START of the message: text
# from the file (a PPM token, a PNG chunk name) only ever follows Pillow's
# words, so a file cannot choose its own cause. A rewording in a later Pillow
# loses the cause, never the kind (tests/test_decode.py finds each phrase in
# the installed Pillow's source).
_PILLOW_PHRASES = (
    (OSError, 'image file is truncated', 'truncated'),    # ImageFile.load
    (OSError, 'truncated file read', 'truncated'),        # ImageFile._safe_read
    (OSError, 'broken data stream', 'corrupt data'),      # a decoder's status
    (OSError, 'decoder error', 'corrupt data'),           # ImageFile._get_oserror
    (OSError, 'unsupported', 'unsupported variant'),      # BMP, Sun... headers
    (ValueError, 'invalid palette size', 'bad palette'),  # putpalette, in load
    (ValueError, 'reached eof', 'truncated'),             # PPM header
)


def _cause(e: BaseException) -> Optional[str]:
  for err in (e, e.__cause__):
    for kind, name in _TYPED_CAUSES:
      if isinstance(err, kind):
        return name
  text = str(e).lstrip().lower()
  return next((name for kind, phrase, name in _PILLOW_PHRASES
               if isinstance(e, kind) and text.startswith(phrase)), None)


def _failure(what: str, e: Exception) -> str:
  cause = _cause(e)
  suffix = f' ({cause})' if cause else ''
  return f'{what}: {type(e).__name__}{suffix}'


def _bomb_message(e: Exception) -> str:
  # Only the pixel count, which Pillow computed from the header's dimensions.
  match = re.search(r'\((\d+) pixels\)', str(e))
  pixels = f' of {match.group(1)} pixels' if match else ''
  return f'image{pixels} exceeds the decompression-bomb limit'


def prepare_record(record: Record, config: DecodeConfig,
                   encoded_input: bool) -> Record:
  """Record with data -> record with the model's input tensor, or an error
  (the stage runner passes failed records on without calling this)."""
  try:
    if encoded_input:
      check_image(record.data, config.max_pixels)
      return record.but(tensor=record.data, data=None)
    return record.but(tensor=decode_image(record.data, config), data=None)
  except DecodeError as e:
    return record.fail(e.kind, str(e))
