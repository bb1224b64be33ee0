# Two commands for a new user: `make demo` (the main job on built-in synthetic data) and
# `make test`. Both create .venv on first use and reuse it afterwards (a stamp file records
# what was installed; it is rebuilt only when constraints.txt, setup.py or the builder change).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.tumor-det-installed

.PHONY: demo test test-quick lint env clean-env
demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

# the suite without the tests marked slow (training, processes, installs), for development
test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

env: $(STAMP)

$(STAMP): constraints.txt setup.py tools/build_detectron2_wheel.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt setuptools torch torchvision
	$(PIP) install -q -c constraints.txt "$$($(PY) tools/build_detectron2_wheel.py --cache .cache/detectron2 | tail -n 1)"
	$(PIP) install -q -c constraints.txt -e ".[dev,dicom-gpl]"
	touch $(STAMP)

clean-env:
	rm -rf $(VENV) .cache/detectron2
