"""Upstream-client hooks bound to one credential (``Metrics.client_observer``).

The client reports every request and every budget slot it takes, so at 10,000 containers per
pass these run 20,000 times: each keeps the series it updates (one pair per endpoint and
outcome, per priority) instead of looking up their labels every time, as tallies
(notifier.metrics_tally: plain additions, handed to Prometheus at each scrape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.metrics_tally import CounterTally, HistogramTally

if TYPE_CHECKING:
    from notifier.metrics import Metrics


class CredentialObserver:
    """Upstream-client hooks bound to one credential (the client does not pass it)."""

    def __init__(self, metrics: Metrics, credential: str) -> None:
        self._metrics = metrics
        self.credential = credential
        # Every container check updates these: their series are looked up once.
        self._requests: dict[tuple[str, str], tuple[CounterTally, HistogramTally]] = {}
        self._budget: dict[str, tuple[CounterTally, HistogramTally]] = {}

    def on_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        series = self._requests.get((endpoint, outcome))
        if series is None:
            series = self._requests[endpoint, outcome] = self._metrics.upstream_series(
                self.credential, endpoint, outcome)
        series[0].value += 1.0
        series[1].observe(seconds)

    def on_rate_limited(self, retry_after_seconds: float) -> None:
        self._metrics.rate_limited(self.credential, retry_after_seconds)

    def on_budget(self, priority: str, waited_seconds: float) -> None:
        series = self._budget.get(priority)
        if series is None:
            series = self._budget[priority] = self._metrics.budget_series(self.credential,
                                                                          priority)
        series[0].value += 1.0
        series[1].observe(waited_seconds)
