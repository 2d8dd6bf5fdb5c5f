"""The parameter table (pipeline/parameters.py) and what is made or checked
from it: the option classes, validation, --help, docs/parameters.md's table
and the templates' comments. Each check here fails when a copy drifts."""
import argparse
import dataclasses
import pathlib
import re

import numpy as np
import pytest

from ev_predict.pipeline import graph, parameters
from ev_predict.pipeline.options import EvPredictOptions
from ev_predict.pipeline.parameters import PARAMETERS, TABLE
from ev_predict.transforms import backends, inference, read
from ev_predict.transforms.oss.filesystem import OssOptions

ROOT = pathlib.Path(__file__).resolve().parent.parent
_GOOD = {'model_path': 'm', 'input_oss_file': 'in.txt',
         'output_oss_file': 'out.txt'}


def test_every_parameter_is_described():
  for p in TABLE:
    assert p.kind in parameters.KINDS, p
    assert p.group in parameters.GROUPS, p
    assert p.help.strip() and '\n' not in p.help, p
    assert not (p.required and p.default is not None), p
    assert bool(p.choices) == (p.kind in (parameters.CHOICE,
                                          parameters.CHOICES)), p
    if p.minimum is not None or p.above is not None or p.maximum is not None:
      assert p.kind in (parameters.INT, parameters.FLOAT), p
  assert len(PARAMETERS) == len(TABLE)  # no name twice


def test_defaults_satisfy_their_own_checks():
  for p in TABLE:
    if p.default is None:
      continue
    written = p.text(p.default)
    assert p.parse(written) == p.default, p
    assert p.problem(p.default, written) is None, p
  values, problems = parameters.parse(_GOOD)
  assert not problems
  assert values == parameters.Values(**{k: PARAMETERS[k].parse(v)
                                        for k, v in _GOOD.items()})


def test_values_are_parsed_once_into_types():
  values, problems = parameters.parse({
      **_GOOD, 'num_worker': '3', 'fetch_timeout': '2.5', 'jpeg_draft': 'off',
      'block_private_networks': 'YES', 'image_size': '224', 'pixel_mean':
      '1,2.5,3', 'pixel_scale': 'mean_std', 'pixel_std': '1'})
  assert not problems
  assert (values.num_worker, values.fetch_timeout, values.jpeg_draft,
          values.block_private_networks, values.image_size, values.pixel_mean,
          values.pixel_std) == (3, 2.5, False, True, (224, 224),
                                (1.0, 2.5, 3.0), (1.0,))
  # Unset: the table's defaults, typed.
  assert (values.allow_local_files, values.batch_size, values.pixel_scale,
          values.max_image_bytes) == (True, None, 'mean_std', 64 << 20)
  with pytest.raises(dataclasses.FrozenInstanceError):
    values.num_worker = 4


@pytest.mark.parametrize('name, value, message', [
    ('num_worker', 'two', "-Dnum_worker must be an integer, not 'two'"),
    ('num_worker', '0', "-Dnum_worker must be at least 1, not '0'"),
    ('fetch_timeout', 'soon', "-Dfetch_timeout must be a number, not 'soon'"),
    ('fetch_timeout', '0', "-Dfetch_timeout must be > 0, not '0'"),
    ('fetch_retries', '-1', "-Dfetch_retries must be at least 0, not '-1'"),
    ('max_error_ratio', '2', '-Dmax_error_ratio must be between 0 and 1, '
     "not '2'"),
    ('max_error_ratio', '-0.5', '-Dmax_error_ratio must be between 0 and 1, '
     "not '-0.5'"),
    ('image_type', 'bytes', "-Dimage_type must be one of url, base64, not "
     "'bytes'"),
    ('model_type', 'detector', '-Dmodel_type=detector is not supported; '
     'supported: classifier, multilabel_classifier'),
    ('jpeg_draft', 'maybe', "-Djpeg_draft must be true or false, not 'maybe'"),
    ('image_size', '0x5', '-Dimage_size must be N or WIDTHxHEIGHT'),
    ('image_size', 'big', '-Dimage_size must be N or WIDTHxHEIGHT'),
    ('pixel_mean', '1,a', '-Dpixel_mean must be comma-separated numbers'),
    ('model_path', '', '-Dmodel_path is required'),
    ('model_pth', 'x', 'unknown parameter -Dmodel_pth (did you mean '
     'model_path?)'),
    # NaN passes every bound; inf and huge timeouts overflow the clock.
    ('threshold', 'nan', "-Dthreshold must be a finite number, not 'nan'"),
    ('max_error_ratio', 'NaN', "-Dmax_error_ratio must be a finite number, "
     "not 'NaN'"),
    ('fetch_timeout', 'inf', "-Dfetch_timeout must be a finite number, not "
     "'inf'"),
    ('fetch_timeout', '1e308', "-Dfetch_timeout must be at most 86400, not "
     "'1e308'"),
    ('top_k', '1_0', "-Dtop_k must be an integer, not '1_0'"),
    ('threshold', '0.5_0', "-Dthreshold must be a number, not '0.5_0'"),
])
def test_one_message_per_problem(name, value, message):
  assert graph.check_parameters({**_GOOD, name: value}) == [message]


def test_every_problem_at_once_in_order():
  """Required first, then what does not parse, then choices and bounds;
  a value that does not parse is not judged again."""
  errors = graph.check_parameters({
      'model_type': 'detector', 'input_oss_file': 'in', 'batch_size': '1.5',
      'num_worker': '0', 'pixel_scale': 'mean_std', 'pixel_mean': 'x',
      'pixel_std': '1'})
  assert errors == [
      '-Dmodel_path is required',
      '-Doutput_oss_file (or -Doutput_table) is required',
      "-Dbatch_size must be an integer, not '1.5'",
      '-Dpixel_mean must be comma-separated numbers',
      '-Dmodel_type=detector is not supported; supported: classifier, multilabel_classifier',
      "-Dnum_worker must be at least 1, not '0'"]


def test_checks_between_parameters():
  mean_std = {**_GOOD, 'pixel_scale': 'mean_std'}
  assert graph.check_parameters({**mean_std, 'pixel_mean': '1,2',
                                 'pixel_std': '1'}) == [
      '-Dpixel_scale=mean_std needs -Dpixel_mean and -Dpixel_std with 1 or 3 '
      'values (std non-zero)']
  assert graph.check_parameters({**mean_std, 'pixel_mean': '1',
                                 'pixel_std': '0'})
  assert not graph.check_parameters({**mean_std, 'pixel_mean': '1,2,3',
                                     'pixel_std': '4,5,6'})
  outside = graph.check_parameters({
      **_GOOD, 'model_path': 'oss://b/models/m', 'buckets': 'oss://b/data/'})
  assert outside == ['-Dmodel_path=oss://b/models/m is outside -Dbuckets '
                     '(oss://b/data/)']


def _declared(cls):
  parser = argparse.ArgumentParser()
  cls._add_argparse_args(parser)  # pylint: disable=protected-access
  return {a.dest: a for a in parser._actions if a.dest != 'help'}  # pylint: disable=protected-access


def test_option_classes_declare_exactly_the_table():
  ours, oss = _declared(EvPredictOptions), _declared(OssOptions)
  assert set(oss) == {p.name for p in parameters.group('oss')}
  assert not set(ours) & set(oss)
  assert set(ours) | set(oss) == set(PARAMETERS)
  for name, action in {**ours, **oss}.items():
    p = PARAMETERS[name]
    assert action.help == parameters.plain(p.help)
    if p.kind in (parameters.INT, parameters.FLOAT) or p.default is None:
      assert action.default == p.default, name
    else:  # as a user writes it: the typed view is parameters.parse's
      assert action.default == p.text(p.default), name
  # What a portable runner hands SDK workers (snake case) still lands.
  assert '--osshost' in oss['ossHost'].option_strings


def test_transforms_handle_every_choice():
  assert PARAMETERS['image_type'].choices == (read.URL, read.BASE64)
  assert set(PARAMETERS['backend'].choices) == {
      backends.AUTO, backends.TENSORFLOW, backends.OPENVINO}
  assert set(PARAMETERS['precision'].choices) == set(backends.THRESHOLDS)
  pixels = np.arange(0, 256, 51, dtype=np.uint8).reshape(1, 2, 1, 3)
  results = [inference.PixelScaling(mode, (100.0,), (2.0,)).apply(pixels)
             for mode in PARAMETERS['pixel_scale'].choices]
  for i, a in enumerate(results):  # each mode does something of its own
    assert not any(np.array_equal(a, b) for b in results[i + 1:])


def test_help_lists_every_parameter():
  text = parameters.help_text()
  for p in TABLE:
    line = next(l for l in text.splitlines() if l.split()[:1] == [f'-D{p.name}'])
    assert parameters.plain(p.help) in line
    if p.required or p.unless:
      assert line.split()[1] == '(required)' and '[default' not in line
    elif p.default is not None:
      assert line.endswith(f'[default: {p.text(p.default)}]')


def test_docs_table_is_the_generated_one():
  docs = (ROOT / parameters.DOCS).read_text(encoding='utf-8')
  block = parameters.table_block(docs)
  assert block is not None, f'{parameters.DOCS} lost its parameters block'
  assert block == parameters.markdown_table(), (
      f'{parameters.DOCS} parameter table is stale: {parameters.WRITE_COMMAND}')
  for p in TABLE:
    assert f'`{p.name}`' in block
  # The command the message names is the one `make docs` runs.
  makefile = (ROOT / 'Makefile').read_text(encoding='utf-8')
  recipe = re.search(r'^docs:.*\n((?:\t.*\n)+)', makefile, re.M)
  assert recipe and 'make docs' in parameters.WRITE_COMMAND
  assert ('$(BIN)/python -m ev_predict.pipeline.parameters --write '
          f'{parameters.DOCS}') in recipe.group(1)


def test_readme_names_only_parameters_and_holds_no_table():
  """README keeps a short list that does not grow with the table: no copy
  of the generated block to go stale, every name it lists is a parameter,
  and the required ones are all there."""
  readme = (ROOT / 'README.md').read_text(encoding='utf-8')
  assert parameters.table_block(readme) is None
  section = readme.split('\n## Parameters\n', 1)[1].split('\n## ', 1)[0]
  listed = set()
  for line in section.splitlines():
    if line.startswith('- '):
      head = line[2:].partition(':')[0]
      listed.update(re.findall(r'`(\w+)`', head))
  assert listed and listed <= set(PARAMETERS), listed - set(PARAMETERS)
  assert {p.name for p in TABLE if p.required} <= listed
  assert f'({parameters.DOCS})' in section


# How the templates' comments explain the grammar: -Dname=..., -Dkey=value.
_METASYNTACTIC = ('name', 'key')
_ENTRY = re.compile(r'^  (\w+):(.*?)(?:\s+#\s*(.*))?$')
_FALLBACK = re.compile(r'^\s*\$\{(\w+):-([^}]*)\}\s*$')


def _template_problems(text):
  """Templates name only known parameters, and their comments state the
  table's defaults: `# empty: <what unset means>` after an empty fallback,
  `# here: <why>` after a fallback that is not the table's default."""
  problems = []
  comments = [line.partition('#')[2] for line in text.splitlines()]
  for name in re.findall(r'-D(\w+)', '\n'.join(comments)):
    if name not in PARAMETERS and name not in _METASYNTACTIC:
      problems.append(f'-D{name} is not a parameter')
  section = None
  for line in text.splitlines():
    if re.match(r'^\w+:', line):
      section = line.split(':')[0]
      continue
    match = _ENTRY.match(line)
    if section != 'parameters' or not match:
      continue
    name, value, comment = match.groups()
    p = PARAMETERS.get(name)
    if p is None:
      problems.append(f'{name} is not a parameter')
      continue
    fallback = _FALLBACK.match(value)
    given = fallback.group(2) if fallback and fallback.group(1) == name \
        else None
    if comment and comment.startswith('empty:'):
      stated = comment[len('empty:'):].strip()
      if given != '' or stated != parameters.plain(p.shown_default):
        problems.append(f'{name}: "# {comment}" but the table says '
                        f'"{parameters.plain(p.shown_default)}"')
    elif comment and comment.startswith('here:'):
      if given in (None, '') or p.default is not None and \
          given == p.text(p.default):
        problems.append(f'{name}: "# here:" on the table\'s own default')
    elif comment:
      problems.append(f'{name}: comment "{comment}" is neither "empty: ..." '
                      'nor "here: ..."')
    elif given and (p.default is None or given != p.text(p.default)):
      problems.append(f'{name}: falls back to {given!r}, the table says '
                      f'{p.shown_default} (say why with "# here: ...")')
  return problems


@pytest.mark.parametrize('path', sorted((ROOT / 'templates').glob('*.yaml')),
                         ids=lambda p: p.name)
def test_template_comments_agree_with_the_table(path):
  assert _template_problems(path.read_text(encoding='utf-8')) == []


def test_template_check_can_fail():
  good = 'parameters:\n  batch_size: ${batch_size:-}   # empty: 4 per core ' \
      'of a worker, 8 to 64\n'
  assert _template_problems(good) == []
  for bad in (good.replace('4 per core', '8 per core'),
              'parameters:\n  batch_sise: 8\n',
              '# -Dbatchsize is ...\nparameters:\n',
              'parameters:\n  num_worker: ${num_worker:-2}\n',
              'parameters:\n  num_worker: ${num_worker:-1}   # here: why\n'):
    assert _template_problems(bad), bad


def test_each_parameter_is_defined_in_one_place():
  """No second copy of a parameter's declaration or help in the code: an
  add_argument for it or its help text outside parameters.py."""
  sources = [p for folder in ('pipeline', 'transforms', 'bench')
             for p in (ROOT / folder).rglob('*.py')
             if p.name != 'parameters.py']
  offenders = []
  for path in sources:
    text = path.read_text(encoding='utf-8')
    for p in TABLE:
      if re.search(r"add_argument\(\s*'--" + re.escape(p.name) + "'", text):
        offenders.append(f'{path.relative_to(ROOT)}: declares --{p.name}')
      if len(p.help) > 20 and p.help[:40] in text:
        offenders.append(f'{path.relative_to(ROOT)}: help of {p.name}')
    for stale in ('SUPPORTED_MODEL_TYPES', 'DECODE_PRIORITIES', 'IMAGE_TYPES',
                  'PIXEL_SCALES', 'PRECISIONS', 'BACKENDS ='):
      if stale in text:
        offenders.append(f'{path.relative_to(ROOT)}: {stale}')
  assert not offenders, offenders
