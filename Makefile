# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench paper clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Train the default config (MLP on the bundled digits, 99% sparse by SynFlow), then test it.
demo: $(STAMP)
	$(PY) -m lightning_synflow fit --config configs/digits_synflow.yaml --trainer.enable_progress_bar false

# The whole suite (about 4 minutes on 2 idle cores). Any failure, "no tests collected" included, fails.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/scoring_speed.py
	$(PY) benchmarks/mask_overhead.py
	$(PY) benchmarks/upkeep_step.py --sqrt --primitives --repeats 5
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/digits_accuracy.py

clean:
	rm -rf $(VENV) outputs lightning_logs .pytest_cache
