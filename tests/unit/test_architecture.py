"""The shape of the package (docs/architecture.md): what each layer may import, module sizes."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "notifier"
MAX_LINES = 420  # "about 400": a module growing past this is split by concern
# I/O libraries: the pure core and the configuration never talk to the outside world.
IO_LIBRARIES = {"aiohttp", "aiokafka", "sqlite3", "prometheus_client", "socket", "subprocess"}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# layer -> the notifier modules it may import (besides itself)
ALLOWED: dict[str, tuple[str, ...]] = {
    "notifier.core": ("notifier.errors", "notifier.source.models", "notifier.state.base"),
    "notifier.config": ("notifier.errors", "notifier.durations", "notifier.core"),
    "notifier.state": ("notifier.errors",),
    "notifier.source": ("notifier.errors", "notifier.core"),
    "notifier.sinks": ("notifier.errors", "notifier.core", "notifier.config", "notifier.metrics",
                       "notifier.metrics_base", "notifier.metrics_sinks", "notifier.state.base"),
    "notifier.simulator": (),
}
# Nothing below the application reaches up into it, the command line or the simulator.
TOP = ("notifier.__main__", "notifier.app", "notifier.cli", "notifier.simulator")


@pytest.mark.parametrize(("layer", "allowed"), sorted(ALLOWED.items()))
def test_each_layer_imports_only_what_it_may(layer, allowed):
    wrong = {
        (name, imp)
        for name, path in modules() if within(name, layer) and name != "notifier.simulator.__main__"
        for imp in imports(path)
        if within(imp, "notifier") and imp != "notifier"
        and not within(imp, layer, *allowed)
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("layer", ["notifier.core", "notifier.config"])
def test_the_pure_layers_do_no_io(layer):
    wrong = {(name, imp) for name, path in modules() if within(name, layer)
             for imp in imports(path) if imp.split(".")[0] in IO_LIBRARIES}
    assert not wrong, sorted(wrong)


def test_only_the_top_imports_the_top():
    wrong = {
        (name, imp)
        for name, path in modules() if not within(name, *TOP)
        for imp in imports(path) if within(imp, *TOP)
    }
    assert not wrong, sorted(wrong)


def test_modules_stay_small():
    big = {name: n for name, path in modules()
           if not within(name, "notifier.simulator")
           and (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, big
