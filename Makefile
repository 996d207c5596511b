# Two entry points for a fresh machine:
#   make run   - install into .venv and run the whole garbled pipeline on a shipped model
#   make test  - install into .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# the main job: compile the shipped model A, then garble, evaluate and decode LIMIT shipped
# MNIST test images and compare float, simulated and garbled accuracy
MODEL ?= A
DATA ?= mnist
LIMIT ?= 100
run: install
	mkdir -p out
	$(VENV)/bin/dashc compile $(MODEL) --calib $(DATA) -o out/$(MODEL).dashc
	$(VENV)/bin/dashc eval out/$(MODEL).dashc --data $(DATA) --limit $(LIMIT) --json out/$(MODEL)-eval.json

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build dist *.egg-info
