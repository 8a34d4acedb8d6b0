"""The Data Management hub and project listings a hub subscription is discovered from.

``GET /project/v1/hubs`` and ``GET /project/v1/hubs/{hub_id}/projects`` answer JSON:API
documents, paged through ``links.next.href`` (docs/hub-discovery.md). ``ProjectsClient`` follows
the pages and validates every one: a payload that does not have the documented shape is a
``ProtocolError`` naming the path inside it (``data[3].attributes.name: expected a string, got
null``). Requests go through a ``RelationshipClient`` built on the credential's token and a
separate Data Management budget, so status codes map to the same errors (403 ForbiddenError,
429 paused and retried, 5xx retried with backoff). A ``links.next`` pointing to another origin
is refused, so the bearer token is never sent anywhere but the configured base URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from notifier.core.projects import Project
from notifier.errors import ProtocolError
from notifier.source import parse
from notifier.source.client import RelationshipClient

PROJECT_API = "/project/v1"
MAX_PAGES = 10_000  # 2 million projects at 200 a page: a loop, not a hub


@dataclass(frozen=True, slots=True)
class Hub:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ListingPage:
    items: list[tuple[str, str]]  # (id, name)
    next_url: str | None


def parse_listing(body: bytes, endpoint: str) -> ListingPage:
    """One JSON:API page: ``data[].id``, ``data[].attributes.name``, ``links.next.href``."""
    doc = parse._object(parse.loads(body, endpoint), endpoint, "")
    data = parse._field(doc, "data", list, endpoint, "")
    items: list[tuple[str, str]] = []
    for i, item in enumerate(data):
        where = f"data[{i}]"
        obj = parse._object(item, endpoint, where)
        ident = parse._field(obj, "id", str, endpoint, where)
        if not ident:
            raise ProtocolError(f"{where}.id: empty", endpoint=endpoint)
        attrs = parse._field(obj, "attributes", dict, endpoint, where)
        items.append((ident, parse._field(attrs, "name", str, endpoint, f"{where}.attributes")))
    links = parse._optional(doc, "links", dict, endpoint, "")
    nxt = None if links is None else parse._optional(links, "next", dict, endpoint, "links")
    href = None if nxt is None else parse._field(nxt, "href", str, endpoint, "links.next")
    return ListingPage(items, href or None)


class ProjectsClient:
    """Lists hubs and a hub's projects as one user (the credential's token) sees them."""

    def __init__(self, caller: RelationshipClient, base_url: str) -> None:
        self._caller = caller
        self._base = base_url.rstrip("/")
        parts = urlsplit(self._base)
        self._origin = (parts.scheme, parts.netloc)

    async def hubs(self) -> list[Hub]:
        """Every hub the user sees."""
        items = await self._all("hubs", f"{self._base}{PROJECT_API}/hubs")
        return [Hub(i, n) for i, n in items]

    async def projects(self, hub_id: str) -> list[Project]:
        """Every project of ``hub_id`` the user sees (ForbiddenError if not the hub)."""
        url = f"{self._base}{PROJECT_API}/hubs/{quote(hub_id, safe='')}/projects"
        return [Project(i, n) for i, n in await self._all("projects", url)]

    async def _all(self, endpoint: str, url: str) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        seen: set[str] = set()
        next_url: str | None = url
        while next_url is not None:
            if len(seen) >= MAX_PAGES or next_url in seen:
                raise ProtocolError(f"links.next: paging does not end ({len(seen)} pages)",
                                    endpoint=endpoint)
            seen.add(next_url)
            page = await self._caller.call(endpoint, next_url, parse_listing)
            items.extend(page.items)
            next_url = page.next_url
            if next_url is not None:
                self._check_origin(endpoint, next_url)
        return items

    def _check_origin(self, endpoint: str, href: str) -> None:
        parts = urlsplit(href)
        if (parts.scheme, parts.netloc) != self._origin:
            raise ProtocolError(
                f"links.next.href: points outside {self._origin[0]}://{self._origin[1]}",
                endpoint=endpoint)
