"""Starting the configured sinks and closing them within what is left of a shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from notifier.config import Config
from notifier.errors import NotifierError, SinkError
from notifier.metrics import Metrics
from notifier.sinks.base import Sink
from notifier.sinks.factory import build_sink
from notifier.state.base import StateStore

log = logging.getLogger("notifier.app")

SINK_CLOSE_MIN = 0.5  # even a shutdown that overran gives each sink this long to close


@runtime_checkable
class _ClosesWithin(Protocol):
    """A sink that can close itself within a given time (the Kafka sink)."""

    async def close_within(self, within: float) -> None: ...


async def start_sinks(config: Config, store: StateStore, metrics: Metrics,
                      overrides: Mapping[str, Sink], sinks: dict[str, Sink]) -> None:
    """Start every configured sink (or its override) into ``sinks``, in the config's order;
    the caller closes ``sinks`` also after a failure (those started so far)."""
    cluster = config.cluster is not None
    for sc in config.sinks:
        sink = overrides.get(sc.name) or build_sink(sc, store, metrics, transactional=cluster)
        try:
            await sink.__aenter__()
        except SinkError as exc:
            raise NotifierError(f"sink {sc.name!r} cannot start: {exc}") from exc
        sinks[sc.name] = sink


async def close_sinks(sinks: Mapping[str, Sink], deadline: float) -> None:
    """Close every sink at once, by ``deadline`` (loop time: what is left of the shutdown; a
    Kafka producer facing a dead broker would otherwise take minutes); a sink that overruns
    is abandoned."""
    loop = asyncio.get_running_loop()
    within = max(SINK_CLOSE_MIN, deadline - loop.time())

    async def close(name: str, sink: Sink) -> None:
        try:
            if isinstance(sink, _ClosesWithin):  # bounds itself, closing what it holds
                await asyncio.wait_for(sink.close_within(within), within + 2)
            else:
                await asyncio.wait_for(sink.__aexit__(None, None, None), within)
        except TimeoutError:
            log.warning("sink %s did not close within %.1fs of the shutdown's time left; "
                        "abandoned", name, within, extra={"sink": name})
        except Exception:
            log.exception("sink %s failed to close", name, extra={"sink": name})

    await asyncio.gather(*(close(n, s) for n, s in reversed(list(sinks.items()))))
