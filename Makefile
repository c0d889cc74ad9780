# Two entry points on a fresh machine (each creates .venv and installs what it needs):
#   make demo   - the main job: train LeNet-5 on the embedded digits (CPU, offline, < 2 min)
#   make test   - lint, format check and the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint format clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[convert,train,bench,clip,test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m flaxcnn.train --config train/configs/digits_lenet.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# --dist worksteal: an idle worker takes queued tests from a busy one. With the default
# "load" scheduling one worker was left running 20 equivalence tests alone for the last ten
# minutes while the other sat idle (measured on a fresh clone).
test: lint
	$(PY) -m pytest -n 2 --dist worksteal --durations=60

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
