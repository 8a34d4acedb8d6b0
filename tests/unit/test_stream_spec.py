"""StreamSpec splits its sinks into direct and outbox ones; the specs Assembly builds from one
shared sinks tuple share the parts (100,000 streams at start-up)."""

from __future__ import annotations

from typing import Any

from notifier.assembly import Assembly
from notifier.config import config_from_data
from notifier.metrics import Metrics
from notifier.sinks.memory import MemorySink
from notifier.store_guard import StoreGuard
from notifier.stream import StreamSpec

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


class _Outbox(MemorySink):
    """A sink of the outbox kind (it has notify and admit)."""

    def notify(self) -> None: ...

    async def admit(self, count: int) -> None: ...


def _spec(sinks: tuple[Any, ...], sub: str = "s") -> StreamSpec:
    return StreamSpec(subscription=sub, container_id=C, credentials=("c",), sinks=sinks)


def test_a_spec_splits_its_sinks_or_takes_the_split_it_is_given() -> None:
    direct, outbox = MemorySink(), _Outbox()
    mixed = (outbox, direct)
    a = _spec(mixed)
    assert a.direct == (direct,)
    assert a.outbox == (outbox,)
    assert _spec((direct,)).outbox == ()
    assert _spec(()).direct == ()
    given = StreamSpec(subscription="b", container_id=C, credentials=("c",), sinks=mixed,
                       split=(a.direct, a.outbox))
    assert given.direct is a.direct
    assert given.outbox is a.outbox
    assert given == _spec(mixed, "b")  # the split is no field: equal specs stay equal


def test_assembly_specs_of_one_sinks_list_share_their_split_and_others_get_their_own(
) -> None:
    subs: list[dict[str, object]] = [
        {"name": f"s{i}", "credential": "main", "container_id": f"{C[:-2]}{i:02d}",
         "sinks": sinks}
        for i, sinks in enumerate((["hook", "out"], ["hook", "out"], ["out"], ["hook", "out"]))]
    cfg = config_from_data({
        "credentials": [{"name": "main", "access_token": "t"}],
        "subscriptions": subs,
        "sinks": [{"name": "out", "type": "stdout"},
                  {"name": "hook", "type": "webhook", "url": "https://hooks.example/h",
                   "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}],
    })
    metrics = Metrics()
    assembly = Assembly(cfg, metrics=metrics, guard=StoreGuard(metrics.store))
    out, hook = MemorySink(), _Outbox()
    [specs] = assembly.specs({"out": out, "hook": hook}).values()
    a, b, only_out, d = sorted(specs, key=lambda s: s.subscription)
    assert (a.direct, a.outbox) == ((out,), (hook,))
    for same in (b, d):
        assert same.sinks is a.sinks
        assert same.direct is a.direct
        assert same.outbox is a.outbox
    assert (only_out.direct, only_out.outbox) == ((out,), ())
