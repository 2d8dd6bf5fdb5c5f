#!/usr/bin/env bash
# A local Apache Flink standalone cluster for running ev-predict with Beam's
# portable FlinkRunner, fully offline once `setup` has filled the cache.
#
#   scripts/flink-cluster.sh setup    download (once) into build/flink/ and
#                                     assemble FLINK_HOME + the job-server jar
#   scripts/flink-cluster.sh start    1 JobManager + N TaskManagers on
#                                     127.0.0.1; waits until /overview shows
#                                     N TaskManagers (prints the logs if not)
#   scripts/flink-cluster.sh stop     stops all of it, SDK workers included
#                                     (safe to repeat)
#   scripts/flink-cluster.sh status   prints /overview (exit 1 when down)
#   scripts/flink-cluster.sh logs     prints the logs of this cluster
#   scripts/flink-cluster.sh env      prints the paths and ports (KEY=value)
#   scripts/flink-cluster.sh flags    prints the Beam flags that run a job on
#                                     it: ev-predict -D... $(... flags)
#
# Environment (defaults):
#   FLINK_TASKMANAGERS=2   TaskManagers to start
#   FLINK_TASK_SLOTS=1     taskmanager.numberOfTaskSlots
#   FLINK_REST_PORT=8081   JobManager REST/web port (on 127.0.0.1)
#   FLINK_RPC_PORT=6123    JobManager RPC port (TaskManagers connect to it)
#   FLINK_START_TIMEOUT=120       seconds to wait for the health check
#   FLINK_TM_MEMORY=2048m FLINK_JM_MEMORY=1024m  JVM process sizes
#   FLINK_CACHE=build/flink       downloads, FLINK_HOME, the job-server jar
#   FLINK_RUN_DIR=$FLINK_CACHE/run  conf, logs, pid files of a started cluster
#                                 (one per cluster: tests use their own)
#   EV_PREDICT_PYTHON=.venv/bin/python  python of the SDK workers
#
# Versions. Beam's Python SDK here is 2.77.0 and lists Flink 1.19, 1.20, 2.0,
# 2.1 and 2.2 (FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS), but the portable
# runner needs Beam's *Java* Flink runner, and the Maven registry reachable
# from here serves no beam-runners-flink-*-job-server jar at all (no version,
# e.g. org.apache.beam:beam-runners-flink-1.20-job-server:2.77.0 is "not
# found") and beam-runners-flink-<flink> only as beam-runners-flink-1.19
# 2.62.0 and 2.70.0, of which only 2.62.0 resolves with its dependencies
# (2.70.0 needs beam-runners-java-job-service 2.70.0, not served). So: Flink
# 1.19 (the runner is compiled against 1.19.0; the cluster is the 1.19.3
# bugfix release, same minor, so the same REST/RPC protocol), and the
# job-server jar is built here the way Beam's runners/flink/job-server build
# makes it: a shaded jar of the runner (main class FlinkJobServerDriver,
# META-INF/services merged). The job server ships that jar to the cluster
# with each job, so it must be self-contained. Beam's Python SDK 2.77 talks
# to it through the portability API (job, Fn and provision protos), which
# is what lets the Java and Python versions differ.
#
# SDK harness: PROCESS environment. Each TaskManager runs
# $FLINK_RUN_DIR/sdk-worker (written by start) for every SDK worker it
# needs: .venv's python (TensorFlow, Pillow, the editable `pipeline` and
# `transforms` packages) with cwd = the repository root, so relative paths
# in file lists resolve as they do for a DirectRunner run from there. It
# runs scripts/flink-sdk-worker, which does in Python what Beam's Go `boot`
# binary does (no Python package ships that binary): fetch the job's
# pipeline options from the runner's provision service and start
# sdk_worker_main, which logs to the TaskManager's log.
# Why not EXTERNAL with a Beam worker pool (worker_pool_main)? EXTERNAL
# takes one address for the whole job, so all TaskManagers of a host share
# one pool, and their worker ids collide: both TaskManagers ask for worker
# "1-1", the pool keeps one process per id, and when the first TaskManager
# stops its "1-1" the pool kills the other TaskManager's worker; that job
# then waits forever ("Still waiting for startup of environment from
# localhost:50000 for worker id 1-1"). Seen here with 2 TaskManagers.
# PROCESS workers belong to their TaskManager: nothing extra to run or stop.
# DOCKER would need Docker and Beam's SDK image (not here).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/cluster-common.sh
source "$ROOT/scripts/cluster-common.sh"
FLINK_VERSION=1.19.3
FLINK_MINOR=1.19
BEAM_JAVA_VERSION=2.62.0
CACHE=${FLINK_CACHE:-$ROOT/build/flink}
case $CACHE in /*) ;; *) CACHE=$ROOT/$CACHE ;; esac
DL=$CACHE/downloads
FLINK_HOME=$CACHE/flink-$FLINK_VERSION
JOB_SERVER_JAR=$CACHE/beam-runners-flink-$FLINK_MINOR-job-server-$BEAM_JAVA_VERSION.jar
M2_REPO=${FLINK_M2_REPO:-$CACHE/m2}
RUN=${FLINK_RUN_DIR:-$CACHE/run}
case $RUN in /*) ;; *) RUN=$ROOT/$RUN ;; esac
CONF=$RUN/conf
LOGS=$RUN/log
PIDS=$RUN/pid
SDK_WORKER=$RUN/sdk-worker

TASKMANAGERS=${FLINK_TASKMANAGERS:-2}
SLOTS=${FLINK_TASK_SLOTS:-1}
REST_PORT=${FLINK_REST_PORT:-8081}
RPC_PORT=${FLINK_RPC_PORT:-6123}
START_TIMEOUT=${FLINK_START_TIMEOUT:-120}
TM_MEMORY=${FLINK_TM_MEMORY:-2048m}
JM_MEMORY=${FLINK_JM_MEMORY:-1024m}
PYTHON=${EV_PREDICT_PYTHON:-$ROOT/.venv/bin/python}
PIP=$(dirname "$PYTHON")/pip

log() { echo "flink-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

overview() {
  curl -fsS --max-time 3 "http://127.0.0.1:$REST_PORT/overview" 2>/dev/null
}

flink_env() {
  export FLINK_CONF_DIR=$CONF FLINK_LOG_DIR=$LOGS FLINK_PID_DIR=$PIDS
  export FLINK_IDENT_STRING=ev-predict
}

# ---------------------------------------------------------------- setup

setup_flink_home() {
  if [[ -f $FLINK_HOME/.complete ]]; then
    return
  fi
  need java 'install a JDK 11 or 17'
  [[ -x $PIP ]] || die "$PIP missing: run 'make install' first"
  mkdir -p "$DL"
  local wheel sdist
  wheel=$(ls "$DL"/apache_flink-"$FLINK_VERSION"-*.whl 2>/dev/null | head -1 || true)
  sdist=$DL/apache-flink-libraries-$FLINK_VERSION.tar.gz
  if [[ -z $wheel || ! -f $sdist ]]; then
    # Only downloaded and unpacked: these pin apache-beam<2.49, never install.
    log "downloading apache-flink $FLINK_VERSION (wheel + libraries sdist)"
    # (The sdist's metadata step needs setuptools: .venv's, else an
    # isolated build environment.)
    local pkgs=("apache-flink==$FLINK_VERSION"
                "apache-flink-libraries==$FLINK_VERSION")
    "$PIP" download --no-deps --no-build-isolation -q -d "$DL" "${pkgs[@]}" ||
      "$PIP" download --no-deps -q -d "$DL" "${pkgs[@]}" ||
      die 'pip download of apache-flink failed'
    wheel=$(ls "$DL"/apache_flink-"$FLINK_VERSION"-*.whl | head -1)
  fi
  log "assembling $FLINK_HOME"
  local tmp=$CACHE/.assemble
  rm -rf "$tmp" "$FLINK_HOME"
  mkdir -p "$tmp"
  (cd "$tmp" && "$PYTHON" -m zipfile -e "$wheel" wheel >/dev/null)
  tar --no-same-owner -xzf "$sdist" -C "$tmp" \
    "apache-flink-libraries-$FLINK_VERSION/deps/lib" \
    "apache-flink-libraries-$FLINK_VERSION/deps/bin/bash-java-utils.jar"
  mkdir -p "$FLINK_HOME"
  mv "$tmp/wheel/pyflink/bin" "$tmp/wheel/pyflink/conf" "$FLINK_HOME/"
  mv "$tmp/apache-flink-libraries-$FLINK_VERSION/deps/lib" "$FLINK_HOME/lib"
  mv "$tmp/apache-flink-libraries-$FLINK_VERSION/deps/bin/bash-java-utils.jar" \
    "$FLINK_HOME/bin/"
  chmod +x "$FLINK_HOME"/bin/*.sh "$FLINK_HOME/bin/flink"
  rm -rf "$tmp"
  touch "$FLINK_HOME/.complete"
}

setup_job_server_jar() {
  if [[ -f $JOB_SERVER_JAR ]]; then
    return
  fi
  need mvn 'install Maven'
  local dir=$CACHE/job-server-build
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/flink-cluster.sh: Beam's Flink job server as one
     shaded jar, as Beam's runners/flink/job-server build makes it. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ev-predict</groupId>
  <artifactId>beam-runners-flink-$FLINK_MINOR-job-server</artifactId>
  <version>$BEAM_JAVA_VERSION</version>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-$FLINK_MINOR</artifactId>
      <version>$BEAM_JAVA_VERSION</version>
      <exclusions>
        <exclusion>
          <groupId>commons-logging</groupId>
          <artifactId>commons-logging</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.30</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>jcl-over-slf4j</artifactId>
      <version>1.7.30</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-shade-plugin</artifactId>
        <version>3.6.0</version>
        <executions>
          <execution>
            <phase>package</phase>
            <goals><goal>shade</goal></goals>
            <configuration>
              <createDependencyReducedPom>false</createDependencyReducedPom>
              <filters>
                <filter>
                  <artifact>*:*</artifact>
                  <excludes>
                    <exclude>META-INF/*.SF</exclude>
                    <exclude>META-INF/*.DSA</exclude>
                    <exclude>META-INF/*.RSA</exclude>
                    <exclude>module-info.class</exclude>
                  </excludes>
                </filter>
              </filters>
              <transformers>
                <transformer implementation="org.apache.maven.plugins.shade.resource.ServicesResourceTransformer"/>
                <transformer implementation="org.apache.maven.plugins.shade.resource.AppendingTransformer">
                  <resource>reference.conf</resource>
                </transformer>
                <transformer implementation="org.apache.maven.plugins.shade.resource.ManifestResourceTransformer">
                  <mainClass>org.apache.beam.runners.flink.FlinkJobServerDriver</mainClass>
                </transformer>
              </transformers>
            </configuration>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
EOF
  log "building $(basename "$JOB_SERVER_JAR") with Maven (log: $dir/build.log)"
  if ! (cd "$dir" && mvn -B -q package -Dmaven.repo.local="$M2_REPO" \
          >build.log 2>&1); then
    tail -40 "$dir/build.log" >&2
    die "Maven build of the job-server jar failed"
  fi
  mv "$dir/target/beam-runners-flink-$FLINK_MINOR-job-server-$BEAM_JAVA_VERSION.jar" \
    "$JOB_SERVER_JAR.tmp"
  mv "$JOB_SERVER_JAR.tmp" "$JOB_SERVER_JAR"
  rm -rf "$dir/target"
}

cmd_setup() {
  local t0=$SECONDS
  setup_flink_home
  setup_job_server_jar
  log "ready in $((SECONDS - t0)) s: FLINK_HOME=$FLINK_HOME"
  log "job server jar: $JOB_SERVER_JAR"
}

# ---------------------------------------------------------------- start

write_conf() {
  rm -rf "$CONF"
  mkdir -p "$CONF" "$LOGS" "$PIDS"
  cp "$FLINK_HOME"/conf/log4j*.properties "$CONF/"
  local java_opts
  java_opts=$(sed -n 's/^ *all: *//p' "$FLINK_HOME/conf/config.yaml" | head -1)
  cat >"$CONF/config.yaml" <<EOF
# Written by scripts/flink-cluster.sh start: a loopback-only cluster.
env:
  java:
    opts:
      all: $java_opts
jobmanager:
  bind-host: 127.0.0.1
  rpc:
    address: 127.0.0.1
    port: $RPC_PORT
  memory:
    process:
      size: $JM_MEMORY
  execution:
    failover-strategy: region
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: $SLOTS
  memory:
    # The JVM only: SDK workers (TensorFlow) are separate processes.
    process:
      size: $TM_MEMORY
    network:
      fraction: 0.2
  network:
    sort-shuffle:
      # Flink's default (512 buffers per blocking result) made two tasks on
      # one TaskManager fail to deploy ("Insufficient number of network
      # buffers: required 512, but only 464 available") and burn restarts.
      min-buffers: 128
parallelism:
  default: 1
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: $REST_PORT
blob:
  server:
    port: 0
# A lost TaskManager is noticed in seconds, not after the default 50 s, so
# the restart strategy below reruns its tasks on the others promptly.
heartbeat:
  interval: 2000
  timeout: 20000
# Every failed task counts as one attempt, and a lost TaskManager fails
# several at once (its own and their partners'): 3 was used up by one loss.
restart-strategy:
  type: fixed-delay
  fixed-delay:
    attempts: 10
    delay: 5 s
EOF
}

wait_healthy() {
  local deadline=$((SECONDS + START_TIMEOUT)) json tms
  while ((SECONDS < deadline)); do
    if json=$(overview); then
      tms=$(sed -n 's/.*"taskmanagers":\([0-9]*\).*/\1/p' <<<"$json")
      if [[ ${tms:-0} -ge $TASKMANAGERS ]]; then
        return 0
      fi
    fi
    for f in "$PIDS"/*.pid; do
      [[ -f $f ]] || continue
      while read -r p; do
        kill -0 "$p" 2>/dev/null || { log "a process died: $(basename "$f") $p"; return 1; }
      done <"$f"
    done
    sleep 1
  done
  log "no healthy cluster after ${START_TIMEOUT}s (overview: ${json:-none})"
  return 1
}

cmd_start() {
  local t0=$SECONDS
  need curl 'for the health check'
  [[ -f $FLINK_HOME/.complete && -f $JOB_SERVER_JAR ]] || cmd_setup
  if overview >/dev/null; then
    if [[ -s $PIDS/flink-ev-predict-standalonesession.pid ]]; then
      log "already running on port $REST_PORT"
      cmd_status
      return 0
    fi
    die "something else answers on 127.0.0.1:$REST_PORT (set FLINK_REST_PORT)"
  fi
  if compgen -G "$PIDS/*.pid" >/dev/null; then
    # Left by a cluster that died or was half stopped: end what remains.
    cmd_stop 2>/dev/null
  fi
  port_busy "$REST_PORT" && die "port $REST_PORT is in use (set FLINK_REST_PORT)"
  port_busy "$RPC_PORT" && die "port $RPC_PORT is in use (set FLINK_RPC_PORT)"
  write_conf
  rm -f "$LOGS"/*
  write_sdk_worker
  flink_env
  # The daemons (and so the SDK workers) run with cwd = the repository root.
  cd "$ROOT"
  local i ok=1
  "$FLINK_HOME/bin/jobmanager.sh" start >>"$LOGS/start.log" 2>&1 || ok=
  for ((i = 0; ok && i < TASKMANAGERS; i++)); do
    "$FLINK_HOME/bin/taskmanager.sh" start >>"$LOGS/start.log" 2>&1 || ok=
  done
  if [[ -z $ok ]] || ! wait_healthy; then
    cmd_logs >&2 || true
    cmd_stop || true
    die "cluster did not start (logs above)"
  fi
  log "up in $((SECONDS - t0)) s: $TASKMANAGERS TaskManager(s) x $SLOTS" \
      "slot(s), web UI http://127.0.0.1:$REST_PORT"
}

# ---------------------------------------------------------------- stop etc.

cmd_stop() {
  local ids=() f p c left
  for f in "$PIDS"/*.pid; do
    [[ -f $f ]] || continue
    while read -r p; do
      [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null || continue
      ids+=("$(proc_id "$p")")
      # SDK workers and anything else the daemon started.
      for c in $(descendants "$p"); do
        ids+=("$(proc_id "$c")")
      done
    done <"$f"
  done
  if [[ -d $FLINK_HOME/bin && -d $CONF ]]; then
    flink_env
    # SIGTERM, then SIGKILL after 10 s; a TaskManager ends its SDK workers.
    "$FLINK_HOME/bin/taskmanager.sh" stop-all >/dev/null 2>&1 || true
    "$FLINK_HOME/bin/jobmanager.sh" stop-all >/dev/null 2>&1 || true
  fi
  left=$(alive "${ids[@]:-}")
  if [[ -n $left ]]; then
    kill -TERM $left 2>/dev/null || true
    for _ in $(seq 20); do
      left=$(alive "${ids[@]}")
      [[ -n $left ]] || break
      sleep 0.5
    done
    [[ -z $left ]] || kill -KILL $left 2>/dev/null || true
  fi
  rm -f "$PIDS"/*.pid
  log "stopped"
}

cmd_status() {
  local json
  if json=$(overview); then
    echo "$json"
  else
    log "no cluster answers on 127.0.0.1:$REST_PORT"
    return 1
  fi
}

cmd_logs() {
  local f
  for f in "$LOGS"/*; do
    [[ -f $f ]] || continue
    echo "===== $f"
    tail -n "${FLINK_LOG_LINES:-80}" "$f"
  done
}

cmd_env() {
  cat <<EOF
FLINK_HOME=$FLINK_HOME
FLINK_VERSION=$FLINK_VERSION
FLINK_MINOR=$FLINK_MINOR
BEAM_JAVA_VERSION=$BEAM_JAVA_VERSION
JOB_SERVER_JAR=$JOB_SERVER_JAR
FLINK_REST_PORT=$REST_PORT
SDK_WORKER=$SDK_WORKER
FLINK_TASKMANAGERS=$TASKMANAGERS
FLINK_TASK_SLOTS=$SLOTS
FLINK_RUN_DIR=$RUN
FLINK_LOG_DIR=$LOGS
EOF
}

cmd_flags() {
  # One flag a line: `ev-predict ... $(scripts/flink-cluster.sh flags)` (paths
  # without spaces), or `mapfile -t flags < <(... flags)`.
  printf '%s\n' --runner=FlinkRunner "--flink_master=localhost:$REST_PORT" \
    "--flink_version=$FLINK_MINOR" "--flink_job_server_jar=$JOB_SERVER_JAR" \
    --environment_type=PROCESS \
    "--environment_config={\"command\":\"$SDK_WORKER\"}"
}

case ${1:-} in
  setup) cmd_setup ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  env) cmd_env ;;
  flags) cmd_flags ;;
  *) echo "usage: $0 {setup|start|stop|status|logs|env|flags}" >&2; exit 2 ;;
esac
