"""CPU per syncStatus call at the layers under a container check (issue 16).

One simulator (``--containers``, each with a caught-up sync token of the static-token user), then
one syncStatus call per container with ``--tokens`` tokens, ``--concurrency`` at a time, in this
process, twice per layer, alternating:

- ``pool``: the kept-alive HTTP path alone (``KeepAlivePool.request``: the request bytes, the
  exchange, the head parse) and the answer's parse (``parse_sync_status``);
- ``client``: ``RelationshipClient.sync_status`` over that pool (the body built, budget, token,
  semaphore, metrics observer, error mapping on top).

The idle pass of ``polling_cost.py`` / ``polling_ab.py`` at as many containers, divided by them,
is the whole check; the difference to ``client`` is the scheduler's own work per check.

    python bench/status_call_cost.py [--containers 10000] [--tokens 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import polling_cost
from common import STATIC_TOKEN, machine, simulator, table
from prometheus_client import CollectorRegistry

from notifier.core.budget import RequestBudget
from notifier.metrics import Metrics
from notifier.source.client import API_PATH, RelationshipClient
from notifier.source.keepalive import KeepAlivePool
from notifier.source.parse import parse_sync_status
from notifier.source.tokens import StaticTokenProvider

UNLIMITED_RPM = 6_000_000


async def measure(url: str, tokens: dict[str, str], per: int, concurrency: int
                  ) -> list[list[object]]:
    rows: list[list[object]] = []
    async with KeepAlivePool(url, user_agent="bench") as pool, \
            aiohttp.ClientSession() as session:
        metrics = Metrics(CollectorRegistry(), runtime=False)
        client = RelationshipClient(
            session, base_url=url, credential_name="bench",
            tokens=StaticTokenProvider(STATIC_TOKEN),
            budget=RequestBudget(UNLIMITED_RPM, name="bench"),
            observer=metrics.client_observer("bench"), keepalive=pool, concurrency=concurrency)
        headers = {"Authorization": f"Bearer {STATIC_TOKEN}", "Accept": "application/json",
                   "Content-Type": "application/json"}

        async def pool_call(cid: str) -> None:
            body = orjson.dumps([{"syncToken": tokens[cid], "referenceId": str(i)}
                                 for i in range(per)])
            head = pool.head("POST", f"{API_PATH}/{cid}/relationships:syncStatus", headers,
                             len(body))
            resp = await pool.request(head, body, endpoint="syncStatus", seconds=30.0,
                                      max_body=1 << 24)
            if resp.status != 200:
                raise RuntimeError(f"syncStatus answered {resp.status}")
            parse_sync_status(resp.body)

        async def client_call(cid: str) -> None:
            await client.sync_status(cid, [(tokens[cid], str(i)) for i in range(per)])

        layers: list[tuple[str, Callable[[str], Awaitable[None]]]] = [
            ("pool", pool_call), ("client", client_call)]
        for round_ in (1, 2):
            for name, call in layers:
                todo = list(tokens)

                async def worker(call: Callable[[str], Awaitable[None]] = call,
                                 todo: list[str] = todo) -> None:
                    while todo:
                        await call(todo.pop())

                before = resource.getrusage(resource.RUSAGE_SELF)
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                after = resource.getrusage(resource.RUSAGE_SELF)
                user = 1e6 * (after.ru_utime - before.ru_utime) / len(tokens)
                system = 1e6 * (after.ru_stime - before.ru_stime) / len(tokens)
                rows.append([round_, name, round(user + system), round(user), round(system)])
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--containers", type=int, default=10_000)
    p.add_argument("--tokens", type=int, default=10, help="tokens per call")
    p.add_argument("--concurrency", type=int, default=8, help="calls at once (source.concurrency)")
    args = p.parse_args()
    print(f"# status_call_cost: {machine()}")
    with simulator(containers=args.containers, relationships=2, seed=8) as sim:
        seeds = asyncio.run(polling_cost._fetch_seed(sim.url, sim.containers))
        gc.freeze()  # as a running notifier does after start-up
        rows = asyncio.run(measure(sim.url, {c: t for c, (t, _) in seeds.items()}, args.tokens,
                                   args.concurrency))
    print(table(["round", "layer", "CPU us per call", "user", "system"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
