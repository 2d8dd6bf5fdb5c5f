"""The metrics a run files, read back from its PipelineResult: per stage
records in/passed/ok/failed by kind, latencies, fetch attempts and retries,
the sink's outcomes. Exact counts for a list built to give each."""
import base64
import collections
import json
import uuid

import apache_beam as beam

from tests.conftest import write_image
from tests.test_parallel import _map, _pipeline, failed, good
from ev_predict.pipeline import launcher, graph
from ev_predict.transforms import metrics as stage_metrics


def query(result):
  """({counter: value}, {distribution: (count, sum, min, max)}) in our
  namespace, summed over steps."""
  found = result.metrics().query()
  counters = collections.Counter()
  dists = {}
  for c in found['counters']:
    if c.key.metric.namespace == stage_metrics.NAMESPACE:
      counters[c.key.metric.name] += c.committed
  for d in found['distributions']:
    if d.key.metric.namespace == stage_metrics.NAMESPACE:
      v = d.committed
      assert d.key.metric.name not in dists, d.key   # one step per name
      dists[d.key.metric.name] = (v.count, v.sum, v.min, v.max)
  return counters, dists


def run_and_query(p):
  result = p.run()
  result.wait_until_finish()
  return query(result)


def stage(counters, name):
  return {k[len(name) + 1:]: v for k, v in counters.items()
          if k.startswith(name + '_')}


def test_stage_metrics_filed_from_pool_threads_are_counted():
  # Latencies are measured on pool threads; a metric updated there would be
  # lost (Beam files by the calling thread's step): the counts prove not.
  records = ([good(i) for i in range(10)] + [failed(i) for i in range(10, 13)]
             + [good(i).but(data=b'inline') for i in range(13, 15)])
  p = _pipeline()
  _ = (p | beam.Create(records)
       | beam.ParDo(_map('metrics', needs=lambda r: r.data is None,
                         raise_on=(b'1', b'2'), fail_on=(b'3',),
                         delay=0.002)))
  counters, dists = run_and_query(p)
  assert stage(counters, 'test') == {
      'in': 15, 'passed': 5, 'ok': 7, 'failed_fetch': 2,
      'failed_not_found': 1, 'exceptions': 2}
  count, _, low, _ = dists['test_latency_us']
  assert count == 10 and low >= 2000


def _job_lines(tmp_path, http_server):
  tag = uuid.uuid4().hex[:8]
  good_files = [write_image(tmp_path / f'g{i}.png', i) for i in range(4)]
  texts = []
  for i in range(2):
    (tmp_path / f't{i}.jpg').write_text('not an image')
    texts.append(str(tmp_path / f't{i}.jpg'))
  write_image(f'{http_server.root}/m-{tag}.png', 9)
  inline = [json.dumps({'image': base64.b64encode(
      open(write_image(tmp_path / f'b{i}.png', 20 + i), 'rb').read()
  ).decode()}) for i in range(2)]
  lines = (good_files + [str(tmp_path / 'missing1.jpg'),
                         str(tmp_path / 'missing2.jpg')] + texts +
           ['{"nothing": 1}', '{"url": "x.jpg"'] + inline +
           [f'{http_server.base}/flaky/m-{tag}.png',
            f'{http_server.base}/status/500'])
  return lines


def test_a_job_files_exact_counts_per_stage_and_kind(tmp_path, model_dirs,
                                                     http_server):
  lines = _job_lines(tmp_path, http_server)
  listing = tmp_path / 'list.txt'
  listing.write_text('\n'.join(lines) + '\n')
  options = launcher.make_options([
      f'-Dmodel_path={model_dirs["uint8"]}', f'-Dinput_oss_file={listing}',
      f'-Doutput_oss_file={tmp_path / "out" / "result.txt"}',
      '-Dfetch_retries=2', '-Dmax_error_ratio=1'])
  job = graph.plan(options)
  p = beam.Pipeline(runner=launcher.make_runner(options), options=options)
  graph.build_pipeline(p, options, job)
  counters, dists = run_and_query(p)

  # 14 lines: 4 good files, 2 missing, 2 text files, 2 bad lines, 2 inline
  # images, 1 flaky URL (served on its 3rd attempt), 1 HTTP 500.
  assert stage(counters, 'fetch') == {
      'in': 14, 'passed': 4, 'ok': 7, 'failed_not_found': 2,
      'failed_fetch': 1, 'retries': 4}
  assert stage(counters, 'decode') == {
      'in': 14, 'passed': 5, 'ok': 7, 'failed_decode': 2}
  assert stage(counters, 'classify') == {'in': 14, 'passed': 7, 'ok': 7}
  assert {k: v for k, v in counters.items()
          if k == 'succeeded' or k.startswith('failed')} == {
      'succeeded': 7, 'failed': 7, 'failed_not_found': 2, 'failed_fetch': 1,
      'failed_decode': 2, 'failed_bad_line': 2}
  # One latency per call of the stage function, none for passed records.
  assert dists['fetch_latency_us'][0] == 10
  assert dists['decode_latency_us'][0] == 9
  # Attempts per read: 1 for each file, 3 for the flaky URL and the 500.
  assert dists['fetch_attempts'] == (10, 14, 1, 3)
