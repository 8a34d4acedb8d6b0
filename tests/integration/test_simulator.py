"""The Relationship Service simulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
from typing import Any

import aiohttp
import pytest

from notifier.cli.simulate import build_parser
from notifier.simulator import Simulator, SimulatorConfig

C1 = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
C2 = "0b9f1f7e-7a43-4c56-8f2e-6a4b7d1e9c22"
STATIC = "sim-access-token"
ASSET = "autodesk-bim360-asset"
ISSUE = "autodesk-bim360-issue"


@pytest.fixture
async def sim():
    cfg = SimulatorConfig(containers=[C1, C2], relationships=0, seed=11)
    cfg.knobs.rpm = 0
    async with Simulator(cfg) as s:
        yield s


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    """Tiny test client: returns (status, json, headers)."""

    def __init__(self, sim: Simulator, http: aiohttp.ClientSession, token: str = STATIC):
        self.sim, self.http, self.token = sim, http, token

    def url(self, container: str, action: str) -> str:
        return f"{self.sim.url}/bim360/relationship/v2/containers/{container}/{action}"

    async def call(self, method: str, container: str, action: str, body: Any = None,
                   params: dict[str, str] | None = None, token: str | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        hdrs = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        kwargs: dict[str, Any] = {"headers": hdrs, "params": params}
        if body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.url(container, action), **kwargs) as r:
            return r.status, await r.json(), r.headers

    async def sync(self, container: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        status, data, _ = await self.call("POST", container, "relationships:sync", body, **kw)
        assert status == 200, data
        return data

    async def drain(self, container: str, body: dict[str, Any]
                    ) -> tuple[list[dict[str, Any]], str]:
        pages = []
        while True:
            page = await self.sync(container, body)
            assert len(page["current"]["data"]) + len(page["deleted"]["data"]) <= \
                self.sim.knobs.page_size
            pages.append(page)
            if not page["moreData"]:
                return pages, page["nextSyncToken"]
            body = {"syncToken": page["nextSyncToken"]}

    async def status(self, container: str, items: Any) -> dict[str, Any]:
        status, data, _ = await self.call("POST", container, "relationships:syncStatus", items)
        assert status == 200, data
        return data


def ids(pages: list[dict[str, Any]], part: str) -> list[str]:
    return [r["id"] for p in pages for r in p[part]["data"]]


def pair(n: int) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    return ((ASSET, "asset", f"asset-{n}"), (ISSUE, "issue", f"issue-{n}"))


async def test_bootstrap_then_incremental_sync_across_pages(sim, http):
    api = Api(sim, http)
    sim.knobs.page_size = 3
    st = sim.state
    first = st.create_relationships(C1, 10)
    page1 = await api.sync(C1, {})
    assert page1["moreData"] is True
    assert len(page1["current"]["data"]) == 3
    assert page1["overwrite"] is False
    assert page1["deleted"]["data"] == []
    during = st.create_relationships(C1, 2)  # made while paging: not in the snapshot
    gone_during = st.delete_relationships(C1, [first[0]])  # deleted after the watermark
    rest, token = await api.drain(C1, {"syncToken": page1["nextSyncToken"]})
    snapshot = ids([page1, *rest], "current")
    assert snapshot == first  # a consistent snapshot, in creation order
    assert all(not r["isDeleted"] for p in rest for r in p["current"]["data"])

    created = st.create_relationships(C1, 4)
    gone = st.delete_relationships(C1, [first[1], first[2], created[0]])
    pages, token2 = await api.drain(C1, {"syncToken": token})
    assert len(pages) >= 3
    assert set(ids(pages, "current")) == set(during) | set(created[1:])
    assert set(ids(pages, "deleted")) == set(gone_during) | set(gone)
    for r in (r for p in pages for r in p["deleted"]["data"]):
        assert r["isDeleted"] is True
        assert r["deletedOn"]
        assert len(r["entities"]) == 2

    local = (set(snapshot) | set(ids(pages, "current"))) - set(ids(pages, "deleted"))
    assert local == st.ground_truth(C1)["live"]
    quiet = await api.sync(C1, {"syncToken": token2})
    assert quiet["current"]["data"] == quiet["deleted"]["data"] == []
    assert quiet["moreData"] is False


async def test_bootstrap_with_domain_filter(sim, http):
    api = Api(sim, http)
    sim.state.create_relationships(C1, 40)
    pages, _ = await api.drain(C1, {"filters": {"domains": ["autodesk-construction-photo"]}})
    got = [r for p in pages for r in p["current"]["data"]]
    assert got, "seeded data has photo relationships"
    assert all(any(e["domain"] == "autodesk-construction-photo" for e in r["entities"])
               for r in got)
    status, body, _ = await api.call("POST", C1, "relationships:sync",
                                     {"filters": {"domains": []}})
    assert status == 400
    assert body["type"] == "BadInput"


async def test_sync_status_batches_tokens_and_reports_bad_ones(sim, http):
    api = Api(sim, http)
    st = sim.state
    st.create_relationships(C1, 5)
    _, caught_up = await api.drain(C1, {})
    _, other_container = await api.drain(C2, {})
    _, asset_only = await api.drain(C1, {"filters": {"domains": ["autodesk-bim360-rfi"]}})
    st.create_relationships(C1, [pair(1)])  # touches asset and issue, not rfi
    items = [{"syncToken": caught_up, "referenceId": f"ref-{n}"} for n in range(300)]
    items.append({"syncToken": asset_only, "referenceId": "rfi"})
    items.append({"syncToken": "bm90IGEgdG9rZW4=", "referenceId": "garbled"})
    items.append({"syncToken": other_container, "referenceId": "foreign"})
    out = await api.status(C1, items)
    assert len(out["results"]) == 301
    assert all(r["moreData"] is True and r["overwrite"] is False for r in out["results"][:300])
    assert out["results"][0]["referenceId"] == "ref-0"
    assert out["results"][0]["syncToken"] == caught_up
    assert out["results"][300] == {"syncToken": asset_only, "referenceId": "rfi",
                                   "moreData": False, "overwrite": False}
    errors = {e["referenceId"]: e for e in out["errors"]}
    assert set(errors) == {"garbled", "foreign"}
    for e in errors.values():
        assert e["type"] == "BadInput"
        assert e["title"]
        assert e["detail"]
        assert e["errors"][0]["field"] == "syncToken"
    assert errors["garbled"]["syncToken"] == "bm90IGEgdG9rZW4="

    _, drained = await api.drain(C1, {"syncToken": caught_up})
    single = await api.status(C1, {"syncToken": drained, "referenceId": "one"})  # bare object
    assert single["results"] == [{"syncToken": drained, "referenceId": "one",
                                  "moreData": False, "overwrite": False}]


async def test_sync_token_is_bound_to_container_and_user(sim, http):
    api = Api(sim, http)
    _, token = await api.drain(C1, {})
    status, body, _ = await api.call("POST", C2, "relationships:sync", {"syncToken": token})
    assert status == 400
    assert body["type"] == "BadInput"
    assert "another container" in body["errors"][0]["detail"]
    grant = await refresh(sim, http, sim.config.refresh_token)
    status, body, _ = await api.call("POST", C1, "relationships:sync", {"syncToken": token},
                                     token=grant["access_token"])
    assert status == 400
    assert "another user" in body["errors"][0]["detail"]
    status, body, _ = await api.call("POST", C1, "relationships:sync", {"syncToken": "@@@"})
    assert status == 400
    assert set(body) == {"type", "title", "detail", "errors"}


async def test_overwrite_after_retention_horizon_moves(sim, http):
    api = Api(sim, http)
    sim.knobs.page_size = 4
    st = sim.state
    st.create_relationships(C1, 9)
    _, token = await api.drain(C1, {})
    st.create_relationships(C1, 3)
    st.delete_relationships(C1, list(st.ground_truth(C1)["live"])[:2])
    st.move_retention_horizon(C1)
    out = await api.status(C1, [{"syncToken": token, "referenceId": "old"}])
    assert out["results"][0]["overwrite"] is True
    assert out["results"][0]["moreData"] is True
    pages, fresh = await api.drain(C1, {"syncToken": token})
    assert len(pages) == 3
    assert all(p["overwrite"] is True and p["deleted"]["data"] == [] for p in pages)
    assert set(ids(pages, "current")) == st.ground_truth(C1)["live"]
    out = await api.status(C1, [{"syncToken": fresh}])
    assert out["results"][0]["overwrite"] is False
    assert out["results"][0]["moreData"] is False


async def test_search_pages_and_scoped_sync_token(sim, http):
    api = Api(sim, http)
    st = sim.state
    st.create_relationships(C1, [pair(n) for n in range(5)])
    st.create_relationships(C1, [((ASSET, "asset", "x"), ("autodesk-construction-photo",
                                                          "photo", "p"))])
    params = {"domain": ISSUE, "type": "issue", "withDomain": ASSET, "pageLimit": "2"}
    seen, token, cont = [], None, None
    while True:
        status, body, _ = await api.call(
            "GET", C1, "relationships:search",
            params={**params, **({"continuationToken": cont} if cont else {})})
        assert status == 200, body
        assert len(body["relationships"]) <= 2
        seen += [r["id"] for r in body["relationships"]]
        token = body["page"]["syncToken"]
        cont = body["page"]["continuationToken"]
        if cont is None:
            break
    assert len(seen) == 5
    assert len(set(seen)) == 5
    matching = st.create_relationships(C1, [pair(9)])
    st.create_relationships(C1, [((ASSET, "asset", "y"), ("autodesk-construction-photo",
                                                          "photo", "q"))])
    out = await api.status(C1, [{"syncToken": token}])
    assert out["results"][0]["moreData"] is True
    pages, _ = await api.drain(C1, {"syncToken": token})
    assert ids(pages, "current") == matching
    assert ids(pages, "deleted") == []
    status, body, _ = await api.call("GET", C1, "relationships:search",
                                     params={"type": "issue"})
    assert status == 400
    assert body["errors"][0]["field"] == "type"


async def test_intersect_batch_get_create_delete(sim, http):
    api = Api(sim, http)
    body = [{"entities": [{"domain": ASSET, "type": "asset", "id": "a1"},
                          {"domain": ISSUE, "type": "issue", "id": "i1"}]},
            {"entities": [{"domain": ASSET, "type": "asset", "id": "a1"},
                          {"domain": "autodesk-construction-photo", "type": "photo",
                           "id": "p1"}]}]
    status, created, _ = await api.call("PUT", C1, "relationships", body)
    assert status == 200
    assert len(created) == 2
    assert created[0]["isDeleted"] is False
    status, inter, _ = await api.call(
        "POST", C1, "relationships:intersect",
        {"entities": [{"domain": ASSET, "type": "asset", "id": "a1"}],
         "withEntities": [{"domain": ISSUE}]})
    assert status == 200
    assert [r["id"] for r in inter["relationships"]] == [created[0]["id"]]
    assert inter["page"]["continuationToken"] is None
    assert inter["page"]["syncToken"]
    status, deleted, _ = await api.call("POST", C1, "relationships:delete", [created[0]["id"]])
    assert status == 200
    assert deleted == {"deleted": [created[0]["id"]]}
    status, batch, _ = await api.call("POST", C1, "relationships:batch",
                                      [r["id"] for r in created])
    assert status == 200
    assert [r["isDeleted"] for r in batch] == [True, False]
    status, one, _ = await api.call("GET", C1, f"relationships/{created[1]['id']}")
    assert status == 200
    assert one["id"] == created[1]["id"]
    status, _, _ = await api.call("GET", C1, "relationships/00000000-0000-4000-8000-000000000000")
    assert status == 404
    status, conflict, _ = await api.call("PUT", C1, "relationships",
                                         [{**body[1], "id": created[0]["id"]}])
    assert status == 409
    assert conflict["conflict"][0]["id"] == created[0]["id"]


async def test_content_type_and_unknown_container(sim, http):
    api = Api(sim, http)
    async with http.post(api.url(C1, "relationships:sync"), data=b"{}",
                         headers={"Authorization": f"Bearer {STATIC}",
                                  "Content-Type": "text/plain"}) as r:
        assert r.status == 415
        assert (await r.json())["type"] == "UnsupportedMediaType"
    status, body, _ = await api.call("POST", "11111111-2222-4333-8444-555555555555",
                                     "relationships:sync", {})
    assert status == 404
    assert set(body) == {"type", "title", "detail", "errors"}
    status, body, _ = await api.call("POST", "testing", "relationships:sync", {})
    assert status == 400
    assert body["errors"][0]["field"] == "containerId"


async def test_rate_limit_answers_429_with_retry_after(sim, http):
    api = Api(sim, http)
    sim.knobs.rpm = 3
    for _ in range(3):
        status, _, _ = await api.call("POST", C1, "relationships:syncStatus", [])
        assert status == 200
    status, body, headers = await api.call("POST", C1, "relationships:syncStatus", [])
    assert status == 429
    assert body == {"developerMessage": "Quota limit exceeded."}
    assert 1 <= int(headers["Retry-After"]) <= 60
    grant = await refresh(sim, http, sim.config.refresh_token)  # another user: own budget
    status, _, _ = await api.call("POST", C1, "relationships:syncStatus", [],
                                  token=grant["access_token"])
    assert status == 200
    assert sim.state.stats.rate_limited == 1


async def test_fail_rate_injects_500(sim, http):
    api = Api(sim, http)
    sim.knobs.fail_rate = 1.0
    status, body, _ = await api.call("POST", C1, "relationships:sync", {})
    assert status == 500
    assert body["type"] == "InternalServerError"
    sim.knobs.fail_rate = 0.0
    status, _, _ = await api.call("POST", C1, "relationships:sync", {})
    assert status == 200


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def refresh(sim: Simulator, http: aiohttp.ClientSession, token: str,
                  expect: int = 200, **extra: str) -> dict[str, Any]:
    cfg = sim.config
    headers = {} if extra.pop("no_basic", None) else basic(cfg.client_id, cfg.client_secret)
    form = {"grant_type": "refresh_token", "refresh_token": token, **extra}
    async with http.post(f"{sim.url}/authentication/v2/token", data=form,
                         headers=headers) as r:
        body = await r.json()
        assert r.status == expect, body
        return body


async def test_refresh_token_rotation(sim, http):
    sim.knobs.rotation_grace = True  # the opt-in grace first; single use (the default) below
    api = Api(sim, http)
    seed = sim.config.refresh_token
    first = await refresh(sim, http, seed)
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] == 3599
    assert first["refresh_token"] != seed
    again = await refresh(sim, http, seed)  # crash before persisting: the retry is honoured
    assert (again["access_token"], again["refresh_token"]) == (
        first["access_token"], first["refresh_token"])
    status, _, _ = await api.call("POST", C1, "relationships:syncStatus", [],
                                  token=first["access_token"])
    assert status == 200  # first use of the successor spends the old refresh token
    spent = await refresh(sim, http, seed, expect=400)
    assert spent["error"] == "invalid_grant"
    second = await refresh(sim, http, first["refresh_token"])
    assert second["refresh_token"] not in (seed, first["refresh_token"])
    third = await refresh(sim, http, second["refresh_token"])  # using R2 spends R1 at once
    assert (await refresh(sim, http, first["refresh_token"], expect=400))["error"] == \
        "invalid_grant"
    sim.knobs.rotation_grace = False
    await refresh(sim, http, third["refresh_token"])
    await refresh(sim, http, third["refresh_token"], expect=400)
    bad = await refresh(sim, http, "unknown-token", expect=400)
    assert bad["error"] == "invalid_grant"


async def test_token_endpoint_client_authentication(sim, http):
    url = f"{sim.url}/authentication/v2/token"
    form = {"grant_type": "refresh_token", "refresh_token": sim.config.refresh_token}
    async with http.post(url, data=form, headers=basic("sim-client-id", "wrong")) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_client"
    both = {**form, "client_id": "sim-client-id"}
    async with http.post(url, data=both, headers=basic("sim-client-id", "sim-client-secret")) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "invalid_request"
    assert sim.state.auth.refresh_token_state(sim.config.refresh_token) == "fresh"


async def test_access_token_expiry(sim, http):
    api = Api(sim, http)
    sim.knobs.access_token_lifetime = 0.3
    grant = await refresh(sim, http, sim.config.refresh_token)
    assert grant["expires_in"] == 1
    status, _, _ = await api.call("POST", C1, "relationships:syncStatus", [],
                                  token=grant["access_token"])
    assert status == 200
    await asyncio.sleep(0.4)
    status, body, _ = await api.call("POST", C1, "relationships:syncStatus", [],
                                     token=grant["access_token"])
    assert status == 401
    assert body["errorCode"] == "AUTH-006"
    assert {"developerMessage", "userMessage", "more info"} <= set(body)
    status, _, _ = await api.call("POST", C1, "relationships:syncStatus", [])
    assert status == 200  # the static token never expires


async def test_control_endpoints(sim, http):
    base = f"{sim.url}/_sim"
    async with http.post(f"{base}/containers/{C2}/relationships", json={"count": 4}) as r:
        made = (await r.json())["ids"]
    async with http.post(f"{base}/containers/{C2}/relationships:delete",
                         json={"ids": made[:1]}) as r:
        assert (await r.json())["deleted"] == made[:1]
    async with http.get(f"{base}/containers/{C2}/truth") as r:
        truth = await r.json()
    assert [c["kind"] for c in truth["changes"]] == ["created"] * 4 + ["deleted"]
    assert truth["live"] == sorted(made[1:])
    async with http.post(f"{base}/knobs", json={"rpm": 7, "latency": 0.01}) as r:
        assert (await r.json())["rpm"] == 7
        assert sim.knobs.latency == 0.01
    async with http.post(f"{base}/knobs", json={"page_size": 500}) as r:
        assert r.status == 400
    async with http.post(f"{base}/containers/{C2}/retention") as r:
        assert (await r.json())["horizon"] == 5
    await Api(sim, http).call("POST", C2, "relationships:sync", {})
    async with http.get(f"{base}/stats") as r:
        stats = await r.json()
    assert stats["requests"]["sync"] == 1
    assert stats["statuses"]["200"] == 1


async def test_change_generator_runs_in_background(sim):
    def total() -> int:
        return sum(c.seq for c in sim.state.containers.values())

    sim.knobs.change_rate = 200.0
    for _ in range(100):
        await asyncio.sleep(0.05)
        if total() >= 30:
            break
    sim.knobs.change_rate = 0.0
    assert total() >= 30
    truth = [sim.state.ground_truth(c) for c in (C1, C2)]
    kinds = [ch["kind"] for t in truth for ch in t["changes"]]
    assert "created" in kinds
    assert sum(len(t["live"]) for t in truth) == kinds.count("created") - kinds.count("deleted")


def test_every_cli_option_is_documented():
    text = build_parser().format_help()
    for option in ("--host", "--port", "--container", "--relationships", "--change-rate",
                   "--rpm", "--page-size", "--access-token", "--client-id", "--client-secret",
                   "--refresh-token", "--fail-rate", "--latency", "--retention", "--seed"):
        assert option in text


async def test_cli_serves_until_sigterm():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier.simulator", "--port", "0", "--seed", "3",
        "--relationships", "2", "--container", C1,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
    url = first.rsplit(" ", 1)[-1].strip()
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/bim360/relationship/v2/containers/{C1}/relationships:sync", json={},
            headers={"Authorization": f"Bearer {STATIC}"}) as r:
        assert r.status == 200
        assert len((await r.json())["current"]["data"]) == 2
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
