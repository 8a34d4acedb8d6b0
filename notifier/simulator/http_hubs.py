"""The Data Management hub and project listings over HTTP, and their ``/_sim/hubs`` controls.

    GET /project/v1/hubs                       the hubs the caller sees (JSON:API)
    GET /project/v1/hubs/{hub_id}/projects     a hub's projects, ``page[number]``/``page[limit]``,
                                               ``links.next`` while more remain; 403 for a hub
                                               the caller may not see, 404 for an unknown one

Every request passes: bearer authentication (401), the per-user, per-endpoint limit (429 +
Retry-After), injected latency, injected statuses (``HubKnobs``), then the answer.

    GET  /_sim/hubs                            every hub with its projects
    POST /_sim/hubs                            {"id"?, "name"?, "projects"?: n, "relationships"?}
    POST /_sim/hubs/{hub}/projects             {"name"?, "id"?, "count"?, "relationships"?}
                                               -> {"ids"}
    POST /_sim/hubs/{hub}/projects:delete      {"ids": [...]} -> {"deleted"}
    POST /_sim/hubs/{hub}/projects:rename      {"id", "name"}
    POST /_sim/hubs/{hub}/access               {"user", "visible": bool}
    GET|POST /_sim/hubs-knobs                  HubKnobs (next_statuses are queued)
    GET  /_sim/hubs-stats                      request and status counters
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from aiohttp import web

from notifier.simulator import bodies
from notifier.simulator.bodies import ApiError
from notifier.simulator.control import ControlError
from notifier.simulator.control import _body as control_body
from notifier.simulator.http_api import json_response
from notifier.simulator.hubs import MAX_PAGE_SIZE, HubCatalog, SimHub

PROJECT_API = "/project/v1"
HUBS = PROJECT_API + "/hubs"
PROJECTS = HUBS + "/{hubId}/projects"
CONTROL = "/_sim/hubs"
JSONAPI = {"version": "1.0"}


def _jsonapi_error(status: int, title: str, detail: str) -> ApiError:
    return ApiError(status, {"jsonapi": JSONAPI, "errors": [
        {"id": "sim", "status": str(status), "code": title.replace(" ", ""),
         "title": title, "detail": detail}]})


def _injected(status: int) -> ApiError:
    if status == 429:
        return bodies.rate_limited(1)
    return _jsonapi_error(status, "Injected fault", f"simulated HTTP {status}")


class HubApi:
    """Route handlers bound to one :class:`HubCatalog`."""

    def __init__(self, catalog: HubCatalog) -> None:
        self.catalog = catalog

    def routes(self) -> list[web.RouteDef]:
        c = CONTROL + "/{hub}"
        return [
            web.get(HUBS, self._guarded("hubs", self.list_hubs), allow_head=False),
            web.get(PROJECTS, self._guarded("projects", self.list_projects), allow_head=False),
            web.get(CONTROL, self.summary, allow_head=False),
            web.post(CONTROL, self.add_hub),
            web.post(c + "/projects", self.add_projects),
            web.post(c + "/projects:delete", self.remove_projects),
            web.post(c + "/projects:rename", self.rename_project),
            web.post(c + "/access", self.access),
            web.get("/_sim/hubs-knobs", self.get_knobs, allow_head=False),
            web.post("/_sim/hubs-knobs", self.set_knobs),
            web.get("/_sim/hubs-stats", self.stats, allow_head=False),
        ]

    # -- the Data Management endpoints ----------------------------------------------------------

    def _guarded(self, endpoint: str, handler: Any) -> Any:
        async def guarded(request: web.Request) -> web.StreamResponse:
            cat = self.catalog
            cat.stats.requests[endpoint] += 1
            try:
                user = cat.rs.auth.authenticate(request.headers.get("Authorization")).user
                wait = cat.limiter.acquire(f"{user}/{endpoint}", cat.knobs.rpm, cat.rs.clock())
                if wait is not None:
                    cat.stats.rate_limited += 1
                    raise bodies.rate_limited(wait)
                if cat.knobs.latency > 0:
                    await asyncio.sleep(cat.knobs.latency)
                fault = cat.next_fault()
                if fault is not None:
                    cat.stats.faults_injected += 1
                    raise _injected(fault)
                response: web.StreamResponse = await handler(request, user)
            except ApiError as err:
                response = json_response(err.body, err.status, err.headers)
            cat.stats.statuses[str(response.status)] += 1
            return response
        return guarded

    async def list_hubs(self, request: web.Request, user: str) -> web.Response:
        base = f"{request.scheme}://{request.host}{HUBS}"
        return json_response({
            "jsonapi": JSONAPI,
            "links": {"self": {"href": base}},
            "data": [_hub_json(h, base) for h in self.catalog.visible_hubs(user)],
        })

    async def list_projects(self, request: web.Request, user: str) -> web.Response:
        raw = request.match_info["hubId"]
        try:
            hub = self.catalog.hub(raw)
        except KeyError:
            raise _jsonapi_error(404, "Not Found", f"hub {raw} does not exist") from None
        if user in hub.hidden_from:
            raise _jsonapi_error(403, "Forbidden", "You don't have permission to access "
                                 "this hub")
        number = _int_param(request, "page[number]", 0, 0, 1_000_000)
        limit = _int_param(request, "page[limit]", self.catalog.knobs.page_size, 1,
                           MAX_PAGE_SIZE)
        items = list(hub.projects.items())
        page = items[number * limit:(number + 1) * limit]
        base = f"{request.scheme}://{request.host}{HUBS}/{hub.id}/projects"
        links: dict[str, Any] = {"self": {"href": f"{base}?page%5Bnumber%5D={number}"}}
        if (number + 1) * limit < len(items):
            links["next"] = {"href": f"{base}?page%5Bnumber%5D={number + 1}"
                                     f"&page%5Blimit%5D={limit}"}
        return json_response({
            "jsonapi": JSONAPI,
            "links": links,
            "data": [_project_json(hub, pid, name, base) for pid, name in page],
        })

    # -- /_sim/hubs ----------------------------------------------------------------------------

    def _hub(self, request: web.Request) -> SimHub:
        try:
            return self.catalog.hub(request.match_info["hub"])
        except KeyError:
            raise ControlError(404, f"unknown hub {request.match_info['hub']}") from None

    async def summary(self, request: web.Request) -> web.Response:
        return json_response(self.catalog.summary())

    async def add_hub(self, request: web.Request) -> web.Response:
        body = await control_body(request)
        hid = self.catalog.add_hub(body.get("id"), str(body.get("name", "Simulated hub")),
                                   int(body.get("projects", 0)),
                                   int(body.get("relationships", 0)))
        return json_response({"id": hid})

    async def add_projects(self, request: web.Request) -> web.Response:
        hub = self._hub(request)
        body = await control_body(request)
        count = int(body.get("count", 1))
        rels = int(body.get("relationships", 0))
        if "id" in body or "name" in body:
            name = str(body.get("name") or f"Project {len(hub.projects) + 1:04d}")
            ids = [self.catalog.add_project(hub.id, name, body.get("id"), rels)]
        else:
            ids = [self.catalog.add_project(hub.id, f"Project {len(hub.projects) + 1:04d}",
                                            None, rels) for _ in range(count)]
        return json_response({"ids": ids})

    async def remove_projects(self, request: web.Request) -> web.Response:
        hub = self._hub(request)
        body = await control_body(request)
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise ControlError(400, "ids must be a list of project ids")
        return json_response({"deleted": self.catalog.remove_projects(hub.id, ids)})

    async def rename_project(self, request: web.Request) -> web.Response:
        hub = self._hub(request)
        body = await control_body(request)
        try:
            self.catalog.rename_project(hub.id, str(body["id"]), str(body["name"]))
        except KeyError as err:
            raise ControlError(404, f"unknown project or missing field {err}") from None
        return json_response({"ok": True})

    async def access(self, request: web.Request) -> web.Response:
        hub = self._hub(request)
        body = await control_body(request)
        self.catalog.set_access(hub.id, str(body.get("user", "")), bool(body.get("visible")))
        return json_response({"hidden_from": sorted(hub.hidden_from)})

    async def get_knobs(self, request: web.Request) -> web.Response:
        return self._knobs_json()

    async def set_knobs(self, request: web.Request) -> web.Response:
        self.catalog.set_knobs(**await control_body(request))
        return self._knobs_json()

    def _knobs_json(self) -> web.Response:
        out = dataclasses.asdict(self.catalog.knobs)
        out["next_statuses"] = self.catalog.pending_faults
        return json_response(out)

    async def stats(self, request: web.Request) -> web.Response:
        return json_response(self.catalog.stats.to_json())


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _jsonapi_error(400, "Bad Request", f"{name} must be an integer in {low}..{high}")
    return int(raw)


def _hub_json(hub: SimHub, base: str) -> dict[str, Any]:
    return {
        "type": "hubs",
        "id": hub.id,
        "attributes": {"name": hub.name, "region": "US",
                       "extension": {"type": "hubs:autodesk.bim360:Account", "version": "1.0"}},
        "links": {"self": {"href": f"{base}/{hub.id}"}},
        "relationships": {"projects": {"links": {"related": {
            "href": f"{base}/{hub.id}/projects"}}}},
    }


def _project_json(hub: SimHub, pid: str, name: str, base: str) -> dict[str, Any]:
    return {
        "type": "projects",
        "id": pid,
        "attributes": {
            "name": name,
            "scopes": [f"b360project.{pid[2:]}"],
            "extension": {"type": "projects:autodesk.bim360:Project", "version": "1.0",
                          "data": {"projectType": "ACC"}},
        },
        "links": {"self": {"href": f"{base}/{pid}"}},
        "relationships": {"hub": {"data": {"type": "hubs", "id": hub.id}}},
    }
