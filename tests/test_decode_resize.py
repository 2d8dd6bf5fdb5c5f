"""transforms.decode: resizing to the target and JPEG draft (DCT scaling)."""
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from ev_predict.transforms.decode import DecodeConfig, decode_image
from tests.decode_helpers import encode, smooth_rgb, with_orientation


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
