"""One measurement in a fresh process, as bench.harness.run_child starts it:

    python -m bench.child NAME ARG_JSON RESULT_PATH

runs CHILDREN[NAME](ARG) and writes what it returns to RESULT_PATH as JSON.
A fresh process per measurement keeps TensorFlow out of the parent and gives
each figure its own CPU time and peak RSS."""
import json
import sys
from pathlib import Path

from bench import baselines, ceilings, memory, models, peers, resume

CHILDREN = {
    'list-memory': memory.child_list_memory,
    'build-model': models.child_build_model,
    'model-ceiling': ceilings.child_model_ceiling,
    'decode-ceiling': ceilings.child_decode_ceiling,
    'round-ceilings': ceilings.child_round_ceilings,
    'naive': baselines.child_naive,
    'beam-example': baselines.child_beam_example,
    'beam-example-ov': baselines.child_beam_example_openvino,
    'scan-time': resume.child_scan_time,
    'commit-cost': resume.child_commit_cost,
    'minimal-decode': ceilings.child_minimal_decode,
    'loop': ceilings.child_loop,
    'spark': peers.child_spark,
    'ray': peers.child_ray,
}


def main(argv=None) -> int:
  name, arg, result_path = sys.argv[1:] if argv is None else argv
  result = CHILDREN[name](json.loads(arg))
  Path(result_path).write_text(json.dumps(result, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
