"""What every part of the benchmark shares: the machine's constants, the
run's settings (Config) and the run's state (Context), passed explicitly
instead of living in module globals."""
import dataclasses
import os
import sys
import time
from pathlib import Path

from ev_predict.transforms.backends import default_batch_size

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / 'build' / 'bench'     # git-ignored: corpora, models, logs
BIN = Path(sys.executable).parent
CORES = os.cpu_count() or 1
# ev-predict's default batch size on this machine (pipeline.graph).
EV_BATCH = default_batch_size(CORES)
BATCH_SIZES = tuple(sorted({8, 16, 32, 64, EV_BATCH}))
IMAGE = 224


class VariantFailed(Exception):
  pass


def log(msg: str) -> None:
  sys.stderr.write(f'[bench {time.strftime("%H:%M:%S")}] {msg}\n')
  sys.stderr.flush()


@dataclasses.dataclass
class Config:
  """The command line, parsed once."""
  sizes: list
  out: Path
  quick: bool = False
  repeat: int = 1
  quiet_wait: float = 20.0
  rounds: int = 3
  paired_sizes: list = None
  profile: bool = True
  diagnostics: bool = True
  memory: bool = False
  memory_lines: tuple = (1000, 100000)
  resume: bool = False
  old_engine: Path = Path('/work/main')
  resume_pairs: int = 3
  resume_lines: int = 100_000
  resume_memory_lines: tuple = (10_000, 100_000, 1_000_000)
  resume_scan_lines: tuple = (1_000_000, 10_000_000)
  only: frozenset = frozenset()

  def want(self, part: str) -> bool:
    """--only names exactly what runs; without it the --no-* flags drop
    parts and paired/memory/resume need --rounds/--memory/--kill-resume."""
    if self.only:
      return part in self.only
    return not ((part == 'profile' and not self.profile) or
                (part == 'diagnostics' and not self.diagnostics) or
                (part == 'paired' and not self.rounds) or
                (part == 'memory' and not self.memory) or
                (part == 'resume' and not self.resume))

  @property
  def ceiling_seconds(self) -> float:
    return 1.5 if self.quick else 5.0

  @property
  def round_seconds(self) -> float:
    return 1.0 if self.quick else 3.0

  @property
  def memory_result_sizes(self) -> tuple:
    return (200, 1000) if self.quick else (200, 3000)


@dataclasses.dataclass
class Context:
  """One benchmark run's state: where it works, how long it waited for a
  quiet machine, and which models ev-predict has already been warmed up
  with (the first run converts the model into ev-predict's cache)."""
  work: Path = WORK
  quiet_wait: float = 0.0          # max seconds per measurement; 0: off
  quiet_threshold: float = 0.15
  waited_s: float = 0.0
  warmups: dict = dataclasses.field(default_factory=dict)

  @property
  def ev_cache(self) -> Path:
    """ev-predict's model cache (OpenVINO conversions, remote models) for
    the benchmark, so nothing lands in the user's ~/.cache."""
    return self.work / 'ev-predict-cache'

  def child_env(self) -> dict:
    """What ev-predict's CLI sets before TensorFlow starts; every TF child
    gets it."""
    return {'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': '',
            'EV_PREDICT_CACHE': str(self.ev_cache)}
