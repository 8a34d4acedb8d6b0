"""Counter and histogram series counted in plain Python, handed to Prometheus at a scrape.

Every container check updates a handful of series (the scheduler's syncStatus calls and
tokens, the client's request count and duration, the budget's slots and wait): at 10,000
containers a pass that is ~50,000 ``inc``/``observe`` calls, each taking prometheus_client's
lock and checking its input (~1.5-1.75 µs). A tally keeps a series' totals in plain floats
(an addition, and a bisection for a histogram's bucket), and ``flush`` writes them into the
Prometheus series when the registry is read (``MetricsBase`` runs every tally's ``flush`` at
the start of each collection, so a scrape, ``get_sample_value`` and ``render`` all see the
totals).

The exposition does not change: the same series (created, with their ``_created`` time, when
the tally is), the same values (a tally is its series' only writer, so its totals are *set*,
summed from zero in the order the values came, as ``inc`` and ``observe`` would have summed
them). Only for series whose label values are bounded (they are never removed).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Histogram


class CounterTally:
    """One counter series: add to ``value`` (never a negative amount), read at a scrape."""

    __slots__ = ("_child", "value")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount if amount > 0 else 0.0

    def flush(self) -> None:
        self._child._value.set(self.value)


class HistogramTally:
    """One histogram series: ``observe`` counts a value in its bucket and the sum."""

    __slots__ = ("_bounds", "_child", "counts", "sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        # The series' own bounds (ending with +Inf): a value goes in the first bucket whose
        # bound is >= it, as ``Histogram.observe`` puts it (the exposition accumulates them).
        self._bounds = tuple(child._upper_bounds)
        self.counts = [0.0] * len(self._bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count ``amount`` (a negative one, or NaN, counts as 0)."""
        if not amount > 0:
            amount = 0.0
        self.sum += amount
        self.counts[bisect_left(self._bounds, amount)] += 1.0

    def flush(self) -> None:
        child = self._child
        child._sum.set(self.sum)
        for bucket, count in zip(child._buckets, self.counts, strict=True):
            bucket.set(count)


Tally = CounterTally | HistogramTally
