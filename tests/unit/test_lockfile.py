"""requirements.lock pins every runtime dependency with hashes, agrees with pyproject.toml, and
is what the Dockerfile installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes), from pip-compile's format (continuation lines)."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"no pip options in the lock: {line!r}"
        spec, *options = line.split()
        name, sep, version = spec.partition("==")
        assert sep, f"not pinned: {spec}"
        hashes = [o.removeprefix("--hash=") for o in options]
        assert all(h.startswith("sha256:") and len(h) == 71 for h in hashes), spec
        out[canonicalize_name(name)] = (version, hashes)
    return out


def test_every_runtime_dependency_is_pinned_with_hashes() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = locked()
    assert all(hashes for _, hashes in pins.values())
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep.name} is not in requirements.lock: run `make lock`"
        version, _ = pins[name]
        assert dep.specifier.contains(version), f"{dep.name}=={version} breaks {dep.specifier}"
    # Transitive dependencies are pinned too (aiohttp alone brings several).
    assert len(pins) > len(deps)
    assert not {canonicalize_name(n) for n in ("pytest", "mypy", "ruff", "pip-tools")} & set(pins)


def test_the_image_installs_the_lock_with_hashes_before_the_package() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    lock_at = docker.index("pip install --require-hashes --no-deps")
    assert "-r /tmp/requirements.lock" in docker[lock_at:lock_at + 200]
    assert docker.index("pip install --no-deps /src") > lock_at  # nothing resolved afterwards
