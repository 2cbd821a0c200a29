# The two set-up commands of the README. Each installs what it needs first.
# CPU torch comes from `pip install torch==2.13.0` (a local wheel on these machines) *before* vtc, so
# that no dependency pulls a newer, CUDA-sized torch.
PY ?= python3

.PHONY: install install-dev main test lint

install:
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[eval]'

# The tests also use the video and encoders extras and torchvision (transformers' video processors, timm,
# open_clip). PyPI's torchvision is a CUDA build: --no-deps keeps it from pulling a CUDA torch, the
# constraints pin torch and torchvision while timm/open_clip resolve, and tests/conftest.py makes
# torchvision importable on CPU-only torch (tests/torchvision_shim.py).
# The demo's browser test uses Debian's chromium when it can be installed (it skips otherwise).
install-dev:
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install torchvision==0.28.0 --no-deps
	$(PY) -m pip install -c .ci/constraints.txt -e '.[dev,kernels,video,demo,encoders]'
	-command -v chromium >/dev/null || (timeout 600 apt-get install -y -q chromium >/dev/null 2>&1 \
		|| echo "chromium not installed: tests/test_demo_browser.py will skip")

main: install
	$(PY) -m vtc.cli eval --out vtc-eval
	cat vtc-eval/summary.md

lint:
	$(PY) -m ruff check vtc tests

test: install-dev lint
	$(PY) -m pytest
