"""The in-memory filter of a resync's listed ids (notifier.state.listed_filter) and the restart
check that relies on it: never a listed id reported unlisted, and the store's answer exact
even when the filter's "maybe" is wrong."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from notifier.state import listed_filter
from notifier.state.listed_filter import ListedFilter
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_keys import Staging

SUB, CONT = "project-a", "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def test_every_added_id_may_be_listed_and_few_others_may() -> None:
    added = [str(uuid.uuid4()) for _ in range(50_000)]
    others = [str(uuid.uuid4()) for _ in range(50_000)]
    f = ListedFilter(expected=10_000)  # outgrown five times over: more layers
    for start in range(0, len(added), 1_000):
        f.add_all(added[start:start + 1_000])
    assert len(f) == len(added)
    assert f.maybe_listed(added) == added
    assert f.maybe_listed([]) == []
    false_positives = len(f.maybe_listed(others))
    assert false_positives < len(others) * 0.1  # 1.5-3% a layer by design


def test_any_string_is_an_id() -> None:
    f = ListedFilter()
    odd = ["", "not-a-uuid", "é" * 40, "0F8A3C52-6D1E-4B7A-9C2E-5A1B3D4E6F70"]
    f.add_all(odd)
    assert f.maybe_listed([*odd, "x"])[:4] == odd


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def test_the_restart_check_stays_exact_when_the_filter_says_maybe_for_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One bit per id: nearly every id not listed is a "maybe", so the store answers them all.
    monkeypatch.setattr(listed_filter, "_BITS_PER_ID", 1)
    monkeypatch.setattr(listed_filter, "_MIN_CAPACITY", 1)
    monkeypatch.setattr(Staging, "FLUSH_IDS", 100)
    listed, held, unlisted = _ids(120), _ids(30), _ids(200)
    async with SqliteStateStore(tmp_path / "state.db") as store:
        await store.begin_resync(SUB, CONT)
        for n, start in enumerate(range(0, 120, 40)):  # written in bulk along the way
            await store.commit_page(SUB, CONT, next_token=None, resync_cursor=f"c{n}",
                                    in_resync=True, add_ids=(), remove_ids=(),
                                    seen_ids=listed[start:start + 40], changed=True, now=1.0)
        await store.commit_page(SUB, CONT, next_token=None, resync_cursor="c9", in_resync=True,
                                add_ids=(), remove_ids=(), seen_ids=held, changed=True, now=1.0)
        assert store._ids.staging.get(1) == {uuid.UUID(r).bytes for r in held}
        asked = [*unlisted[:100], *listed[::7], *held[::3], *unlisted[100:]]
        expected = {*listed[::7], *held[::3]}
        assert await store.resync_seen_subset(SUB, CONT, asked) == expected
        # A new snapshot forgets them all, the filter too.
        await store.begin_resync(SUB, CONT)
        assert await store.resync_seen_subset(SUB, CONT, asked) == set()


async def test_a_resync_resumed_by_another_process_asks_the_store_about_every_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Staging, "FLUSH_IDS", 10)
    listed = _ids(30)
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await store.begin_resync(SUB, CONT)
        await store.commit_page(SUB, CONT, next_token=None, resync_cursor="c1", in_resync=True,
                                add_ids=(), remove_ids=(), seen_ids=listed, changed=True,
                                now=1.0)
    async with SqliteStateStore(path) as store:  # no filter: the written ids answer
        assert store._ids.staging.listed(1) is None
        assert await store.resync_seen_subset(SUB, CONT, [listed[3], "other"]) == {listed[3]}
