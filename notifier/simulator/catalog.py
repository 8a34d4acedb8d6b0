"""Realistic entity domains and types (reference section 11) and the writable-pairs table."""

from __future__ import annotations

import base64
import bisect
import itertools
import random
from typing import Any

from notifier.simulator.ids import fmt_uuid, random_uuid_int

BIM = "autodesk-bim360-"
ACC = "autodesk-construction-"

# domain -> entity types, as listed in the reference (section 11).
DOMAIN_TYPES: dict[str, tuple[str, ...]] = {
    BIM + "asset": ("asset", "category", "categoryuid"),
    BIM + "checklist": ("checklist", "checklisttemplate"),
    BIM + "cost": ("budget", "budgetpayment", "contract", "costpayment", "maincontract", "oco",
                   "pco", "rco", "rfq", "sco"),
    BIM + "documentmanagement": ("documentlineage", "documentversion", "filelineage",
                                 "fileversion"),
    BIM + "issue": ("issue", "collaboration", "coordination", "design", "quality"),
    BIM + "modelcoordination": ("clashgroup", "container", "documentlineage", "scope"),
    BIM + "rfi": ("rfi",),
    BIM + "locations": ("location",),
    BIM + "markup": ("markup",),
    BIM + "meetingminutes": ("meeting", "meetingitem"),
    ACC + "photo": ("photo",),
    ACC + "form": ("form", "formfield", "formtemplate"),
}

Kind = tuple[str, str]

_DM = (BIM + "documentmanagement", "documentlineage")
_ASSET = (BIM + "asset", "asset")
_ISSUE = (BIM + "issue", "issue")
_PHOTO = (ACC + "photo", "photo")
_FORM = (ACC + "form", "form")
_RFI = (BIM + "rfi", "rfi")
_CHECKLIST = (BIM + "checklist", "checklist")

# (kind, kind) pairs that may be related; the generator picks among these with these weights.
WRITABLE_PAIRS: tuple[tuple[Kind, Kind, int], ...] = (
    (_ASSET, _DM, 10),
    (_ASSET, _PHOTO, 6),
    (_ASSET, _FORM, 4),
    (_ASSET, _ISSUE, 8),
    (_ASSET, _CHECKLIST, 3),
    ((BIM + "asset", "category"), (ACC + "form", "formtemplate"), 1),
    ((BIM + "asset", "category"), (BIM + "checklist", "checklisttemplate"), 1),
    (_ISSUE, _DM, 10),
    (_ISSUE, (BIM + "documentmanagement", "documentversion"), 3),
    (_ISSUE, _RFI, 4),
    (_ISSUE, _PHOTO, 6),
    (_ISSUE, (BIM + "markup", "markup"), 2),
    (_ISSUE, (BIM + "meetingminutes", "meetingitem"), 2),
    (_ISSUE, (BIM + "modelcoordination", "clashgroup"), 2),
    (_ISSUE, (BIM + "locations", "location"), 2),
    (_RFI, _DM, 4),
    (_RFI, (BIM + "cost", "contract"), 1),
    (_CHECKLIST, _DM, 2),
    (_CHECKLIST, _PHOTO, 2),
    ((BIM + "cost", "budget"), (BIM + "cost", "contract"), 1),
    ((BIM + "cost", "pco"), (BIM + "cost", "rfq"), 1),
    ((BIM + "cost", "rco"), (BIM + "cost", "sco"), 1),
    ((BIM + "cost", "oco"), _DM, 1),
    ((BIM + "meetingminutes", "meeting"), _DM, 1),
    (_FORM, _PHOTO, 2),
    (_FORM, _DM, 2),
)

_PAIR_KINDS = [(a, b) for a, b, _ in WRITABLE_PAIRS]
_PAIR_CUMULATIVE = list(itertools.accumulate(w for _, _, w in WRITABLE_PAIRS))
_ALLOWED: frozenset[tuple[Kind, Kind]] = frozenset(
    {(a, b) for a, b, _ in WRITABLE_PAIRS} | {(b, a) for a, b, _ in WRITABLE_PAIRS}
)


def is_writable(a: Kind, b: Kind) -> bool:
    """Whether ``utility/relationships:writable`` allows relating these two kinds."""
    return (a, b) in _ALLOWED


def choose_pair(rng: random.Random) -> tuple[Kind, Kind]:
    """A writable pair of kinds, weighted by how common such links are."""
    x = rng.random() * _PAIR_CUMULATIVE[-1]
    return _PAIR_KINDS[bisect.bisect_right(_PAIR_CUMULATIVE, x)]


def new_entity_id(kind: Kind, rng: random.Random) -> str:
    """An entity id shaped like the real ones: GUIDs, or URNs for Docs lineages and versions."""
    domain, etype = kind
    if domain == BIM + "documentmanagement" or etype == "documentlineage":
        tail = base64.urlsafe_b64encode(rng.getrandbits(128).to_bytes(16, "big"))
        key = tail.decode().rstrip("=")
        if etype in ("documentversion", "fileversion"):
            return f"urn:adsk.wipprod:fs.file:vf.{key}?version={rng.randint(1, 9)}"
        return f"urn:adsk.wipprod:dm.lineage:{key}"
    return fmt_uuid(random_uuid_int(rng))


def writable_table() -> list[dict[str, Any]]:
    """The body of ``GET utility/relationships:writable`` (section 11 shape)."""
    allow: dict[str, dict[str, dict[str, set[str]]]] = {}
    for (da, ta), (db, tb) in _ALLOWED:
        allow.setdefault(da, {}).setdefault(ta, {}).setdefault(db, set()).add(tb)
    return [
        {
            "domain": domain,
            "entityTypes": [
                {
                    "entityType": etype,
                    "allow": [
                        {"domain": other, "entityTypes": sorted(types)}
                        for other, types in sorted(others.items())
                    ],
                }
                for etype, others in sorted(by_type.items())
            ],
        }
        for domain, by_type in sorted(allow.items())
    ]
