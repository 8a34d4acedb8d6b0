"""``/_sim/...``: JSON control endpoints for scripts (no auth, not part of the real API).

    GET  /_sim                                   summary: containers, knobs
    GET  /_sim/containers                        [{id, seq, live, horizon}]
    POST /_sim/containers                        {"id"?, "relationships"?: n} -> {"id"}
    POST /_sim/containers/{cid}/relationships    {"count": n} | {"pairs": [[e, e]...], "service"?}
                                                 -> {"ids", "seq"}
    POST /_sim/containers/{cid}/relationships:delete  {"ids": [...]} | {"count": n}
                                                 -> {"deleted", "seq"}
    POST /_sim/containers/{cid}/retention        move the horizon to now -> {"horizon"}
    POST /_sim/retention                         the same for every container
    GET  /_sim/containers/{cid}/truth?since=S    {"changes", "live", "seq", "horizon"}
    GET  /_sim/containers/{cid}/sync-token?user=U&domains=a,b   a caught-up sync token
    GET  /_sim/knobs (alias /_sim/faults)        current knobs
    POST /_sim/knobs (alias /_sim/faults)        change some: {"fail_rate": 1.0, "rpm": 5, ...}
    GET  /_sim/stats                             counters; POST /_sim/stats:reset clears them
    POST /_sim/credentials                       {"user"?} -> a new refresh token
    POST /_sim/credentials:state                 {"refresh_token"} -> {"state"}
    POST /_sim/tokens:expire                     expire every issued access token now
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from aiohttp import web

from notifier.simulator.config import STATIC_TOKEN_USER
from notifier.simulator.http_api import json_response
from notifier.simulator.model import Container
from notifier.simulator.state import SimState

PREFIX = "/_sim"


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ControlError(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise ControlError(400, "body must be a JSON object")
    return data


def _summary(c: Container) -> dict[str, Any]:
    return {"id": c.id, "seq": c.seq, "live": c.live, "total": len(c.by_id),
            "horizon": c.horizon}


class ControlApi:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        p, cp = PREFIX, PREFIX + "/containers/{cid}"
        return [
            web.get(p, self.summary), web.get(p + "/containers", self.list_containers),
            web.post(p + "/containers", self.add_container),
            web.post(cp + "/relationships", self.create),
            web.post(cp + "/relationships:delete", self.delete),
            web.post(cp + "/retention", self.retention),
            web.post(p + "/retention", self.retention_all),
            web.get(cp + "/truth", self.truth),
            web.get(cp + "/sync-token", self.sync_token),
            web.get(p + "/knobs", self.get_knobs), web.post(p + "/knobs", self.set_knobs),
            web.get(p + "/faults", self.get_knobs), web.post(p + "/faults", self.set_knobs),
            web.get(p + "/stats", self.stats), web.post(p + "/stats:reset", self.reset_stats),
            web.post(p + "/credentials", self.new_credential),
            web.post(p + "/credentials:state", self.credential_state),
            web.post(p + "/tokens:expire", self.expire_tokens),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(PREFIX):
            response: web.StreamResponse = await handler(request)
            return response
        try:
            response = await handler(request)
        except ControlError as err:
            return json_response({"error": str(err)}, err.status)
        except KeyError as err:
            return json_response({"error": f"unknown container {err}"}, 404)
        except (ValueError, TypeError) as err:
            return json_response({"error": str(err)}, 400)
        return response

    def _container(self, request: web.Request) -> Container:
        return self.state.container(request.match_info["cid"])

    async def summary(self, request: web.Request) -> web.Response:
        return json_response({
            "containers": [_summary(c) for c in self.state.containers.values()],
            "knobs": dataclasses.asdict(self.state.knobs)})

    async def list_containers(self, request: web.Request) -> web.Response:
        return json_response([_summary(c) for c in self.state.containers.values()])

    async def add_container(self, request: web.Request) -> web.Response:
        body = await _body(request)
        cid = self.state.add_container(body.get("id"), int(body.get("relationships", 0)))
        return json_response({"id": cid})

    async def create(self, request: web.Request) -> web.Response:
        c = self._container(request)
        body = await _body(request)
        if "pairs" in body:
            ids = self.state.create_relationships(c.id, body["pairs"],
                                                  service=bool(body.get("service")))
        else:
            ids = self.state.create_relationships(c.id, int(body.get("count", 1)))
        return json_response({"ids": ids, "seq": c.seq})

    async def delete(self, request: web.Request) -> web.Response:
        c = self._container(request)
        body = await _body(request)
        if "ids" in body:
            done = self.state.delete_relationships(c.id, body["ids"])
        else:
            done = self.state.delete_random(c.id, int(body.get("count", 1)))
        return json_response({"deleted": done, "seq": c.seq})

    async def retention(self, request: web.Request) -> web.Response:
        c = self._container(request)
        return json_response({"horizon": self.state.move_retention_horizon(c.id)})

    async def retention_all(self, request: web.Request) -> web.Response:
        return json_response({cid: self.state.move_retention_horizon(cid)
                              for cid in self.state.containers})

    async def truth(self, request: web.Request) -> web.Response:
        c = self._container(request)
        truth = self.state.ground_truth(c.id, int(request.query.get("since", 0)))
        truth["live"] = sorted(truth["live"])
        return json_response(truth)

    async def sync_token(self, request: web.Request) -> web.Response:
        c = self._container(request)
        domains = [d for d in request.query.get("domains", "").split(",") if d]
        token = self.state.current_sync_token(
            c.id, request.query.get("user", STATIC_TOKEN_USER), domains or None)
        return json_response({"syncToken": token, "seq": c.seq})

    async def get_knobs(self, request: web.Request) -> web.Response:
        return json_response(dataclasses.asdict(self.state.knobs))

    async def set_knobs(self, request: web.Request) -> web.Response:
        knobs = self.state.set_knobs(**await _body(request))
        return json_response(dataclasses.asdict(knobs))

    async def stats(self, request: web.Request) -> web.Response:
        st = self.state
        out = st.stats.to_json()
        out["auth"] = dataclasses.asdict(st.auth.counters)
        out["peak_requests_per_window"] = dict(st.limiter.peak)
        return json_response(out)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.state.stats.reset()
        self.state.limiter.peak.clear()
        return json_response({"ok": True})

    async def new_credential(self, request: web.Request) -> web.Response:
        body = await _body(request)
        user = body.get("user") or self.state.config.user_id
        token = self.state.issue_refresh_token(user)
        return json_response({"refresh_token": token, "user": user,
                              "client_id": self.state.config.client_id})

    async def credential_state(self, request: web.Request) -> web.Response:
        body = await _body(request)
        return json_response(
            {"state": self.state.auth.refresh_token_state(str(body.get("refresh_token")))})

    async def expire_tokens(self, request: web.Request) -> web.Response:
        return json_response({"expired": self.state.expire_access_tokens()})
