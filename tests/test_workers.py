"""Local parallelism: several DirectRunner worker processes give the same
result file (after sorting lines) as one."""
from tests.conftest import write_image
from tests.helpers import run_job


def test_one_and_two_workers_identical(tmp_path, model_dirs):
  paths = [write_image(tmp_path / f'{i}.jpg', 100 + i, size=(50 + i, 40))
           for i in range(45)]
  paths += [str(tmp_path / 'missing.jpg')]
  one = run_job(tmp_path, paths, model_dirs['uint8'], name='one',
                batch_size=8)
  two = run_job(tmp_path, paths, model_dirs['uint8'], name='two',
                batch_size=8, num_worker=2)
  assert sorted(one[0]) == sorted(two[0])
  assert sorted(one[1]) == sorted(two[1])
  assert len(one[0]) == 45 and len(one[1]) == 1
  assert two[2]['workers'] == 2 and two[2]['accounting_ok']
