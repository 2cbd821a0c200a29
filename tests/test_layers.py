"""Imports run one way: cli -> demo / eval -> models -> methods -> core -> kernels (DESIGN.md).

Every ``import`` in vtc/, deferred ones inside functions included, is read from the source and checked
against the layer of the module it sits in; and each layer's modules are imported first in a fresh
interpreter, which fails on an import cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "vtc"

# higher imports lower; a module may import modules of its own package at the same layer
LAYERS = {
    "vtc.environment": 0,  # the check `import vtc` runs first; imports nothing of vtc
    "vtc.kernels": 0,
    "vtc.core": 1,
    "vtc.methods": 2,
    "vtc.data": 2,  # media readers and the shapes world: no model knowledge
    "vtc.tiny": 3,
    "vtc.tiny.model": 3,  # the embedded models' processor and configs, which loading needs
    "vtc.models": 4,
    "vtc.eval": 5,
    "vtc.demo": 5,
    "vtc.tiny.train": 6,  # trains the embedded models and scores them with vtc.eval's rules
    "vtc.cli": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def owner(name: str) -> str | None:
    """The LAYERS entry that ``name`` belongs to (the longest matching prefix)."""
    matches = [key for key in LAYERS if name == key or name.startswith(key + ".")]
    return max(matches, key=len) if matches else None


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("vtc")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("vtc"):
                names = [f"{target}.{a.name}" for a in node.names]
                found += [(node.lineno, n if owner(n) and n.rsplit(".", 1)[0] != "vtc" else target) for n in names]
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_has_a_layer():
    assert [module_name(p) for p in MODULES if owner(module_name(p)) is None] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    name = module_name(path)
    mine = owner(name)
    wrong = []
    for line, target in imported(ast.parse(path.read_text()), name, path.name == "__init__.py"):
        theirs = owner(target)
        if theirs is None or theirs == mine:
            continue
        if LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine]):
            wrong.append(f"line {line}: {name} ({mine}) imports {target} ({theirs})")
    assert wrong == []


# what `import vtc` itself loads before any layer: the environment check and the registry's methods
PACKAGE_INIT = ("vtc.environment", "vtc.methods")


@pytest.mark.parametrize("layer", sorted(LAYERS, key=LAYERS.get))
def test_each_layer_imports_alone(layer):
    """A fresh interpreter imports the layer's modules first: a cycle fails here, and nothing of a higher
    layer may come with them (beyond what ``import vtc`` itself needs)."""
    modules = [module_name(p) for p in MODULES if owner(module_name(p)) == layer]
    code = ("import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith('vtc.')))")
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    ceiling = max(LAYERS[layer], *(LAYERS[owner(m)] for m in PACKAGE_INIT))
    loaded = [m for m in out.stdout.split() if owner(m) is not None]
    above = [m for m in loaded if LAYERS[owner(m)] > ceiling]
    assert above == [], f"importing {layer} also loads {above}"
