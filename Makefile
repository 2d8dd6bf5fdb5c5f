# ev-predict: install, test and demo.
#   make install   venv in .venv with ev-predict (editable) and test extras
#   make demo      train the demo digit classifier, run ev-predict on the
#                  bundled sample images, check the result
#   make test      run the test suite
#   make test-flink  the same job on a local Flink cluster and on DirectRunner
#                  (scripts/flink-cluster.sh; first run downloads Flink and
#                  Beam's Flink runner into build/flink/)
#   make test-spark  the same job on a local Spark standalone cluster and on
#                  DirectRunner (scripts/spark-cluster.sh; first run downloads
#                  Spark and Beam's Spark runner into build/spark/)
#   make docs      regenerate docs/parameters.md's table from
#                  pipeline/parameters.py
#   make clean     stop local Flink/Spark clusters, remove build/

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEMO_MODEL := build/demo_model
DEMO_RESULT := build/demo/result.txt
DEMO_FILELIST := examples/data/filelist.txt

.DEFAULT_GOAL := install
.PHONY: install .venv demo test test-flink test-spark clean samples docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when setup.py changes (or the venv is new).
$(STAMP): setup.py | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

install .venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/build_demo_model.py --out $(DEMO_MODEL)
	$(BIN)/ev-predict -Dmodel_type=classifier -Dmodel_path=$(DEMO_MODEL) \
	  -Dinput_oss_file=$(DEMO_FILELIST) -Doutput_oss_file=$(DEMO_RESULT) \
	  -Dmax_error_ratio=0.2
	$(BIN)/python examples/demo_report.py $(DEMO_RESULT)

# Regenerates the bundled sample images (committed; rarely needed).
samples: $(STAMP)
	$(BIN)/python examples/make_sample_images.py

# The parameter table in docs/parameters.md (tests/test_parameters.py fails
# when it is stale).
docs: $(STAMP)
	$(BIN)/python -m ev_predict.pipeline.parameters --write docs/parameters.md

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-flink: $(STAMP)
	EV_PREDICT_FLINK=1 $(BIN)/python -m pytest -q tests/test_flink.py

test-spark: $(STAMP)
	EV_PREDICT_SPARK=1 $(BIN)/python -m pytest -q tests/test_spark.py

clean:
	-scripts/flink-cluster.sh stop
	-scripts/spark-cluster.sh stop
	rm -rf build/
