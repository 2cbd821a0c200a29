"""The environment vtc runs in: a broken torchvision gets one clear line, and the suite runs on the
transformers release it claims (the oldest supported one in `make test-oldest`)."""

from __future__ import annotations

import importlib.machinery
import os
import re
import subprocess
import sys
from pathlib import Path

import transformers

ROOT = Path(__file__).parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def fake_torchvision(root: Path, ops: bytes | None) -> Path:
    """A torchvision package whose compiled ops are ``ops`` (not a loadable library: a broken build)."""
    package = root / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    if ops is not None:
        (package / f"_C{SUFFIX}").write_bytes(ops)
    return root


def run_python(code: str, path: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with ``path`` first on sys.path and without the test venv's shim."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]),
           "VTC_TESTS_NO_TORCHVISION_SHIM": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


def test_a_torchvision_that_cannot_load_gets_one_clear_line(tmp_path):
    out = run_python("import vtc", fake_torchvision(tmp_path, b"not a shared library"))
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: vtc: torchvision ")
    assert "its compiled ops cannot load beside torch" in last and f"_C{SUFFIX}" in last
    assert "pip uninstall -y torchvision" in last


def test_no_line_without_compiled_ops_or_when_their_schema_exists(tmp_path):
    code = "from vtc.environment import torchvision_problem; print(torchvision_problem())"
    assert run_python(code, fake_torchvision(tmp_path, None)).stdout.strip() == "None"
    # the test venv's shim defines the schema: its torchvision imports, and vtc says nothing
    from vtc.environment import torchvision_problem

    assert torchvision_problem() is None


def test_the_suite_runs_on_the_release_it_was_asked_for():
    """`make test-oldest` sets VTC_EXPECT_TRANSFORMERS: this fails if its transformers did not shadow the newest."""
    expected = os.environ.get("VTC_EXPECT_TRANSFORMERS")
    if expected is not None:
        assert transformers.__version__ == expected


def test_the_declared_oldest_release_is_the_tested_one():
    declared = re.search(r'"transformers>=([\d.]+),<6"', (ROOT / "pyproject.toml").read_text()).group(1)
    tested = re.search(r"^OLDEST_TRANSFORMERS = ([\d.]+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert tested.startswith(declared) and tested.split(".")[:2] == declared.split(".")[:2]
