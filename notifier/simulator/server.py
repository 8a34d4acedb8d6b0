"""The simulator as an async context manager: an aiohttp server on a (free) local port."""

from __future__ import annotations

import logging
from types import TracebackType

from aiohttp import web

from notifier.simulator.config import Knobs, SimulatorConfig
from notifier.simulator.control import ControlApi
from notifier.simulator.generator import ChangeGenerator
from notifier.simulator.http_api import RelationshipApi
from notifier.simulator.http_hubs import HubApi
from notifier.simulator.http_oauth import OAuthApi
from notifier.simulator.hubs import HubCatalog
from notifier.simulator.state import SimState

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024


def build_app(state: SimState, hubs: HubCatalog | None = None) -> web.Application:
    """The aiohttp application serving the API, the hub and project listings, the token
    endpoint and ``/_sim``."""
    api, control = RelationshipApi(state), ControlApi(state)
    app = web.Application(middlewares=[api.middleware, control.middleware],
                          client_max_size=MAX_BODY)
    app.add_routes(api.routes())
    app.add_routes(OAuthApi(state).routes())
    app.add_routes(control.routes())
    app.add_routes(HubApi(hubs or HubCatalog(state)).routes())
    return app


class Simulator:
    """A running local Relationship Service v2.

    ``async with Simulator(SimulatorConfig(...)) as sim:`` starts it on ``config.host`` and
    ``config.port`` (0 = a free port); ``sim.url`` is the base URL and ``sim.state`` the
    in-memory model with its knobs.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.state = SimState(self.config)
        self.generator = ChangeGenerator(self.state)
        self.hubs = HubCatalog(self.state)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("simulator is not running")
        return f"http://{self.config.host}:{self.port}"

    @property
    def knobs(self) -> Knobs:
        return self.state.knobs

    @property
    def containers(self) -> list[str]:
        return list(self.state.containers)

    async def start(self) -> None:
        runner = web.AppRunner(build_app(self.state, self.hubs), access_log=None,
                               handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.generator.start()
        log.info("relationship simulator listening on %s", self.url)

    async def stop(self) -> None:
        await self.generator.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
