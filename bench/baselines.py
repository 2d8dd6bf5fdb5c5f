"""The baselines ev-predict is compared with (d and e in bench.run's
docstring): a naive loop and a pipeline shaped like Beam's
examples/inference. Both run in child processes (bench.child) and write the
same PAI-format line as ev-predict, so the output work is equal."""
import json
import os

from bench.config import IMAGE

# --- d. naive baseline -----------------------------------------------------

def pai_line(path: str, probs, labels) -> str:
  """The PAI EasyVision result line, written by hand (as ev-predict does)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  best = int(np.argmax(probs))
  return path + ', ' + json.dumps({
      'class': best, 'class_name': labels[best],
      'class_probs': {n: float(p) for n, p in zip(labels, probs)}},
                                  ensure_ascii=False)


def child_naive(arg: dict) -> dict:
  """What a user writes by hand: one image at a time through the signature."""
  import numpy as np
  import tensorflow as tf
  from PIL import Image
  model = tf.saved_model.load(arg['model'])
  infer = model.signatures['serving_default']
  labels = open(os.path.join(arg['model'], 'labels.txt')).read().split()
  n = 0
  with open(arg['filelist']) as lines, open(arg['output'], 'w') as out:
    for line in lines:
      path = line.strip()
      if not path:
        continue
      img = Image.open(path).convert('RGB').resize((IMAGE, IMAGE))
      x = tf.constant(np.asarray(img)[None])
      probs = next(iter(infer(x).values())).numpy()[0]
      out.write(pai_line(path, probs, labels) + '\n')
      n += 1
  return {'images': n}


# --- e. Beam-example baseline ----------------------------------------------

def _beam_example_pipeline(p, filelist: str, model: str, output: str,
                           backend: str = 'tensorflow'):
  """Shaped like Beam's examples/inference/*_image_classification.py.
  backend 'openvino': the same model through OpenVINO, compiled as
  ev-predict's backend compiles it (f32), for a same-backend comparison."""
  import apache_beam as beam
  import numpy as np
  from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler,
                                             PredictionResult, RunInference)
  from PIL import Image

  class SavedModelHandler(ModelHandler):
    """tf.saved_model.load + the serving signature (Beam's TFModelHandler
    loads through Keras, which cannot load a SavedModel under Keras 3)."""

    def __init__(self, path):
      self._path = path

    def load_model(self):
      if backend == 'openvino':
        # Telemetry off, as in every process here (nothing may call out);
        # the plain import would cost about 1 s of start-up, no throughput.
        from ev_predict.transforms.backends import import_openvino
        ov = import_openvino()
        compiled = ov.Core().compile_model(
            ov.convert_model(self._path), 'CPU',
            {'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY',
             'NUM_STREAMS': 1})
        return lambda x: compiled(x)[compiled.output(0)]
      import tensorflow as tf
      signature = tf.saved_model.load(self._path).signatures['serving_default']
      return lambda x: next(iter(signature(tf.constant(x)).values())).numpy()

    def run_inference(self, batch, model, inference_args=None):
      probs = model(np.stack(batch))
      return [PredictionResult(x, y) for x, y in zip(batch, probs)]

  def read_image(path):
    img = Image.open(path).convert('RGB').resize((IMAGE, IMAGE))
    return path, np.asarray(img)

  class PostProcessor(beam.DoFn):

    def setup(self):
      with open(os.path.join(model, 'labels.txt')) as f:
        self._labels = f.read().split()

    def process(self, element):
      path, result = element
      yield pai_line(path, result.inference, self._labels)

  handler = KeyedModelHandler(SavedModelHandler(model))
  _ = (p
       | 'ReadImageNames' >> beam.io.ReadFromText(filelist)
       | 'FilterEmptyLines' >> beam.Filter(lambda s: s.strip())
       | 'ReadImageData' >> beam.Map(read_image)
       | 'RunInference' >> RunInference(handler)
       | 'PostProcessOutputs' >> beam.ParDo(PostProcessor())
       | 'WriteOutput' >> beam.io.WriteToText(
           output, shard_name_template='', append_trailing_newlines=True))


def fn_api_runner(options):
  """What pipeline/launcher.py make_runner() returns for DirectRunner: Beam's
  FnApiRunner directly (DirectRunner would first try to download Prism)."""
  from apache_beam.portability.api import beam_provision_api_pb2
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  from apache_beam.runners.portability.portable_runner import JobServiceHandle
  encoded = JobServiceHandle.encode_pipeline_options(
      options.get_all_options())
  return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
      beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def child_beam_example(arg: dict, backend: str = 'tensorflow') -> dict:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  options = PipelineOptions([])
  with beam.Pipeline(runner=fn_api_runner(options), options=options) as p:
    _beam_example_pipeline(p, arg['filelist'], arg['model'], arg['output'],
                           backend)
  with open(arg['output']) as f:
    return {'images': sum(1 for _ in f)}


def child_beam_example_openvino(arg: dict) -> dict:
  return child_beam_example(arg, 'openvino')
