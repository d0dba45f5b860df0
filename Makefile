# Quick start: `make lab` opens the notebooks, `make test` runs every check.
# Both set everything up first; a second run with nothing changed only checks.
# Evaluated after `system` has run, which installs a Python 3.11+ where the system has none.
PYTHON ?= $(shell sh tools/find-python.sh)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system lab test lint pytest nbval clean

setup: system $(STAMP)

system:
	@sh tools/setup-system.sh

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "minibuild needs Python 3.11 or newer (python3.11 on PATH)." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[lab,test]'
	touch $@

# Jupyter refuses to run as root unless told; the README's set-up supports root.
lab: setup
	$(VENV)/bin/jupyter lab $$([ "$$(id -u)" -eq 0 ] && echo --allow-root) notebooks/

test: setup lint pytest nbval

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

pytest:
	$(PY) -m pytest -q tests

# nbval may find no notebooks yet: pytest's "no tests collected" (exit 5) is not a failure.
nbval:
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
