"""helm/notifier/values.schema.json stays generated from the pydantic config models (no drift)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from notifier.config import config_json_schema

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "notifier"
SCHEMA_FILE = CHART / "values.schema.json"


def _generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_helm_schema.py"
    spec = importlib.util.spec_from_file_location("gen_helm_schema", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _generator()


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def test_committed_schema_matches_the_models(gen: ModuleType) -> None:
    fresh = gen.render()
    current = SCHEMA_FILE.read_text(encoding="utf-8")
    assert current == fresh, (
        f"{SCHEMA_FILE.relative_to(ROOT)} is out of date with notifier/config/: "
        "run `python scripts/gen_helm_schema.py` and commit the result"
    )


def test_check_mode_reports_drift(gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "helm" / "notifier" / "values.schema.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(gen, "SCHEMA_PATH", stale)
    assert gen.main(["--check"]) == 1
    assert "python scripts/gen_helm_schema.py" in capsys.readouterr().err
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    assert stale.read_text() == gen.render()


def test_config_part_is_the_notifier_schema(committed: dict[str, Any]) -> None:
    notifier = config_json_schema()
    assert committed["properties"]["config"]["$ref"] == "#/$defs/NotifierConfig"
    for name, definition in notifier["$defs"].items():
        assert committed["$defs"][name] == definition, name
    embedded = committed["$defs"]["NotifierConfig"]
    assert embedded["properties"] == notifier["properties"]
    assert embedded["additionalProperties"] is False
    # The one deliberate difference: the chart's defaults may leave these out.
    assert set(notifier["required"]) - set(embedded.get("required", [])) == {
        "credentials", "subscriptions", "sinks"}


def test_values_files_point_at_and_satisfy_the_schema(committed: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    values_file = CHART / "values.yaml"
    first_line = values_file.read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=values.schema.json"
    defaults = yaml.safe_load(values_file.read_text())
    validator = jsonschema.Draft202012Validator(committed)
    assert list(validator.iter_errors(defaults)) == []
    assert set(defaults) == set(committed["properties"]) - {"global"}
    scenarios = sorted((CHART / "ci").glob("*-values.yaml"))
    assert len(scenarios) >= 5
    for path in scenarios:
        merged = _merge(defaults, yaml.safe_load(path.read_text()))
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(merged)]
        assert errors == [], path.name


def test_schema_rejects_what_the_chart_cannot_run(committed: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(committed)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    bad = [
        {"replicaCount": 2},
        {"config": {"poll": {"interval": "soon"}}},
        {"config": {"sinks": [{"name": "a", "type": "kafka", "topic": "t"}]}},
        {"config": {"credentials": [
            {"name": "m", "refresh_token": "a", "refresh_token_file": "b"}]}},
        {"secrets": {"bad/name": "x"}},
    ]
    for override in bad:
        assert list(validator.iter_errors(_merge(defaults, override))), override


def test_every_key_in_values_yaml_has_a_comment() -> None:
    """Each key is commented on its line or the line above, or (a detail of a Kubernetes
    structure) sits under a parent key with a comment on its line (STYLE.md, Helm chart)."""
    key = re.compile(r"^(\s*)(- )?[A-Za-z_][\w.-]*:")
    uncommented, previous = [], ""
    parents: list[tuple[int, bool]] = []  # (indent, inline comment) of the enclosing keys
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        text = line.strip()
        match = key.match(line)
        if match:
            indent = len(match.group(1))
            parents = [p for p in parents if p[0] < indent]
            inline = "#" in line
            parent_says = bool(parents) and parents[-1][1]
            if not (inline or previous.startswith("#") or parent_says):
                uncommented.append(f"{number}: {line}")
            parents.append((indent, inline))
        if text:
            previous = text
    assert uncommented == []


def _merge(base: Any, over: Any) -> Any:
    """Helm's values merge: maps merge recursively, everything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return over
