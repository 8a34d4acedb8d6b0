"""StreamSpec splits its sinks into direct and outbox ones; specs built in a row from one
shared sinks tuple share the parts (100,000 streams at start-up)."""

from __future__ import annotations

from typing import Any

from notifier.sinks.memory import MemorySink
from notifier.stream import StreamSpec

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


class _Outbox(MemorySink):
    """A sink of the outbox kind (it has notify and admit)."""

    def notify(self) -> None: ...

    async def admit(self, count: int) -> None: ...


def _spec(sinks: tuple[Any, ...], sub: str = "s") -> StreamSpec:
    return StreamSpec(subscription=sub, container_id=C, credentials=("c",), sinks=sinks)


def test_specs_of_one_sinks_tuple_share_their_split_and_others_get_their_own() -> None:
    direct, outbox = MemorySink(), _Outbox()
    mixed = (outbox, direct)
    a, b = _spec(mixed, "a"), _spec(mixed, "b")
    assert a.direct == (direct,)
    assert a.outbox == (outbox,)
    assert b.direct is a.direct
    assert b.outbox is a.outbox
    # An equal but distinct tuple, then another sinks tuple: each split on its own.
    only_direct = _spec((direct,))
    assert only_direct.direct == (direct,)
    assert only_direct.outbox == ()
    again = _spec((outbox, direct))
    assert again.direct == (direct,)
    assert again.outbox == (outbox,)
    assert _spec(mixed).outbox == (outbox,)
    assert _spec(()).direct == ()
