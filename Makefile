# `make demo` runs the main job, `make test` the checks; both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make demo` needs the package alone (CORE), `make test` the development extras too
# (STAMP: Ray, pyarrow, pytest, ...). A venv made by the demo gets the extras at the next
# `make test`, and either is redone when pyproject.toml changes.
CORE := $(VENV)/.installed-core
STAMP := $(VENV)/.installed-dev

.PHONY: test test-ray test-real-model demo bench lint format clean

$(VENV)/bin/python:
	@echo "creating $(VENV) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip

# A venv made before the rename holds the old distribution `starfish` (same package, same
# command): it goes first, with its stale metadata in src/, so that one distribution owns them.
UNINSTALL_OLD_NAME := rm -rf src/starfish.egg-info; \
	if $(BIN)/python -m pip show -q starfish >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall -q -y starfish; fi

$(CORE): pyproject.toml | $(VENV)/bin/python
	@echo "installing starfish (the package alone) into $(VENV) ..."
	@$(UNINSTALL_OLD_NAME)
	@$(BIN)/python -m pip install -q -e .
	@touch $(CORE)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	@echo "installing starfish with its development extras ('.[dev]') into $(VENV) ..."
	@$(UNINSTALL_OLD_NAME)
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP) $(CORE)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest --ignore=tests/ray --ignore=tests/real_model
	$(MAKE) --no-print-directory test-ray
	$(MAKE) --no-print-directory test-real-model

# Ray probes outside addresses (8.8.8.8, 169.254.169.254) and binds every interface, so its
# tests run only inside a network namespace that has nothing but loopback (we are root).
test-ray: $(STAMP)
	@if ! $(BIN)/python -c "import ray" 2>/dev/null; then \
		echo "SKIPPED the Ray tests (tests/ray): Ray is not installed"; \
	elif ! unshare -n true 2>/dev/null; then \
		echo "SKIPPED the Ray tests (tests/ray): 'unshare -n' is not possible here (it needs root or user namespaces)"; \
	else \
		unshare -n sh -c 'ip link set lo up && STARFISH_IN_LOOPBACK_NAMESPACE=1 exec $(BIN)/python -m pytest tests/ray -p no:cacheprovider'; \
	fi

# A real model server none of us wrote: llama-cpp-python serving SmolLM2-135M, installed once
# per machine outside the repo (the first build takes about 8 minutes on 2 cores, then pip's
# wheel cache serves it) and reached on loopback only. Not skipped: it needs root for unshare.
test-real-model: $(STAMP)
	$(BIN)/python tests/real_model/provision.py
	unshare -n sh -c 'ip link set lo up && exec $(BIN)/python -m pytest tests/real_model -p no:cacheprovider --timeout 900'

demo: $(CORE)
	@bash examples/demo.sh

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
