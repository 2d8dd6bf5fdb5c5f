#!/usr/bin/env bash
# A local Apache Spark standalone cluster for running ev-predict with Beam's
# portable SparkRunner, fully offline once `setup` has filled the cache.
#
#   scripts/spark-cluster.sh setup    download (once) into build/spark/ and
#                                     assemble SPARK_HOME + the job-server jar
#   scripts/spark-cluster.sh start    1 master + N workers on 127.0.0.1;
#                                     waits until the master's /json/ shows
#                                     N ALIVE workers (prints the logs if not)
#   scripts/spark-cluster.sh stop     stops all of it, executors and SDK
#                                     workers included (safe to repeat)
#   scripts/spark-cluster.sh status   prints the master's /json/ (exit 1 when
#                                     down)
#   scripts/spark-cluster.sh logs     prints the logs of this cluster
#   scripts/spark-cluster.sh env      prints the paths and ports (KEY=value)
#   scripts/spark-cluster.sh flags    prints the Beam flags that run a job on
#                                     it: ev-predict -D... $(... flags)
#
# Environment (defaults):
#   SPARK_WORKERS=2            workers to start
#   SPARK_WORKER_CORES=1       cores each worker offers (= its executor's
#                              task slots: tasks run in parallel per worker)
#   SPARK_WORKER_MEMORY=2g     memory each worker offers to executors
#   SPARK_EXECUTOR_MEMORY=1g   JVM heap of an executor (SDK workers, i.e.
#                              TensorFlow, are separate processes)
#   SPARK_MASTER_PORT=7177     master RPC port (spark://127.0.0.1:7177)
#   SPARK_MASTER_WEBUI_PORT=8180   master web UI + /json/ (health check)
#   SPARK_WORKER_WEBUI_PORT=8182   web UI of worker 1; worker i gets +i-1
#                              (0: each a free port; the master's /json/
#                              lists them as webuiaddress)
#   SPARK_START_TIMEOUT=120    seconds to wait for the health check
#   SPARK_CACHE=build/spark    downloads, SPARK_HOME, the job-server jar
#   SPARK_RUN_DIR=$SPARK_CACHE/run  conf, logs, pid files, work dirs of a
#                              started cluster (one per cluster: tests use
#                              their own)
#   EV_PREDICT_PYTHON=.venv/bin/python  python of the SDK workers
# (Defaults differ from Spark's own 7077/8080/8081: no collision with a
# Flink cluster of scripts/flink-cluster.sh, whose REST port is 8081.)
#
# Versions. Beam's Python SDK here is 2.77.0, but the portable runner needs
# Beam's *Java* Spark runner, and the Maven registry reachable from here
# serves neither org.apache.beam:beam-runners-spark-3-job-server nor
# beam-runners-spark-3 at 2.77.0 ("Could not find artifact"); the runner
# 2.62.0 resolves with its dependencies (the version of the Flink job server
# of scripts/flink-cluster.sh too). So the job-server jar is built here the
# way Beam's runners/spark/3/job-server build makes it: a shaded jar of
# beam-runners-spark-3 2.62.0 plus Spark itself (main class
# SparkJobServerDriver, META-INF/services merged). The runner's POM has
# Spark as `provided`, compiled against Spark 3.2.2 / Scala 2.12, and Beam's
# build checks it against Spark 3.1.1 to 3.5.0 (runners/spark/3/build.gradle,
# sparkVersions). Spark supports Java 17 (the JDK here) only from 3.3 on, so
# not 3.2.2 but Spark 3.5 (the newest 3.x line; Scala 2.12; Java 8/11/17),
# its 3.5.9 bugfix release, the same for the cluster (PyPI's `pyspark` 3.5.9
# sdist ships Spark's jars/, bin/ and sbin/; only downloaded and unpacked,
# never installed in .venv) and for the Spark inside the job-server jar
# (Maven's spark-core_2.12 and spark-streaming_2.12 3.5.9): a standalone
# master takes drivers of its own Spark version only. The job server is the
# Spark driver: Beam's Python SparkRunner starts it (java -jar, adding the
# --add-opens Java 17 needs) with --spark-master-url, runs the job and stops
# it at exit. The jar is shipped to the executors with each job, so it must
# be self-contained; its guava (33, for Beam's Google libraries) is
# relocated, since executors load Spark's guava 14 first. Beam's Python SDK
# 2.77 talks to the job server through the portability API (job, Fn and
# provision protos), which is what lets the Java and Python versions differ.
#
# SDK harness: PROCESS environment, as for Flink. Each executor runs
# $SPARK_RUN_DIR/sdk-worker (written by start) for every SDK worker it
# needs: .venv's python with cwd = the repository root, running
# scripts/flink-sdk-worker (Beam's Go `boot` done in Python; it is not
# Flink-specific). Its log: $SPARK_RUN_DIR/log/sdk-workers.log.
# The driver binds 127.0.0.1 and has no web UI (flags:
# --job_server_jvm_properties), so nothing listens beyond the loopback.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/cluster-common.sh
source "$ROOT/scripts/cluster-common.sh"
SPARK_VERSION=3.5.9
SCALA_BINARY=2.12
BEAM_JAVA_VERSION=2.62.0
CACHE=${SPARK_CACHE:-$ROOT/build/spark}
case $CACHE in /*) ;; *) CACHE=$ROOT/$CACHE ;; esac
DL=$CACHE/downloads
SPARK_HOME=$CACHE/spark-$SPARK_VERSION
JOB_SERVER_JAR=$CACHE/beam-runners-spark-3-job-server-$BEAM_JAVA_VERSION-spark-$SPARK_VERSION.jar
M2_REPO=${SPARK_M2_REPO:-$CACHE/m2}
RUN=${SPARK_RUN_DIR:-$CACHE/run}
case $RUN in /*) ;; *) RUN=$ROOT/$RUN ;; esac
CONF=$RUN/conf
LOGS=$RUN/log
PIDS=$RUN/pid
WORK=$RUN/work
SDK_WORKER=$RUN/sdk-worker

WORKERS=${SPARK_WORKERS:-2}
WORKER_CORES=${SPARK_WORKER_CORES:-1}
WORKER_MEMORY=${SPARK_WORKER_MEMORY:-2g}
EXECUTOR_MEMORY=${SPARK_EXECUTOR_MEMORY:-1g}
MASTER_PORT=${SPARK_MASTER_PORT:-7177}
MASTER_UI_PORT=${SPARK_MASTER_WEBUI_PORT:-8180}
WORKER_UI_PORT=${SPARK_WORKER_WEBUI_PORT:-8182}
START_TIMEOUT=${SPARK_START_TIMEOUT:-120}
PYTHON=${EV_PREDICT_PYTHON:-$ROOT/.venv/bin/python}
PIP=$(dirname "$PYTHON")/pip
MASTER_URL=spark://127.0.0.1:$MASTER_PORT
MASTER_CLASS=org.apache.spark.deploy.master.Master
WORKER_CLASS=org.apache.spark.deploy.worker.Worker

log() { echo "spark-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

master_json() {
  curl -fsS --max-time 3 "http://127.0.0.1:$MASTER_UI_PORT/json/" 2>/dev/null
}

spark_env() {
  # Read by Spark's bin/ and sbin/ scripts (spark-daemon.sh, spark-class).
  export SPARK_HOME SPARK_CONF_DIR=$CONF SPARK_LOG_DIR=$LOGS
  export SPARK_PID_DIR=$PIDS SPARK_IDENT_STRING=ev-predict
  export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOCAL_HOSTNAME=127.0.0.1
  export SPARK_WORKER_DIR=$WORK
  # Spark's own variables that would change what the scripts do: never
  # pass them on (SPARK_MASTER makes spark-daemon.sh rsync; SPARK_NO_DAEMONIZE,
  # set at all, even empty, runs the daemon in the foreground).
  unset SPARK_MASTER SPARK_WORKER_INSTANCES SPARK_DAEMON_CLASSPATH
  unset SPARK_NO_DAEMONIZE
}

# ---------------------------------------------------------------- setup

setup_spark_home() {
  if [[ -f $SPARK_HOME/.complete ]]; then
    return
  fi
  need java 'install a JDK 11 or 17'
  [[ -x $PIP ]] || die "$PIP missing: run 'make install' first"
  mkdir -p "$DL"
  local sdist=$DL/pyspark-$SPARK_VERSION.tar.gz
  if [[ ! -f $sdist ]]; then
    # Only downloaded and unpacked: Spark's jars and scripts, not pyspark.
    log "downloading pyspark $SPARK_VERSION (sdist with Spark's jars, ~320 MB)"
    "$PIP" download --no-deps --no-binary :all: --no-build-isolation -q \
        -d "$DL" "pyspark==$SPARK_VERSION" ||
      "$PIP" download --no-deps --no-binary :all: -q -d "$DL" \
        "pyspark==$SPARK_VERSION" ||
      die 'pip download of pyspark failed'
  fi
  log "assembling $SPARK_HOME"
  local tmp=$CACHE/.assemble
  rm -rf "$tmp" "$SPARK_HOME"
  mkdir -p "$tmp"
  tar --no-same-owner -xzf "$sdist" -C "$tmp" \
    "pyspark-$SPARK_VERSION/deps/jars" "pyspark-$SPARK_VERSION/deps/bin" \
    "pyspark-$SPARK_VERSION/deps/sbin"
  mkdir -p "$SPARK_HOME/conf"
  mv "$tmp/pyspark-$SPARK_VERSION/deps/jars" "$tmp/pyspark-$SPARK_VERSION/deps/bin" \
    "$tmp/pyspark-$SPARK_VERSION/deps/sbin" "$SPARK_HOME/"
  echo "Spark $SPARK_VERSION (from PyPI pyspark $SPARK_VERSION)" >"$SPARK_HOME/RELEASE"
  chmod +x "$SPARK_HOME"/bin/* "$SPARK_HOME"/sbin/*
  rm -rf "$tmp"
  [[ -f $SPARK_HOME/jars/spark-core_$SCALA_BINARY-$SPARK_VERSION.jar ]] ||
    die "no spark-core_$SCALA_BINARY-$SPARK_VERSION.jar in the pyspark sdist"
  touch "$SPARK_HOME/.complete"
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
<!-- Generated by scripts/spark-cluster.sh: Beam's Spark 3 job server as one
     shaded jar with Spark $SPARK_VERSION inside, as Beam's
     runners/spark/3/job-server build makes it. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ev-predict</groupId>
  <artifactId>beam-runners-spark-3-job-server</artifactId>
  <version>$BEAM_JAVA_VERSION-spark-$SPARK_VERSION</version>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencies>
    <!-- First: Spark's slf4j 2 API (Beam's 1.7 callers work with it), so
         Spark's log4j2 binding (log4j-slf4j2-impl) is the one used. -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>2.0.7</version>
    </dependency>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-spark-3</artifactId>
      <version>$BEAM_JAVA_VERSION</version>
      <exclusions>
        <exclusion>
          <groupId>commons-logging</groupId>
          <artifactId>commons-logging</artifactId>
        </exclusion>
        <exclusion>
          <groupId>org.slf4j</groupId>
          <artifactId>slf4j-jdk14</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.spark</groupId>
      <artifactId>spark-core_$SCALA_BINARY</artifactId>
      <version>$SPARK_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.spark</groupId>
      <artifactId>spark-streaming_$SCALA_BINARY</artifactId>
      <version>$SPARK_VERSION</version>
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
              <!-- Executors put Spark's own jars (guava 14) before this jar
                   on their classpath; Beam's Google libraries need guava 33
                   (else: NoSuchMethodError Preconditions.checkState in
                   GoogleCloudStorageReadOptions), so this jar's guava is
                   moved to its own package. -->
              <relocations>
                <relocation>
                  <pattern>com.google.common</pattern>
                  <shadedPattern>evpredict.shaded.com.google.common</shadedPattern>
                </relocation>
                <relocation>
                  <pattern>com.google.thirdparty</pattern>
                  <shadedPattern>evpredict.shaded.com.google.thirdparty</shadedPattern>
                </relocation>
              </relocations>
              <transformers>
                <transformer implementation="org.apache.maven.plugins.shade.resource.ServicesResourceTransformer"/>
                <transformer implementation="org.apache.maven.plugins.shade.resource.AppendingTransformer">
                  <resource>reference.conf</resource>
                </transformer>
                <transformer implementation="org.apache.maven.plugins.shade.resource.ManifestResourceTransformer">
                  <mainClass>org.apache.beam.runners.spark.SparkJobServerDriver</mainClass>
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
  mv "$dir/target/beam-runners-spark-3-job-server-$BEAM_JAVA_VERSION-spark-$SPARK_VERSION.jar" \
    "$JOB_SERVER_JAR.tmp"
  mv "$JOB_SERVER_JAR.tmp" "$JOB_SERVER_JAR"
  rm -rf "$dir/target"
}

cmd_setup() {
  local t0=$SECONDS
  setup_spark_home
  setup_job_server_jar
  log "ready in $((SECONDS - t0)) s: SPARK_HOME=$SPARK_HOME"
  log "job server jar: $JOB_SERVER_JAR"
}

# ---------------------------------------------------------------- start

write_conf() {
  rm -rf "$CONF"
  mkdir -p "$CONF" "$LOGS" "$PIDS" "$WORK"
  cat >"$CONF/spark-env.sh" <<EOF
# Written by scripts/spark-cluster.sh start: a loopback-only cluster.
SPARK_LOCAL_IP=127.0.0.1
SPARK_LOCAL_HOSTNAME=127.0.0.1
SPARK_PUBLIC_DNS=127.0.0.1
SPARK_WORKER_DIR=$(printf %q "$WORK")
SPARK_DAEMON_MEMORY=512m
# Each executor gets its own copy of the job-server jar (270 MB): a worker
# deletes the work dirs of applications that ended over an hour ago.
SPARK_WORKER_OPTS="-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.interval=600 -Dspark.worker.cleanup.appDataTtl=3600"
EOF
  cat >"$CONF/log4j2.properties" <<'EOF'
# Written by scripts/spark-cluster.sh start.
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.master.name = org.apache.spark.deploy
logger.master.level = info
logger.beam.name = org.apache.beam
logger.beam.level = info
EOF
}

alive_workers() {
  sed -n 's/.*"aliveworkers" *: *\([0-9]*\).*/\1/p' <<<"$1"
}

wait_healthy() {
  local deadline=$((SECONDS + START_TIMEOUT)) json='' n
  while ((SECONDS < deadline)); do
    if json=$(master_json); then
      n=$(alive_workers "$json")
      if [[ ${n:-0} -ge $WORKERS ]]; then
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
  log "no healthy cluster after ${START_TIMEOUT}s (master /json/: ${json:-none})"
  return 1
}

cmd_start() {
  local t0=$SECONDS
  need curl 'for the health check'
  [[ -f $SPARK_HOME/.complete && -f $JOB_SERVER_JAR ]] || cmd_setup
  if master_json >/dev/null; then
    if compgen -G "$PIDS/spark-ev-predict-$MASTER_CLASS-*.pid" >/dev/null; then
      log "already running on port $MASTER_PORT"
      cmd_status >/dev/null
      return 0
    fi
    die "something else answers on 127.0.0.1:$MASTER_UI_PORT (set SPARK_MASTER_WEBUI_PORT)"
  fi
  if compgen -G "$PIDS/*.pid" >/dev/null; then
    # Left by a cluster that died or was half stopped: end what remains.
    cmd_stop 2>/dev/null
  fi
  local i port
  for port in "$MASTER_PORT" "$MASTER_UI_PORT"; do
    port_busy "$port" && die "port $port is in use (set SPARK_MASTER_PORT / SPARK_MASTER_WEBUI_PORT)"
  done
  for ((i = 0; WORKER_UI_PORT && i < WORKERS; i++)); do
    port_busy $((WORKER_UI_PORT + i)) &&
      die "port $((WORKER_UI_PORT + i)) is in use (set SPARK_WORKER_WEBUI_PORT)"
  done
  write_conf
  rm -rf "${LOGS:?}"/* "${WORK:?}"/*
  write_sdk_worker
  spark_env
  # The daemons (and so executors and SDK workers) start from the repository
  # root; executors run in their work dir, the SDK worker script cds back.
  cd "$ROOT"
  local ok=1
  "$SPARK_HOME/sbin/spark-daemon.sh" start "$MASTER_CLASS" 1 \
    --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_UI_PORT" \
    >>"$LOGS/start.log" 2>&1 || ok=
  for ((i = 1; ok && i <= WORKERS; i++)); do
    "$SPARK_HOME/sbin/spark-daemon.sh" start "$WORKER_CLASS" "$i" \
      --host 127.0.0.1 --port 0 \
      --webui-port $((WORKER_UI_PORT ? WORKER_UI_PORT + i - 1 : 0)) \
      --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" \
      --work-dir "$WORK/worker-$i" "$MASTER_URL" \
      >>"$LOGS/start.log" 2>&1 || ok=
  done
  if [[ -z $ok ]] || ! wait_healthy; then
    cmd_logs >&2 || true
    cmd_stop || true
    die "cluster did not start (logs above)"
  fi
  log "up in $((SECONDS - t0)) s: $WORKERS worker(s) x $WORKER_CORES core(s)," \
      "master $MASTER_URL, web UI http://127.0.0.1:$MASTER_UI_PORT"
}

# ---------------------------------------------------------------- stop etc.

cmd_stop() {
  local ids=() f p c left
  for f in "$PIDS"/*.pid; do
    [[ -f $f ]] || continue
    while read -r p; do
      [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null || continue
      ids+=("$(proc_id "$p")")
      # Executors, their SDK workers and anything else the daemon started.
      for c in $(descendants "$p"); do
        ids+=("$(proc_id "$c")")
      done
    done <"$f"
  done
  if [[ -x $SPARK_HOME/sbin/spark-daemon.sh && -d $PIDS ]]; then
    spark_env
    local i
    for f in "$PIDS"/spark-ev-predict-"$WORKER_CLASS"-*.pid; do
      [[ -f $f ]] || continue
      i=${f%.pid}
      "$SPARK_HOME/sbin/spark-daemon.sh" stop "$WORKER_CLASS" "${i##*-}" \
        >/dev/null 2>&1 || true
    done
    "$SPARK_HOME/sbin/spark-daemon.sh" stop "$MASTER_CLASS" 1 >/dev/null 2>&1 || true
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
  # Each executor's copy of the job-server jar (270 MB); logs stay.
  rm -f "$WORK"/worker-*/app-*/*/*.jar
  log "stopped"
}

cmd_status() {
  local json
  if json=$(master_json); then
    echo "$json"
  else
    log "no cluster answers on 127.0.0.1:$MASTER_UI_PORT"
    return 1
  fi
}

cmd_logs() {
  local f
  # Daemon logs, the SDK workers' log, then each executor's stderr.
  for f in "$LOGS"/* "$WORK"/worker-*/app-*/*/stderr; do
    [[ -f $f ]] || continue
    echo "===== $f"
    tail -n "${SPARK_LOG_LINES:-80}" "$f"
  done
}

cmd_env() {
  cat <<EOF
SPARK_HOME=$SPARK_HOME
SPARK_VERSION=$SPARK_VERSION
BEAM_JAVA_VERSION=$BEAM_JAVA_VERSION
SPARK_JOB_SERVER_JAR=$JOB_SERVER_JAR
SPARK_MASTER_URL=$MASTER_URL
SPARK_MASTER_PORT=$MASTER_PORT
SPARK_MASTER_WEBUI_PORT=$MASTER_UI_PORT
SPARK_WORKER_WEBUI_PORT=$WORKER_UI_PORT
SPARK_WORKERS=$WORKERS
SPARK_WORKER_CORES=$WORKER_CORES
SPARK_EXECUTOR_MEMORY=$EXECUTOR_MEMORY
SDK_WORKER=$SDK_WORKER
SPARK_RUN_DIR=$RUN
SPARK_LOG_DIR=$LOGS
EOF
}

cmd_flags() {
  # One flag a line: `ev-predict ... $(scripts/spark-cluster.sh flags)` (paths
  # without spaces), or `mapfile -t flags < <(... flags)`.
  # environment_cache_millis: an executor keeps its SDK worker between tasks
  # (Beam's default, 0, starts a new one, TensorFlow and model load
  # included, for every task: one per partition of every stage). The
  # job_server_jvm_properties are Spark settings of the driver (the job
  # server JVM): loopback only, no driver web UI, the executors' heap.
  printf '%s\n' --runner=SparkRunner "--spark_master_url=$MASTER_URL" \
    --spark_version=3 "--spark_job_server_jar=$JOB_SERVER_JAR" \
    --environment_type=PROCESS \
    "--environment_config={\"command\":\"$SDK_WORKER\"}" \
    --environment_cache_millis=60000 \
    --job_server_jvm_properties=-Dspark.driver.host=127.0.0.1 \
    --job_server_jvm_properties=-Dspark.driver.bindAddress=127.0.0.1 \
    --job_server_jvm_properties=-Dspark.ui.enabled=false \
    "--job_server_jvm_properties=-Dspark.executor.memory=$EXECUTOR_MEMORY"
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
