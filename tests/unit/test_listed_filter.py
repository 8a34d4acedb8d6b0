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


async def test_until_its_first_write_a_resync_answers_from_its_held_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before a resync writes its staging set, its held ids are all it listed: the restart
    check asks SQLite nothing. A bootstrap (no id known when it began) knows only ids it
    listed, so the known-set lookup asks nothing either, until an id is made known that it
    did not list, or the staging set is written. Every answer stays exact."""
    monkeypatch.setattr(Staging, "FLUSH_IDS", 350)
    listed, others = _ids(400), _ids(50)
    statements: list[str] = []

    async def asked(store: SqliteStateStore, lookup: str, ids: list[str]) -> tuple[set[str], int]:
        statements.clear()
        found = await getattr(store, lookup)(SUB, CONT, ids)
        return found, len(statements)

    async def commit(store: SqliteStateStore, n: int, add: list[str], seen: list[str]) -> None:
        await store.commit_page(SUB, CONT, next_token=None, resync_cursor=f"c{n}",
                                in_resync=True, add_ids=add, remove_ids=(), seen_ids=seen,
                                changed=True, now=1.0)

    async with SqliteStateStore(tmp_path / "state.db") as store:
        await store._call("trace", lambda conn: conn.set_trace_callback(statements.append))
        await store.begin_resync(SUB, CONT)
        for n, start in enumerate(range(0, 300, 100)):
            await commit(store, n, listed[start:start + 100], listed[start:start + 100])
        mixed = [*others, *listed[::7], *listed[300:]]
        assert await asked(store, "known_subset", mixed) == ({*listed[:300:7]}, 0)
        assert await asked(store, "resync_seen_subset", mixed) == ({*listed[:300:7]}, 0)
        statements.clear()  # every known id is held: none can be missing
        assert [b async for b in store.iter_resync_missing(SUB, CONT, 100)] == []
        assert statements == []
        # Made known without being listed (no drain does it): the known set is asked again.
        await commit(store, 5, others[:2], listed[300:310])
        found, queries = await asked(store, "known_subset", mixed)
        assert found == {*others[:2], *listed[:300:7]}
        assert queries > 0
        missing = [k.rel_id async for b in store.iter_resync_missing(SUB, CONT, 100) for k in b]
        assert sorted(missing) == sorted(others[:2])
        assert await asked(store, "resync_seen_subset", mixed) == (
            {*listed[:300:7], *listed[300:310]}, 0)
        # The staging set reaches FLUSH_IDS and is written: SQLite answers from here on.
        await commit(store, 6, listed[310:], listed[310:])
        found, queries = await asked(store, "resync_seen_subset", mixed)
        assert found == {*listed[::7], *listed[300:]}
        assert queries > 0
        # A resync that begins knowing ids asks the known set about every page.
        await store.begin_resync(SUB, CONT)
        await commit(store, 7, [], listed[:10])
        found, queries = await asked(store, "known_subset", [listed[0], others[9]])
        assert found == {listed[0]}
        assert queries > 0
        assert await asked(store, "resync_seen_subset", [listed[0], listed[11]]) == (
            {listed[0]}, 0)


async def test_a_bootstrap_page_that_deletes_a_listed_id_ends_the_known_set_answered_from_held(
    tmp_path: Path,
) -> None:
    """A deleted id stays held (it was listed) but is no longer known: a later page listing its
    deletion again must not find it known (that was a second deleted event, without the
    entities the store no longer has)."""
    listed = _ids(20)
    async with SqliteStateStore(tmp_path / "state.db") as store:
        await store.begin_resync(SUB, CONT)
        await store.commit_page(SUB, CONT, next_token=None, resync_cursor="c0", in_resync=True,
                                add_ids=listed, remove_ids=(), seen_ids=listed, changed=True,
                                now=1.0)
        assert await store.known_subset(SUB, CONT, listed[:2]) == set(listed[:2])
        await store.commit_page(SUB, CONT, next_token=None, resync_cursor="c1", in_resync=True,
                                add_ids=(), remove_ids=listed[:1], seen_ids=(), changed=True,
                                now=2.0)
        assert await store.known_subset(SUB, CONT, listed[:2]) == {listed[1]}
        assert await store.resync_seen_subset(SUB, CONT, listed[:2]) == set(listed[:2])
        missing = [k.rel_id async for b in store.iter_resync_missing(SUB, CONT, 100) for k in b]
        assert missing == []
