"""transforms.decode: error kinds and messages (truncation, corruption, bombs,
unsupported formats), and prepare_record / check_image."""
import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from ev_predict.transforms import decode
from ev_predict.transforms import record as rec
from ev_predict.transforms.decode import (DecodeConfig, DecodeError, check_image,
                                          decode_image, prepare_record)
from ev_predict.transforms.record import Record
from tests.decode_helpers import encode, exact, png_chunk, random_rgb


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
