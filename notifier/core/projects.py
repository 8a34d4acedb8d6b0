"""Which of a hub's projects a hub subscription watches, and what changed since the last list.

Pure functions of their inputs, so ``notifier discover`` and the running service give the same
answer for the same list:

* ``decide`` says whether one project is watched, and if not, why. The regexes are matched
  with ``re.search`` against the project's name (``^Tower`` anchors, ``Hospital`` matches
  anywhere, ``(?i)`` makes a pattern case-insensitive); ``exclude`` wins over ``include``; no
  ``include`` list means every name is included. A project whose id is not ``b.<GUID>`` (not a
  BIM 360 / ACC project) has no Relationship Service container and is never watched.
* ``diff`` compares the watched set of the previous discovery with the new one: containers
  added, retired (gone from the list, or no longer matching), and renamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PROJECT_PREFIX = "b."


@dataclass(frozen=True, slots=True)
class Project:
    """A project as the Data Management API lists it: ``id`` is ``b.<GUID>``."""

    id: str
    name: str

    @property
    def container_id(self) -> str | None:
        """The Relationship Service container id (the GUID without ``b.``), or None."""
        if self.id[:2].lower() != PROJECT_PREFIX:
            return None
        guid = self.id[2:].lower()
        return guid if _GUID.fullmatch(guid) else None


@dataclass(frozen=True, slots=True)
class ProjectRules:
    """Compiled ``projects: {include, exclude}`` of a hub subscription."""

    include: tuple[re.Pattern[str], ...] | None = None
    exclude: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def compile(cls, include: Sequence[str] | None, exclude: Sequence[str] = ()) -> ProjectRules:
        return cls(
            include=None if include is None else tuple(re.compile(p) for p in include),
            exclude=tuple(re.compile(p) for p in exclude),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    included: bool
    reason: str  # "included", or why not


def decide(project: Project, rules: ProjectRules) -> Verdict:
    """Whether ``project`` is watched under ``rules``, and if not, why."""
    if project.container_id is None:
        return Verdict(False, "not a BIM 360/ACC project id (no 'b.<GUID>')")
    for pattern in rules.exclude:
        if pattern.search(project.name):
            return Verdict(False, f"excluded by {pattern.pattern!r}")
    if rules.include is not None and not any(p.search(project.name) for p in rules.include):
        return Verdict(False, "matches no include pattern")
    return Verdict(True, "included")


def watched(projects: Iterable[Project], rules: ProjectRules) -> dict[str, Project]:
    """The projects to watch, by container id (a project listed twice counts once)."""
    out: dict[str, Project] = {}
    for project in projects:
        cid = project.container_id
        if cid is not None and cid not in out and decide(project, rules).included:
            out[cid] = project
    return out


@dataclass(frozen=True, slots=True)
class Changes:
    added: list[Project] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)  # container ids
    renamed: list[Project] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.retired or self.renamed)


def diff(before: Mapping[str, Project], after: Mapping[str, Project]) -> Changes:
    """What changed between two watched sets (container id -> project), in a stable order."""
    return Changes(
        added=[p for cid, p in sorted(after.items()) if cid not in before],
        retired=sorted(cid for cid in before if cid not in after),
        renamed=[p for cid, p in sorted(after.items())
                 if cid in before and before[cid].name != p.name],
    )
