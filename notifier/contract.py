"""The machine-readable event contract: JSON Schemas (2020-12) shipped in ``notifier/schemas``.

``relationship.created.data`` and ``relationship.deleted.data`` describe the ``data`` of each
event type; ``relationship.event`` describes a whole structured-mode CloudEvent and refers to
them by ``$id``. The same files are published in docs/schemas/ for consumers; the notifier itself
never validates at run time (the tests validate every event they see).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

DATA_SCHEMAS = {
    "com.autodesk.bim360.relationship.created": "relationship.created.data.schema.json",
    "com.autodesk.bim360.relationship.deleted": "relationship.deleted.data.schema.json",
}
EVENT_SCHEMA = "relationship.event.schema.json"
SCHEMA_FILES = (*DATA_SCHEMAS.values(), EVENT_SCHEMA)


def schema_text(name: str) -> str:
    """The text of one schema file shipped with the package."""
    if name not in SCHEMA_FILES:
        raise KeyError(f"no schema {name!r} (known: {', '.join(SCHEMA_FILES)})")
    return (resources.files("notifier") / "schemas" / name).read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """One schema file as a JSON object."""
    loaded: dict[str, Any] = json.loads(schema_text(name))
    return loaded
