# Two entry points on a fresh machine (each creates .venv and installs what it needs):
#   make demo   - the main job: train LeNet-5 on the embedded digits (CPU, offline, < 2 min)
#   make test   - lint, format check and the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint format clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[convert,train,bench,test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m flaxcnn.train --config train/configs/digits_lenet.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -n 2 --durations=25

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
