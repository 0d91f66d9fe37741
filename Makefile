# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench paper clean docs typecheck wheel-check

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

# The unit tests and the quick integration ones (under a minute on 2 idle cores): everything but
# `@pytest.mark.slow` (ImageNet-sized networks, subprocesses, DDP/FSDP spawns, scripts, docs, packaging).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The documentation site, in docs/_build/html. Warnings are errors: a broken reference or a public object
# without a docstring fails the build (docs/_ext/docstring_check.py).
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

# mypy --strict over the package (settings in pyproject.toml), then over a user's script that uses every
# public name (tests/typing/public_api.py: its `type: ignore`s must each catch a real mistake).
typecheck: $(STAMP)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict tests/typing/public_api.py

# Build the wheel and the sdist, twine check them, install the wheel into a fresh virtual environment
# outside the source tree and run `lightning-synflow` from there (.ci/wheel_check; a few minutes).
wheel-check: $(STAMP)
	PY=$(abspath $(PY)) bash .ci/wheel_check

bench: $(STAMP)
	$(PY) benchmarks/scoring_speed.py
	$(PY) benchmarks/mask_overhead.py
	$(PY) benchmarks/upkeep_step.py --sqrt --primitives --repeats 5
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/digits_accuracy.py

clean:
	rm -rf $(VENV) outputs lightning_logs .pytest_cache .mypy_cache docs/_build dist build
