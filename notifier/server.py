"""The HTTP side of observability: /metrics, /healthz and /readyz, served in the app's loop.

Readiness means "this process can do its job": configuration loaded, state store open and not
failing (notifier.store_guard), sinks set up, event loop running on time, not shutting down.
It never follows upstream, credential or sink health (a wrong container id, a dead refresh
token or a receiver that is down): those are reported by metrics and alerts, so that a rollout
(``helm install --wait``) is not held hostage by a system outside the pod, and a pod is not
taken out of its Service for something a restart cannot fix. ``HealthState`` holds the named
conditions the app sets as it starts; ``MetricsServer`` serves the scrape and both probes, and
runs a watchdog that measures how late the event loop runs its timers: /healthz and /readyz
answer 503 while that lag exceeds ``max_loop_lag``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import orjson
from aiohttp import web

from notifier.config.types import split_host_port
from notifier.metrics import Metrics

log = logging.getLogger(__name__)

CONFIG = "config"
STORE = "store"
SINKS = "sinks"
EVENT_LOOP = "event_loop"
SHUTDOWN = "shutdown"
DEFAULT_CONDITIONS = (CONFIG, STORE, SINKS)


@dataclass(slots=True)
class Condition:
    ok: bool
    detail: str = ""


class HealthState:
    """Named readiness conditions, all of which must hold; plus the loop watchdog's reading."""

    def __init__(self, required: Iterable[str] = DEFAULT_CONDITIONS) -> None:
        """Start with every ``required`` condition false ("pending").

        Only conditions of this process belong here; upstream and sink health do not.
        """
        self._conditions: dict[str, Condition] = {
            name: Condition(False, "pending") for name in required
        }
        self._checks: dict[str, Callable[[], bool]] = {}
        self.loop_lag_seconds = 0.0
        self.last_beat: float | None = None  # time.monotonic() of the watchdog's last tick

    def set(self, component: str, ok: bool, detail: str = "") -> None:
        """Set condition ``component`` (added if new); log only when it changes."""
        before = self._conditions.get(component)
        self._conditions[component] = Condition(ok, detail)
        if before is None or before.ok != ok:
            if ok:
                log.info("readiness: %s ok", component)
            elif before is not None and before.ok:
                log.warning("readiness: %s not ok: %s", component, detail or "no detail")

    def add_check(self, component: str, check: Callable[[], bool]) -> None:
        """Evaluate ``check()`` at every readiness query (e.g. ``sink.healthy``)."""
        self._checks[component] = check

    def config_loaded(self) -> None:
        self.set(CONFIG, True)

    def store_open(self, ok: bool = True, detail: str = "") -> None:
        self.set(STORE, ok, detail)

    def sinks_started(self, ok: bool = True, detail: str = "") -> None:
        self.set(SINKS, ok, detail)

    def shutting_down(self) -> None:
        """Stop being ready so the pod leaves the Service endpoints while it drains."""
        self.set(SHUTDOWN, False, "shutting down")

    def conditions(self) -> dict[str, Condition]:
        """Every condition now, checks evaluated (a raising check counts as not ok)."""
        current = dict(self._conditions)
        for name, check in self._checks.items():
            try:
                current[name] = Condition(bool(check()))
            except Exception as exc:
                current[name] = Condition(False, f"check failed: {type(exc).__name__}")
        return current

    def not_ready(self) -> dict[str, str]:
        """The conditions that do not hold, with their details."""
        return {n: c.detail or "not ok" for n, c in self.conditions().items() if not c.ok}

    @property
    def ready(self) -> bool:
        return not self.not_ready()

    def loop_beat(self, lag_seconds: float, now: float | None = None) -> None:
        """The watchdog saw the loop run its timer ``lag_seconds`` late."""
        self.loop_lag_seconds = lag_seconds
        self.last_beat = time.monotonic() if now is None else now

    def loop_stalled(self, max_lag: float, now: float | None = None) -> bool:
        """True if the loop ran its last timer more than ``max_lag`` late, or beats stopped."""
        if self.loop_lag_seconds > max_lag:
            return True
        if self.last_beat is None:
            return False
        now = time.monotonic() if now is None else now
        return now - self.last_beat > max_lag * 2


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on ``listen``; an async context manager."""

    def __init__(
        self,
        metrics: Metrics,
        listen: str,
        health: HealthState,
        *,
        max_loop_lag: float = 5.0,
        watchdog_interval: float = 0.5,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.host, self._requested_port = split_host_port(listen)  # validated by the config
        self.max_loop_lag = max_loop_lag
        self.watchdog_interval = watchdog_interval
        self.port: int = 0  # the bound port once started (useful with port 0)
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._watchdog = asyncio.create_task(self._watch_loop(), name="loop-watchdog")
        log.info("serving /metrics /healthz /readyz on %s", self.url)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _watch_loop(self) -> None:
        """Measure how late the loop wakes from a short sleep; that lateness is its lag."""
        loop = asyncio.get_running_loop()
        stalled = False
        while True:
            started = loop.time()
            await asyncio.sleep(self.watchdog_interval)
            lag = max(0.0, loop.time() - started - self.watchdog_interval)
            self.health.loop_beat(lag)
            self.metrics.loop_lag(lag)
            if (lag > self.max_loop_lag) != stalled:
                stalled = not stalled
                if stalled:
                    log.warning("event loop stalled: a timer ran %.1f s late", lag)
                else:
                    log.info("event loop responsive again (lag %.3f s)", lag)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the loop runs; the watchdog says whether it runs on time.
        lag = self.health.loop_lag_seconds
        if self.health.loop_stalled(self.max_loop_lag):
            return _json(503, {"status": "stalled", "loop_lag_seconds": lag})
        return _json(200, {"status": "ok", "loop_lag_seconds": lag})

    async def _readyz(self, request: web.Request) -> web.Response:
        missing = self.health.not_ready()
        if self.health.loop_stalled(self.max_loop_lag):
            lag = self.health.loop_lag_seconds
            missing[EVENT_LOOP] = f"stalled (a timer ran {lag:.1f} s late)"
        if missing:
            return _json(503, {"ready": False, "not_ready": missing})
        return _json(200, {"ready": True})
