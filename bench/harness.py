"""How the benchmark measures: child processes timed with their own CPU
time and peak RSS (os.wait4), the other processes' share of the machine
meanwhile, timed loops and windows inside a child, and the marginal rate
between two corpus sizes."""
import json
import os
import subprocess
import sys
import time

from bench.config import CORES, ROOT, log


def wait_quiet(ctx) -> float:
  """Waits (at most ctx.quiet_wait s per measurement) until other processes
  use less than ctx.quiet_threshold of the machine; returns their last
  observed share."""
  deadline = time.time() + ctx.quiet_wait
  while True:
    b0 = system_busy_s()
    time.sleep(0.5)
    share = max(0.0, (system_busy_s() - b0) / 0.5 / CORES)
    if share < ctx.quiet_threshold or time.time() >= deadline:
      return share
    ctx.waited_s += 0.5


def run_child(ctx, child: str, arg: dict, name: str) -> dict:
  """Runs one of bench.child's functions in a fresh process (python -m
  bench.child); run_cmd's figures plus 'result', what the function
  returned."""
  result_path = ctx.work / 'logs' / f'{name}.result.json'
  cmd = [sys.executable, '-m', 'bench.child', child, json.dumps(arg),
         str(result_path)]
  return run_cmd(ctx, cmd, name, result_path)


def run_cmd(ctx, cmd, name: str, result_path=None, timeout=None, env=None,
            on_poll=None) -> dict:
  """Runs a command to completion; returns wall time, its CPU time and peak
  RSS (os.wait4) and the JSON it left at result_path.

  env: variables set over ctx.child_env() (a PYTHONPATH there replaces the
  caller's: which ev-predict code runs). on_poll(pid, seconds): called about
  every 20 ms while the command runs; when it returns True the command is
  SIGKILLed (the run's 'killed' is then True)."""
  logs = ctx.work / 'logs'
  logs.mkdir(parents=True, exist_ok=True)
  log_path = logs / f'{name}.log'
  if result_path and result_path.exists():
    result_path.unlink()
  child_env = dict(os.environ)
  child_env.update(ctx.child_env())
  child_env.update(env or {})
  # The children import bench (python -m) and tests from the checkout.
  child_env['PYTHONPATH'] = (str(ROOT) + os.pathsep +
                             child_env.get('PYTHONPATH', ''))
  others_before = wait_quiet(ctx) if ctx.quiet_wait else None
  with open(log_path, 'wb') as out:
    out.write((' '.join(cmd) + '\n').encode())
    out.flush()
    busy0 = system_busy_s()
    started_at = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            cwd=ROOT, env=child_env)
    deadline = None if timeout is None else started + timeout
    killed = False
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if (deadline and time.perf_counter() > deadline) or (
          on_poll and on_poll(proc.pid, time.perf_counter() - started)):
        killed = not (deadline and time.perf_counter() > deadline)
        proc.kill()
        pid, status, usage = os.wait4(proc.pid, 0)
        break
      time.sleep(0.02)
    wall = time.perf_counter() - started
    busy = system_busy_s() - busy0
  proc.returncode = os.waitstatus_to_exitcode(status)
  res = {
      'rc': proc.returncode, 'wall_s': wall, 'user_s': usage.ru_utime,
      'sys_s': usage.ru_stime, 'cpu_s': usage.ru_utime + usage.ru_stime,
      'cpu_util': (usage.ru_utime + usage.ru_stime) / wall / CORES,
      'peak_rss_mb': usage.ru_maxrss / 1024, 'log': str(log_path),
      'others_util': others_util(busy, usage.ru_utime + usage.ru_stime,
                                 wall),
      'others_before': others_before,
      'started_at': started_at, 'ended_at': started_at + wall,
      'killed': killed,
  }
  if result_path and result_path.exists():
    res['result'] = json.loads(result_path.read_text())
  if proc.returncode != 0 and not killed:
    tail = log_path.read_text(errors='replace')[-1500:]
    log(f'{name} exited {proc.returncode}; log tail:\n{tail}')
  return res


def system_busy_s() -> float:
  """CPU-seconds all processes have spent busy since boot (/proc/stat)."""
  try:
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return float('nan')
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def others_util(busy_delta: float, own_cpu: float, wall: float) -> float:
  """Share of all cores that other processes used while we measured."""
  return max(0.0, (busy_delta - own_cpu) / wall / CORES)


# --- inside a child: timed loops ------------------------------------------

def timed_loop(fn, min_seconds: float, min_calls: int = 3):
  """Calls fn() until both limits are reached; (calls, wall, cpu, share of
  the machine other processes used meanwhile)."""
  import resource  # pylint: disable=import-outside-toplevel
  r0 = resource.getrusage(resource.RUSAGE_SELF)
  b0 = system_busy_s()
  t0 = time.perf_counter()
  calls = 0
  while calls < min_calls or time.perf_counter() - t0 < min_seconds:
    fn()
    calls += 1
  wall = time.perf_counter() - t0
  r1 = resource.getrusage(resource.RUSAGE_SELF)
  cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
  return calls, wall, cpu, others_util(system_busy_s() - b0, cpu, wall)


def windows(fn, per_call: int, seconds: float, count: int = 5) -> dict:
  """Rate of fn (per_call images per call) over several short windows.

  Other processes come and go; a ceiling is what the code reaches when it
  has the cores, so the best window is the ceiling and the mean is kept
  beside it. CPU-ms per image is taken over all windows."""
  rates, cpu_total, wall_total, images, best = [], 0.0, 0.0, 0, None
  for _ in range(count):
    calls, wall, cpu, others = timed_loop(fn, seconds / count, min_calls=1)
    rate = calls * per_call / wall
    rates.append(rate)
    cpu_total += cpu
    wall_total += wall
    images += calls * per_call
    if best is None or rate > best['img_s']:
      best = {'img_s': rate, 'cpu_util': cpu / wall / CORES,
              'others_util': others}
  return dict(best, img_s_mean=sum(rates) / len(rates),
              cpu_ms_per_img=1000 * cpu_total / images,
              cpu_util_mean=cpu_total / wall_total / CORES, windows=count)


def mean_rate(fn, per_call: int, seconds: float) -> dict:
  """img/s of fn over one window: images / wall time, the statistic an
  end-to-end run's marginal rate is (no best-of selection)."""
  calls, wall, cpu, others = timed_loop(fn, seconds)
  return {'img_s': calls * per_call / wall,
          'cpu_ms_per_img': 1000 * cpu / (calls * per_call),
          'cpu_util': cpu / wall / CORES,
          'others_util': others, 'seconds': wall}


# --- between runs: the marginal rate --------------------------------------

def median(values):
  values = sorted(values)
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] +
                                               values[mid]) / 2


def marginal(runs) -> dict:
  """Slope and intercept between the two corpus sizes."""
  a, b = sorted(runs, key=lambda r: r['n'])
  dt = b['wall_s'] - a['wall_s']
  rate = (b['n'] - a['n']) / dt if dt > 0 else float('nan')
  startup = a['wall_s'] - a['n'] / rate if dt > 0 else float('nan')
  out = {
      'marginal_img_s': rate,
      # A slope from less than 5 s of extra work, or taken while other
      # processes used a quarter of the machine, is noise-prone.
      'reliable': bool(dt >= 5 and max(a['others_util'],
                                        b['others_util']) < 0.25),
      'startup_s': startup,
      'end_to_end_img_s': b['n'] / b['wall_s'],
      'cpu_util': b['cpu_util'],
      'marginal_cpu_util': ((b['cpu_s'] - a['cpu_s']) / dt / CORES
                            if dt > 0 else float('nan')),
      'marginal_cpu_ms_per_img': 1000 * (b['cpu_s'] - a['cpu_s']) / (
          b['n'] - a['n']),
      'peak_rss_mb': b['peak_rss_mb'],
      'peak_rss_mb_small': a['peak_rss_mb'],
      'others_util': max(a['others_util'], b['others_util']),
      'runs': [{k: r[k] for k in ('n', 'wall_s', 'cpu_s', 'cpu_util',
                                  'peak_rss_mb', 'others_util', 'summary',
                                  'phases', 'log')
                if k in r} for r in (a, b)],
  }
  out['backends'] = (b.get('summary') or {}).get('backends')
  if 'summary' in a and 'summary' in b:
    # ev-predict's own clock (plan() to summary written): no interpreter
    # start-up or shutdown in it.
    djob = b['summary']['wall_seconds'] - a['summary']['wall_seconds']
    out['job_marginal_img_s'] = (b['n'] - a['n']) / djob if djob > 0 \
        else float('nan')
  return out


# --- while a command runs: the memory of its whole process tree ------------

class TreeRss:
  """An on_poll for run_cmd: samples, every `period` s, the resident memory
  of the command and of every process below it (/proc), so that a job
  whose work runs in child processes (SDK workers) is measured whole, not
  only by its largest process as os.wait4's ru_maxrss is.

  peak_tree_mb: the largest sum of VmRSS over the tree in one sample;
  peak_launcher_mb: the command's own VmHWM (its kernel-kept peak) at the
  last sample; processes: the most processes seen in the tree at once."""

  def __init__(self, period: float = 0.25, then=None):
    self.period, self.then = period, then
    self.peak_tree_mb = self.peak_launcher_mb = 0.0
    self.processes = 0
    self.samples = 0
    self._next = 0.0

  def __call__(self, pid: int, seconds: float) -> bool:
    if seconds >= self._next:
      self._next = seconds + self.period
      self._sample(pid)
    return bool(self.then and self.then(pid, seconds))

  def _sample(self, root: int) -> None:
    tree = descendants(root) | {root}
    total = 0.0
    for pid in tree:
      status = _status_kb(pid, (b'VmRSS:', b'VmHWM:'))
      total += status.get(b'VmRSS:', 0) / 1024
      if pid == root and b'VmHWM:' in status:
        self.peak_launcher_mb = max(self.peak_launcher_mb,
                                    status[b'VmHWM:'] / 1024)
    self.peak_tree_mb = max(self.peak_tree_mb, total)
    self.processes = max(self.processes, len(tree))
    self.samples += 1

  def figures(self) -> dict:
    return {'peak_tree_mb': self.peak_tree_mb,
            'peak_launcher_hwm_mb': self.peak_launcher_mb,
            'max_processes': self.processes, 'rss_samples': self.samples}


def descendants(root: int) -> set:
  parents = {}
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/stat', 'rb') as f:
        parents[int(name)] = int(f.read().rsplit(b')', 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
      continue
  found, frontier = set(), {root}
  while frontier:
    frontier = {p for p, pp in parents.items()
                if pp in frontier and p not in found}
    found |= frontier
  return found


def _status_kb(pid: int, keys) -> dict:
  out = {}
  try:
    with open(f'/proc/{pid}/status', 'rb') as f:
      for line in f:
        if line.startswith(keys):
          key, value = line.split()[:2]
          out[key] = int(value)
  except (OSError, ValueError):
    pass
  return out
