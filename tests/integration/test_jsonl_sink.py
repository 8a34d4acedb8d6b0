"""The jsonl sink when the disk refuses a write half-way: a real partial write, made by the
kernel's file size limit (RLIMIT_FSIZE), in a child process so nothing else is limited."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.integration.main_job_support import ROOT, child_env

pytestmark = pytest.mark.timeout(60)

CHILD = r"""
import asyncio, os, resource, signal, sys
from notifier.core.events import ChangeKind, Event
from notifier.errors import SinkError
from notifier.config import JsonlSinkConfig
from notifier.sinks.jsonl import JsonlSink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG


def ev(i):
    return Event(id=f"id-{i}", type="t", source="s", subject=f"r{i}", time="2026-01-01T00:00:00Z",
                 kind=ChangeKind.CREATED, container_id="c", subscription="s", snapshot=False,
                 data={"n": i, "pad": "x" * 200})


async def main(path):
    async with JsonlSink(JsonlSinkConfig(name="j", path=path)) as sink:
        await sink.publish([ev(i) for i in range(10)])
        page = [ev(i) for i in range(10, 20)]
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        # Room for a line and a half of the next page: the write stops in the middle of a line.
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 400, hard))
        try:
            await sink.publish(page)
            print("unexpected success")
        except SinkError as exc:
            print("failed:", exc)
        print("healthy:", sink.healthy())
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        await sink.publish(page)  # the retry of the page
        print("healthy:", sink.healthy())

asyncio.run(main(sys.argv[1]))
"""


def test_a_failed_write_is_cut_back_so_the_retried_page_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                         text=True, env=child_env(), cwd=str(ROOT), timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("failed: write to ")
    assert "File too large" in lines[0]
    assert lines[1:] == ["healthy: False", "healthy: True"]
    assert "cut" in out.stderr  # the sink says what it removed
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    ids = [orjson.loads(line)["id"] for line in raw.splitlines()]  # every line parses
    assert ids == [f"id-{i}" for i in range(20)]  # each event once, in order
