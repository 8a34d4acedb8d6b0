"""CPU per request of two checkouts' kept-alive HTTP pools, alternating, in one process (issue 16).

A canned HTTP/1.1 server in another process answers every request with the same small
syncStatus-sized JSON body (the simulator's headers), so the server's own work is small and
the client's is what is measured: ``--requests`` calls of ``KeepAlivePool.request`` (a fixed
request, ``--concurrency`` at once, after a warm-up pass), CPU of this process per call, each
checkout's ``notifier.source.keepalive`` in turn, ``--rounds`` times. On a shared VM single
figures move by a third; compare the medians.

    python bench/keepalive_ab.py [--rounds 10] BASELINE_CHECKOUT .
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from common import machine, table

SERVER = r'''
import asyncio
BODY = b'{"results":[' + b",".join(b'{"syncToken":"%s","referenceId":"%d","moreData":false,'
                                   b'"overwrite":false}' % (b"t" * 40, i) for i in range(10)) + b']}'
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
          b"Date: Mon, 30 Nov 2026 01:31:54 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\n"
          % len(BODY)) + BODY

class Canned(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            at = self.buf.lower().find(b"content-length:", 0, end)
            length = int(self.buf[at + 15:self.buf.find(b"\r\n", at)])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(ANSWER)

async def main():
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
'''


def load(root: Path) -> ModuleType:
    """``notifier.source.keepalive`` (and what it imports) of the checkout at ``root``."""
    for name in [n for n in sys.modules if n == "notifier" or n.startswith("notifier.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("notifier.source.keepalive")
    finally:
        sys.path.remove(str(root))


async def measure(keepalive: ModuleType, url: str, requests: int, concurrency: int) -> float:
    async with keepalive.KeepAlivePool(url, user_agent="bench") as pool:
        body = b"[" + b",".join(b'{"syncToken":"%s","referenceId":"%d"}' % (b"t" * 40, i)
                                for i in range(10)) + b"]"
        head = pool.head("POST", "/bim360/relationship/v2/containers/c/relationships:syncStatus",
                         {"Authorization": "Bearer " + "x" * 40, "Accept": "application/json",
                          "Content-Type": "application/json"}, len(body))
        left = [0]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                resp = await pool.request(head, body, endpoint="syncStatus", seconds=30.0,
                                          max_body=1 << 24)
                if resp.status != 200:
                    raise RuntimeError(f"answered {resp.status}")

        left[0] = requests  # warm-up pass
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        left[0] = requests
        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return 1e6 * cpu / requests


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkouts", nargs="+", type=Path)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    print(f"# keepalive_ab: {machine()}")
    pools = [(str(root), load(root.resolve())) for root in args.checkouts]
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        figures: dict[str, list[float]] = {label: [] for label, _ in pools}
        rows: list[list[object]] = []
        for round_ in range(1, args.rounds + 1):
            for label, keepalive in pools:
                us = asyncio.run(measure(keepalive, url, args.requests, args.concurrency))
                figures[label].append(us)
                rows.append([round_, label, round(us, 1)])
    finally:
        server.kill()
        server.wait()
    print(table(["round", "checkout", "CPU us per request"], rows))
    for label, values in figures.items():
        print(f"{label}: median {statistics.median(values):.1f} us, "
              f"min {min(values):.1f}, max {max(values):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
