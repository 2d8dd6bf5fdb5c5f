#!/usr/bin/env bash
# The peers' environment for bench.wave2 (bench/peers.py), from PyPI only:
#   build/peers-venv        Ray Data and pandas, which the project venv does
#                           not hold; it reads the project venv's packages
#                           (TensorFlow, OpenVINO, Pillow, ev-predict) through
#                           a .pth file, so both sides run the same backends
#   build/peers/pyspark-X   Spark's own pyspark, unpacked from the sdist the
#                           cluster tests download (scripts/spark-cluster.sh)
#   build/spark/spark-X     Spark itself (the same script)
# Run from anywhere after `make install`; idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SPARK_VERSION=3.5.9
VENV=build/peers-venv
[[ -x .venv/bin/python ]] || { echo "run 'make install' first" >&2; exit 1; }
scripts/spark-cluster.sh setup >&2
if [[ ! -f build/peers/pyspark-$SPARK_VERSION/pyspark/__init__.py ]]; then
  mkdir -p build/peers
  tar --no-same-owner -xzf build/spark/downloads/pyspark-$SPARK_VERSION.tar.gz \
    -C build/peers "pyspark-$SPARK_VERSION/pyspark"
fi
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi
# Pins that agree with the project venv where both hold a package (the
# peers venv's own copy wins on sys.path).
"$VENV/bin/pip" install -q 'ray[data]==2.52.1' 'pandas==2.3.3' py4j \
  "protobuf==$(.venv/bin/python -c 'import google.protobuf as p; print(p.__version__)')" \
  "numpy==$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')" \
  pyarrow
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
peer_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$site')" > "$peer_site/ev-predict-venv.pth"
"$VENV/bin/python" -c 'import ray, pandas, openvino, tensorflow, PIL, ev_predict; print("peers venv ready")'
