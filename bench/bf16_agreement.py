"""Does OpenVINO bf16 agree with f32 on a trained model's real inputs?

    .venv/bin/python -m bench.bf16_agreement [--model build/demo_model]

Runs the demo digit classifier (make demo builds it) on every held-out digit
of scikit-learn's bundled data set, decoded and resized by our own decode
stage, with OpenVINO f32 and bf16, and prints the agreement statistics that
transforms.backends.THRESHOLDS['bf16'] requires.
"""
import argparse
import io
import json

import numpy as np
from PIL import Image

from ev_predict.transforms import backends
from ev_predict.transforms.decode import DecodeConfig, decode_image
from ev_predict.transforms.inference import (inspect_saved_model,
                                            to_probabilities)


def held_out_digits():
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel
  digits = load_digits()
  _, x_test, _, y_test = train_test_split(
      digits.images, digits.target, test_size=0.25, random_state=0)
  for pixels, label in zip(x_test, y_test):
    grey = Image.fromarray((pixels * (255 / 16)).astype(np.uint8))
    buf = io.BytesIO()
    grey.resize((64, 64), Image.Resampling.BILINEAR).save(buf, 'PNG')
    yield buf.getvalue(), int(label)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--model', default='build/demo_model')
  args = parser.parse_args()
  spec = inspect_saved_model(args.model)
  config = DecodeConfig(size=spec.image_size)
  data = list(held_out_digits())
  batch = np.stack([decode_image(d, config) for d, _ in data])
  labels = np.array([l for _, l in data])
  probs = {}
  for precision in ('f32', 'bf16'):
    model = backends.OpenVinoBackend(args.model, spec, precision)
    probs[precision] = to_probabilities(model.scores(batch))
  stats = backends.agreement(probs['f32'], probs['bf16'])
  stats.update(
      images=len(batch),
      accuracy_f32=float(np.mean(probs['f32'].argmax(1) == labels)),
      accuracy_bf16=float(np.mean(probs['bf16'].argmax(1) == labels)),
      passes_bf16_rule=backends.passes(stats, 'bf16'),
      rule=backends.THRESHOLDS['bf16'])
  print(json.dumps(stats, indent=2))


if __name__ == '__main__':
  main()
