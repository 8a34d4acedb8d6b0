"""The JSON:API project and hub listings: shape checks with the path of what is wrong."""

from __future__ import annotations

import orjson
import pytest

from notifier.errors import ProtocolError
from notifier.source.projects import ListingPage, ProjectsClient, parse_listing

P = {"type": "projects", "id": "b.5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10",
     "attributes": {"name": "Tower A"}}


def test_a_valid_page() -> None:
    page = parse_listing(orjson.dumps({
        "jsonapi": {"version": "1.0"}, "data": [P],
        "links": {"self": {"href": "x"}, "next": {"href": "https://h/next"}}}), "projects")
    assert page == ListingPage([(P["id"], "Tower A")], "https://h/next")
    last = parse_listing(orjson.dumps({"data": [], "links": {"next": None}}), "projects")
    assert last == ListingPage([], None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "response is not valid JSON"),
        (b"[]", "expected an object, got an array"),
        (orjson.dumps({"links": {}}), "missing field 'data'"),
        (orjson.dumps({"data": {}}), "data: expected an array, got an object"),
        (orjson.dumps({"data": [P, 5]}), "data[1]: expected an object, got a number"),
        (orjson.dumps({"data": [{"id": "b.x"}]}), "data[0]: missing field 'attributes'"),
        (orjson.dumps({"data": [{**P, "id": 7}]}), "data[0].id: expected a string, got a number"),
        (orjson.dumps({"data": [{**P, "id": ""}]}), "data[0].id: empty"),
        (orjson.dumps({"data": [P, {**P, "attributes": {"name": None}}]}),
         "data[1].attributes.name: expected a string, got null"),
        (orjson.dumps({"data": [], "links": {"next": {"href": 3}}}),
         "links.next.href: expected a string, got a number"),
        (orjson.dumps({"data": [], "links": {"next": "https://h/2"}}),
         "links.next: expected an object or null, got a string"),
    ],
)
def test_malformed_pages_name_the_path(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_listing(body, "projects")
    assert message in str(info.value)
    assert str(info.value).startswith("projects: ")


class _Pages:
    """Answers ``call`` with canned pages (the HTTP side is tested against the simulator)."""

    def __init__(self, pages: dict[str, ListingPage]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    async def call(self, endpoint: str, url: str, parser: object) -> ListingPage:
        self.asked.append(url)
        return self.pages[url]


async def test_next_link_to_another_origin_is_refused() -> None:
    base = "https://developer.api.autodesk.com"
    first = f"{base}/project/v1/hubs/b.h/projects"
    caller = _Pages({first: ListingPage([("b.1", "A")], "https://evil.example/steal")})
    client = ProjectsClient(caller, base)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"links\.next\.href: points outside https://devel"):
        await client.projects("b.h")
    assert caller.asked == [first]


async def test_a_next_link_loop_is_refused() -> None:
    base = "https://developer.api.autodesk.com"
    first = f"{base}/project/v1/hubs/b.h/projects"
    caller = _Pages({first: ListingPage([("b.1", "A")], first)})
    client = ProjectsClient(caller, base)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="paging does not end"):
        await client.projects("b.h")
