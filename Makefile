# The two set-up commands of the README. Each installs what it needs first.
# CPU torch comes from `pip install torch==2.13.0` (a local wheel on these machines) *before* vtc, so
# that no dependency pulls a newer, CUDA-sized torch.
PY ?= python3
# The tests run in a venv of their own on top of the interpreter's torch, so that what they need (PyPI's
# CUDA torchvision, which cannot load on a CPU-only torch, and its shim) never reaches the interpreter that
# `make main` and users run.
TEST_VENV ?= .venv-test
TPY = $(TEST_VENV)/bin/python
# The oldest transformers release vtc supports (pyproject: transformers>=$(OLDEST_TRANSFORMERS)); the adapter
# and LLM-stage tests also run on it, from a folder that shadows the venv's newest transformers.
OLDEST_TRANSFORMERS = 5.18.0
OLDEST_DIR = $(TEST_VENV)/transformers-$(OLDEST_TRANSFORMERS)
MODEL_TESTS = tests/test_apply_llava.py tests/test_apply_llava_next.py tests/test_apply_qwen.py \
	tests/test_llm_stage.py tests/test_patch_vit.py tests/test_tome_encoder.py tests/test_environment.py

.PHONY: install install-dev main test test-newest test-oldest lint

install:
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[eval]'

# The tests also use the video and encoders extras and torchvision (transformers' video processors, timm,
# open_clip). PyPI's torchvision is a CUDA build: --no-deps keeps it from pulling a CUDA torch, the
# constraints pin torch and torchvision while timm/open_clip resolve, and the shim (tests/torchvision_shim.py,
# installed into the test venv only) makes it importable on a CPU-only torch.
# The demo's browser test uses Debian's chromium when it can be installed (it skips otherwise).
install-dev:
	$(PY) -m pip install torch==2.13.0
	$(PY) -m venv --system-site-packages $(TEST_VENV)
	$(TPY) -m pip install -q torchvision==0.28.0 --no-deps
	$(TPY) -m pip install -c .ci/constraints.txt -e '.[dev,kernels,video,demo,encoders]'
	$(TPY) tests/torchvision_shim.py --install-pth
	-command -v chromium >/dev/null || (timeout 600 apt-get install -y -q chromium >/dev/null 2>&1 \
		|| echo "chromium not installed: tests/test_demo_browser.py will skip")

main: install
	$(PY) -m vtc.cli eval --out vtc-eval
	cat vtc-eval/summary.md

lint:
	$(TPY) -m ruff check vtc tests

test: install-dev lint test-newest test-oldest

# The whole suite on the newest transformers pip resolved.
test-newest:
	$(TPY) -m pytest

# The adapter and LLM-stage tests on the oldest supported transformers.
test-oldest:
	$(TPY) -m pip install -q --no-deps --upgrade --target $(OLDEST_DIR) transformers==$(OLDEST_TRANSFORMERS)
	PYTHONPATH=$(OLDEST_DIR) VTC_EXPECT_TRANSFORMERS=$(OLDEST_TRANSFORMERS) $(TPY) -m pytest $(MODEL_TESTS)
