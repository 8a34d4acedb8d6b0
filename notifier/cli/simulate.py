"""``notifier simulate`` (also ``python -m notifier.simulator``): serve the local Relationship
Service."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import shlex
import signal

from notifier.simulator.config import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    DEFAULT_USER,
    MAX_PAGE_SIZE,
    STATIC_TOKEN_USER,
    Knobs,
    SimulatorConfig,
)
from notifier.simulator.http_api import API
from notifier.simulator.http_oauth import TOKEN_PATH
from notifier.simulator.ids import parse_uuid
from notifier.simulator.server import Simulator

DEMO_HUB = "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"


def _container_id(text: str) -> str:
    if parse_uuid(text) is None:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}")
    return text.lower()


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(kind: type[int] | type[float]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError("must be >= 0")
        return value
    return parse


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PAGE_SIZE}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="notifier simulate",
        description="Serve a local Autodesk Relationship Service v2 (sync, syncStatus, search, "
                    "intersect, batch, get, create, delete) plus the OAuth v2 token endpoint, "
                    "with in-memory data, a change generator and /_sim control endpoints. "
                    "Runs until SIGINT or SIGTERM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (0 = a free port)")
    p.add_argument("--container", action="append", type=_container_id, default=[],
                   metavar="UUID", help="serve this container id (repeatable); without it, "
                   "--containers random ids are generated and printed")
    p.add_argument("--containers", type=_non_negative(int), default=3, metavar="N",
                   help="how many container ids to generate when --container is not given")
    p.add_argument("--hub-projects", type=_non_negative(int), default=0, metavar="N",
                   help=f"also serve hub {DEMO_HUB} with N projects (hub_id subscriptions; "
                   "each project is a container with --relationships relationships)")
    p.add_argument("--relationships", type=_non_negative(int), default=25, metavar="N",
                   help="relationships created in each container at start (dated in the "
                   "past 90 days)")
    p.add_argument("--change-rate", type=_non_negative(float), default=0.5, metavar="R",
                   help="background changes per second across all containers (about 70%% "
                   "creates, 30%% deletes); 0 = none")
    p.add_argument("--rpm", type=_non_negative(int), default=120, metavar="N",
                   help="requests per user in any sliding 60 s window, all relationship "
                   "endpoints together; above it 429 with Retry-After; 0 = unlimited")
    p.add_argument("--page-size", type=_page_size, default=MAX_PAGE_SIZE, metavar="N",
                   help="items per sync page and maximum search/intersect pageLimit (1-100)")
    p.add_argument("--access-token", default=DEFAULT_ACCESS_TOKEN, metavar="T",
                   help="a static bearer token that is always accepted and never expires "
                   "(its own user for rate limiting and sync-token binding); '' disables it")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID,
                   help="the OAuth client id the token endpoint accepts (HTTP Basic)")
    p.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET,
                   help="the OAuth client secret the token endpoint accepts")
    p.add_argument("--refresh-token", default=DEFAULT_REFRESH_TOKEN,
                   help="a refresh token valid at start (rotates on every use)")
    p.add_argument("--user", default=DEFAULT_USER,
                   help="user id behind --refresh-token and the tokens rotated from it")
    p.add_argument("--access-token-lifetime", type=float, default=3599.0, metavar="SECONDS",
                   help="lifetime of access tokens issued by the token endpoint")
    p.add_argument("--rotation-grace", action="store_true",
                   help="keep a used refresh token usable (returning the same new pair) until "
                   "the new pair is first used (default: single use, as the real service)")
    p.add_argument("--fail-rate", type=_fraction, default=0.0, metavar="F",
                   help="fraction (0-1) of relationship requests answered with HTTP 500")
    p.add_argument("--latency", type=_non_negative(float), default=0.0, metavar="SECONDS",
                   help="delay added to every relationship request")
    p.add_argument("--retention", type=_non_negative(float), default=0.0, metavar="SECONDS",
                   help="change history kept: older sync tokens get overwrite:true and a full "
                   "resync; 0 = history is only cut by POST /_sim/.../retention")
    p.add_argument("--no-user-binding", action="store_true",
                   help="accept sync tokens from any user (default: only the issuing user)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for reproducible container ids, relationships and tokens")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    knobs = Knobs(fail_rate=args.fail_rate, latency=args.latency, rpm=args.rpm,
                  page_size=args.page_size, access_token_lifetime=args.access_token_lifetime,
                  rotation_grace=args.rotation_grace, change_rate=args.change_rate,
                  retention=args.retention, bind_tokens_to_user=not args.no_user_binding)
    return SimulatorConfig(
        host=args.host, port=args.port, containers=list(args.container),
        generated_containers=args.containers, relationships=args.relationships,
        seed=args.seed, access_token=args.access_token or None, client_id=args.client_id,
        client_secret=args.client_secret, refresh_token=args.refresh_token, user_id=args.user,
        knobs=knobs)


def banner(sim: Simulator) -> str:
    cfg, knobs = sim.config, sim.knobs
    base = sim.url + API
    lines = [
        f"Relationship Service v2 simulator listening on {sim.url}",
        f"  API base URL:   {base}",
        f"  token URL:      {sim.url}{TOKEN_PATH}",
        f"  control:        {sim.url}/_sim  (stats, knobs, truth; see notifier/simulator/"
        "control.py)",
        "  containers:",
        *(f"    {cid}" for cid in sim.containers),
        *(f"  hub:            {h.id} ({len(h.projects)} projects; {sim.url}/project/v1/hubs/"
          f"{h.id}/projects, control {sim.url}/_sim/hubs)" for h in sim.hubs.hubs.values()),
        f"  OAuth client:   id={cfg.client_id} secret={cfg.client_secret}",
        f"  refresh token:  {cfg.refresh_token} (user {cfg.user_id}; rotates on every use)",
        f"  limits:         {knobs.rpm or 'unlimited'} requests/min/user, page size "
        f"{knobs.page_size}, {knobs.change_rate} changes/s, fail rate {knobs.fail_rate}, "
        f"latency {knobs.latency}s",
    ]
    if cfg.access_token and sim.containers:
        cid = sim.containers[0]
        auth = shlex.quote(f"Authorization: Bearer {cfg.access_token}")
        token = sim.state.current_sync_token(cid, STATIC_TOKEN_USER)
        status_body = shlex.quote(f'[{{"syncToken": "{token}", "referenceId": "demo"}}]')
        lines += [
            f"  access token:   {cfg.access_token} (static, never expires)",
            "",
            "Try:",
            f"  curl -s -X POST {base}/containers/{cid}/relationships:sync -H {auth} "
            "-H 'Content-Type: application/json' -d '{}'",
            f"  curl -s -X POST {base}/containers/{cid}/relationships:syncStatus -H {auth} "
            f"-H 'Content-Type: application/json' -d {status_body}",
        ]
    lines.append(
        f"  curl -s -X POST {sim.url}{TOKEN_PATH} -u {cfg.client_id}:{cfg.client_secret} "
        f"-d grant_type=refresh_token -d refresh_token={cfg.refresh_token}")
    return "\n".join(lines)


async def serve(config: SimulatorConfig, stop: asyncio.Event | None = None, *,
                hub_projects: int = 0) -> None:
    """Run until ``stop`` is set, or until SIGINT/SIGTERM when no event is given."""
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    async with Simulator(config) as sim:
        if hub_projects:
            sim.hubs.add_hub(DEMO_HUB, "Demo hub", projects=hub_projects,
                             relationships=config.relationships)
        gc.freeze()  # the seeded data lives until exit: keep it out of every GC pass
        print(banner(sim), flush=True)
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            if own_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    print("simulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(config_from_args(args), hub_projects=args.hub_projects))
    return 0
