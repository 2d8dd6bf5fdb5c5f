#!/usr/bin/env bash
# Shared by scripts/flink-cluster.sh and scripts/spark-cluster.sh (sourced,
# not run): process bookkeeping and the SDK worker command. They set ROOT,
# PYTHON, SDK_WORKER and LOGS, and define log/die, before calling these.

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found ($2)"
}

port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

# "pid:start time" (field 22 of /proc/PID/stat), so a pid reused meanwhile by
# an unrelated process is never signalled.
proc_id() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  echo "$1:$(cut -d' ' -f20 <<<"$stat")"
}

alive() {
  local id out=()
  for id in "$@"; do
    [[ -n $id ]] || continue
    [[ $(proc_id "${id%%:*}") == "$id" ]] && out+=("${id%%:*}")
  done
  echo "${out[@]:-}"
}

write_sdk_worker() {
  [[ -x $PYTHON ]] || die "$PYTHON missing: run 'make install' first"
  # The PROCESS environment's command: a TaskManager (Flink) or an executor
  # (Spark) runs it once per SDK worker (it takes no arguments of its own, so
  # the python, the working directory and the log file are fixed here).
  {
    echo '#!/usr/bin/env bash'
    echo "# Written by scripts/$(basename "$0") start."
    echo "cd $(printf %q "$ROOT") || exit 1"
    echo 'export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}'
    echo 'export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}'
    printf 'exec %q %q "$@" 2>>%q\n' "$PYTHON" "$ROOT/scripts/flink-sdk-worker" \
      "$LOGS/sdk-workers.log"
  } >"$SDK_WORKER"
  chmod +x "$SDK_WORKER"
}
