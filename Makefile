# The two set-up commands of the README. Each installs what it needs first.
# CPU torch comes from `pip install torch==2.13.0` (a local wheel on these machines) *before* vtc, so
# that no dependency pulls a newer, CUDA-sized torch.
PY ?= python3

.PHONY: install install-dev main test lint

install:
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e .

install-dev:
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev,kernels]'

main: install
	$(PY) -m vtc.cli methods
	$(PY) -m vtc.cli bench methods

lint:
	$(PY) -m ruff check vtc tests

test: install-dev lint
	$(PY) -m pytest
