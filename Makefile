PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONF ?= conf/local.yaml
# The lock: every package pinned with its hashes (CPU torch); `make lock` refreshes it.
LOCK ?= lock/requirements.txt
LOCK_INPUTS := pyproject.toml lock/requirements.in
TORCH_PIN ?= lock/torch-cpu.txt
# The folder holding the CPU torch wheel (this machine image's pip find-links).
TORCH_WHEELS ?= /opt/wheels
LOCK_PYTHON ?= 3.11

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test lint lock demo-logs clean

$(STAMP): $(LOCK_INPUTS) $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

lock:
	test -x $(VENV)/bin/uv || $(MAKE) $(STAMP)
	$(VENV)/bin/uv pip compile $(LOCK_INPUTS) --extra dev --extra tracking -c $(TORCH_PIN) \
		--generate-hashes --python-version $(LOCK_PYTHON) \
		$(if $(TORCH_WHEELS),--find-links $(TORCH_WHEELS) --emit-find-links) \
		--custom-compile-command "make lock" --quiet -o $(LOCK)

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
