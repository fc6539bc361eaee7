PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONF ?= conf/local.yaml
TORCH ?= torch==2.13.0

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test lint demo-logs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo-logs: $(STAMP)
	test -d work/demo_logs/events || $(PY) jobs/generate_logs.py --conf $(CONF)

run: demo-logs
	$(PY) jobs/pipeline.py --conf $(CONF)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests jobs bench
	$(VENV)/bin/mypy

clean:
	rm -rf work spark-warehouse metastore_db derby.log
