"""The Relationship Service v2 endpoints over HTTP (reference sections 2-12).

Every request under ``/bim360/relationship/v2/`` passes, in order: bearer authentication
(401 gateway body), the per-user sliding-window rate limit (429 + Retry-After), injected
latency, injected faults (500), the ``x-ads-region`` check, then the endpoint: Content-Type
(415), container id (400 / 404), input validation (400), and the answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from notifier.simulator import bodies, catalog, malformed, syncing, writes
from notifier.simulator.auth import Principal
from notifier.simulator.bodies import ApiError, bad_field
from notifier.simulator.ids import parse_uuid
from notifier.simulator.model import Container, render
from notifier.simulator.query import Query, intersect_query, search_query
from notifier.simulator.state import SimState

log = logging.getLogger(__name__)

API = "/bim360/relationship/v2"
CONTAINER = API + "/containers/{containerId}"
REGIONS = frozenset({"US", "CAN", "EMEA", "GBR", "DEU", "IND", "JPN", "AUS"})
PRINCIPAL = web.RequestKey("principal", Principal)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, headers=headers,
                        content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    return json_response(err.body, err.status, err.headers)


async def read_json(request: web.Request) -> Any:
    """The JSON body of a POST/PUT (None if empty); 415 unless Content-Type is JSON."""
    if request.content_type != "application/json":
        raise bodies.unsupported_media_type(request.headers.get("Content-Type", ""))
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_field("body", "The request body is not valid JSON.") from None


class RelationshipApi:
    """Route handlers bound to one :class:`SimState`."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        # Seeded like the rest of the simulator: a seeded run injects the same faults each time.
        seed = state.config.seed
        self._fault_rng = random.Random(None if seed is None else f"faults-{seed}")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(CONTAINER + "/relationships:sync", self.sync, name="sync"),
            web.post(CONTAINER + "/relationships:syncStatus", self.sync_status,
                     name="syncStatus"),
            web.get(CONTAINER + "/relationships:search", self.search, name="search",
                    allow_head=False),
            web.post(CONTAINER + "/relationships:intersect", self.intersect, name="intersect"),
            web.post(CONTAINER + "/relationships:batch", self.batch, name="batch"),
            web.post(CONTAINER + "/relationships:delete", self.delete, name="delete"),
            web.put(CONTAINER + "/relationships", self.create, name="create"),
            web.get(CONTAINER + "/relationships/{relationshipId}", self.get_one, name="get",
                    allow_head=False),
            web.get(API + "/utility/relationships:writable", self.writable, name="writable",
                    allow_head=False),
        ]

    # -- the guard in front of every endpoint -------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API + "/") or request.match_info.http_exception:
            try:
                return await handler(request)
            except ApiError as err:
                return error_response(err)
        st = self.state
        st.stats.requests[request.match_info.route.name or "other"] += 1
        try:
            principal = st.auth.authenticate(request.headers.get("Authorization"))
            if principal.two_legged:
                raise bodies.gateway(403, "The Relationship service requires a three-legged "
                                     "(user) token", "AUTH-010")
            wait = st.limiter.acquire(principal.user, st.knobs.rpm, st.clock())
            if wait is not None:
                st.stats.rate_limited += 1
                raise bodies.rate_limited(wait)
            st.stats.by_user[principal.user] += 1
            request[PRINCIPAL] = principal
            if st.knobs.latency > 0:
                await asyncio.sleep(st.knobs.latency)
            if st.knobs.fail_rate > 0 and self._fault_rng.random() < st.knobs.fail_rate:
                st.stats.faults_injected += 1
                raise bodies.injected_server_error()
            region = request.headers.get("x-ads-region")
            if region is not None:
                st.stats.regions[region] += 1
                if region.strip().upper() not in REGIONS:
                    raise bad_field("x-ads-region", f"The value '{region}' is not valid.")
            response = await handler(request)
        except ApiError as err:
            if err.status == 401:
                st.stats.unauthorized += 1
            response = error_response(err)
        except Exception:
            log.exception("simulator endpoint %s failed", request.path)
            response = json_response(bodies.service_error(
                "InternalServerError", "An unexpected error occurred", "Simulator bug"), 500)
        st.stats.statuses[str(response.status)] += 1
        return response

    # -- helpers -------------------------------------------------------------------------------

    def _container(self, request: web.Request) -> Container:
        raw = request.match_info["containerId"]
        if parse_uuid(raw) is None:
            raise bad_field("containerId", f"The value '{raw}' is not valid.")
        try:
            return self.state.container(raw)
        except KeyError:
            raise bodies.not_found("containerId", raw, "Container") from None

    @staticmethod
    def _user(request: web.Request) -> str:
        return request[PRINCIPAL].user

    # -- read protocol (logic in syncing.py) -----------------------------------------------------

    async def sync(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        c = self._container(request)
        st = self.state
        kind = malformed.choose(st.knobs, c.id, self._fault_rng)
        if kind == "huge_page":
            page = syncing.sync(st, c, self._user(request), body, malformed.HUGE_PAGE_SIZE)
        else:
            page = syncing.sync(st, c, self._user(request), body)
        if kind is None:
            return json_response(page)
        st.stats.malformed_injected += 1
        if kind == "huge_page":
            return json_response(page)
        return web.Response(body=malformed.spoil(page, kind, self._fault_rng),
                            content_type="application/json")

    async def sync_status(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        c = self._container(request)
        return json_response(syncing.sync_status(self.state, c, self._user(request), body))

    async def search(self, request: web.Request) -> web.Response:
        c = self._container(request)
        return self._query_page(request, c, search_query(request.query))

    async def intersect(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        c = self._container(request)
        return self._query_page(request, c, intersect_query(body, request.query))

    def _query_page(self, request: web.Request, c: Container, q: Query) -> web.Response:
        limit = syncing.page_limit(self.state, request.query.get("pageLimit"))
        return json_response(syncing.query_page(self.state, c, self._user(request), q, limit,
                                                request.query.get("continuationToken")))

    # -- by id -------------------------------------------------------------------------------

    async def batch(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        c = self._container(request)
        uids = writes.id_list(body)
        found = [c.by_id[u] for u in dict.fromkeys(uids) if u in c.by_id]
        return json_response([render(r) for r in found])

    async def get_one(self, request: web.Request) -> web.Response:
        c = self._container(request)
        raw = request.match_info["relationshipId"]
        uid = parse_uuid(raw)
        if uid is None:
            raise bad_field("relationshipId", f"The value '{raw}' is not valid.")
        rel = c.by_id.get(uid)
        if rel is None:
            raise bodies.not_found("relationshipId", raw, "Relationship")
        return json_response(render(rel))

    # -- writes --------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        c = self._container(request)
        status, payload = writes.create(self.state, c, body)
        return json_response(payload, status)

    async def delete(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        c = self._container(request)
        return json_response({"deleted": writes.delete(self.state, c, body)})

    async def writable(self, request: web.Request) -> web.Response:
        return json_response(catalog.writable_table())
