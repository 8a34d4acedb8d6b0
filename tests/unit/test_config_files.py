"""Reading the config file: libyaml's loader and the pure-Python one agree, a JSON file (a large
generated config) is read by the json module to the same result, and what either refuses is
described in the same words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.config import load_config
from notifier.config.loader import _LOADERS, _PyLoader, parse_config_text
from notifier.errors import ConfigError

GUIDS = [f"5d0c2a3e-3b1f-4b8e-9a51-{n:012x}" for n in range(300)]


def generated(subscriptions: int) -> dict[str, Any]:
    """A config as a script would write it: one subscription per container and filter."""
    return {
        "credentials": [{"name": "main", "access_token": "${TOKEN}"}],
        "poll": {"interval": "30s", "status_chunk": 50},
        "sinks": [{"name": "archive", "type": "jsonl", "path": "./var/events.jsonl"},
                  {"name": "hook", "type": "webhook", "url": "https://example.test/h",
                   "secret": "whsec_" + "a2tr" * 11}],
        "subscriptions": [
            {"name": f"s{i:05d}", "credential": "main", "container_id": GUIDS[i % len(GUIDS)],
             "sinks": ["archive", "hook"] if i % 3 else ["archive"], "emit_initial": i % 2 == 0,
             **({"domains": ["autodesk-bim360-asset", "autodesk-bim360-issue"]} if i % 5 == 0
                else {})}
            for i in range(subscriptions)
        ],
    }


def test_libyaml_reads_the_file_when_pyyaml_has_it() -> None:
    assert _LOADERS[-1] is _PyLoader
    assert (_LOADERS[0].__name__ == "_CLoader") == yaml.__with_libyaml__


@pytest.mark.parametrize("form", ["yaml", "json", "json-indented"])
def test_a_generated_config_loads_alike_in_every_form(tmp_path: Path, form: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "tok")
    data = generated(600)
    text = {"yaml": yaml.safe_dump(data, sort_keys=False), "json": json.dumps(data),
            "json-indented": json.dumps(data, indent=2)}[form]
    for loader in _LOADERS:
        assert parse_config_text(text, loader) == data
    path = tmp_path / f"config.{form.split('-', 1)[0]}"
    path.write_text(text)
    reference = tmp_path / "reference.yaml"
    reference.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.model_dump() == load_config(reference).model_dump()
    assert len(config.subscriptions) == 600
    assert config.credentials[0].access_token.get_secret_value() == "tok"  # interpolated


def test_a_json_file_repeating_a_key_is_refused_where_it_repeats(tmp_path: Path) -> None:
    data = generated(2)
    text = json.dumps(data, indent=2)
    text = text.replace('"poll": {', '"poll": {\n    "interval": "5s",', 1)
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:10:5: invalid YAML: duplicate key 'interval' (first at line 9)")


def test_a_flow_mapping_that_is_not_json_is_read_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "{credentials: [{name: main, access_token: tok}],\n"
        " sinks: [{name: archive, type: jsonl, path: a.jsonl}],  # a comment\n"
        f" subscriptions: [{{name: a, credential: main, container_id: {GUIDS[0]},"
        " sinks: [archive]}]}\n")
    config = load_config(path)
    assert [s.name for s in config.subscriptions] == ["a"]
    assert config.subscriptions[0].container_id == GUIDS[0]


@pytest.mark.parametrize("text", [
    "poll:\n  interval: 5s\n   bad: [\n",
    "a: [1, 2\n",
    "a: 'open\n",
    "- [\n",
    "poll: {}\npoll: {}\n",
    '{"poll": {}, "poll": {}}',
    "{\"a\": [1,\n",
])
def test_a_refused_document_is_described_alike_by_every_loader(text: str) -> None:
    messages = set()
    for loader in _LOADERS:
        with pytest.raises(yaml.YAMLError) as info:
            parse_config_text(text, loader)
        err = info.value
        assert isinstance(err, yaml.MarkedYAMLError)
        assert err.problem_mark is not None
        messages.add((err.problem, err.problem_mark.line, err.problem_mark.column))
    assert len(messages) == 1


# What a config holds: mappings of text keys, lists, text, whole numbers, booleans, nothing.
_SCALARS = (st.text(max_size=12) | st.integers(-10**12, 10**12) | st.booleans() | st.none())
_DOCS = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
                 max_leaves=20),
    max_size=6)


@settings(max_examples=150, deadline=None)
@given(_DOCS)
def test_every_loader_and_the_json_form_read_a_document_alike(doc: dict[str, Any]) -> None:
    as_yaml = yaml.safe_dump(doc)  # non-ASCII escaped (a raw U+0085 is a line break to YAML)
    for loader in _LOADERS:
        assert parse_config_text(as_yaml, loader) == doc
    assert parse_config_text(json.dumps(doc)) == doc
    assert parse_config_text(json.dumps(doc, ensure_ascii=False, indent=1)) == doc
