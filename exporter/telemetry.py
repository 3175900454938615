"""Thread-safe counters (and a few gauges) behind the exporter's self-metrics (API requests, errors, cache, rows)."""

from __future__ import annotations

import threading
from collections import defaultdict

from exporter.metrics import CATALOGUE, Kind


class Telemetry:
    """Counters keyed by metric name and label values; written by the refresher, read by scrapes.

    Series are declared (set to 0) up front for every configured source, so they exist from the
    first scrape and ``rate()``/``increase()`` see the first increment.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)

    def declare(self, metric: str, labels: tuple[str, ...]) -> None:
        """Create the series at 0 unless it exists."""
        self._check(metric, labels)
        with self._lock:
            self._values[metric].setdefault(labels, 0.0)

    def inc(self, metric: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to a counter series."""
        self._check(metric, labels)
        if amount < 0:
            raise ValueError("counters only go up")
        with self._lock:
            series = self._values[metric]
            series[labels] = series.get(labels, 0.0) + amount

    def set_gauge(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        """Set a gauge series kept here (not derived from the snapshot)."""
        spec = CATALOGUE[metric]
        if spec.kind is not Kind.GAUGE or len(labels) != len(spec.labels):
            raise ValueError(f"{metric}: not a gauge with labels {spec.labels}")
        with self._lock:
            self._values[metric][labels] = value

    def values(self, metric: str) -> dict[tuple[str, ...], float]:
        """A copy of every series of ``metric``."""
        with self._lock:
            return dict(self._values.get(metric, {}))

    def value(self, metric: str, labels: tuple[str, ...]) -> float:
        with self._lock:
            return self._values.get(metric, {}).get(labels, 0.0)

    @staticmethod
    def _check(metric: str, labels: tuple[str, ...]) -> None:
        spec = CATALOGUE[metric]
        if spec.kind is not Kind.COUNTER or len(labels) != len(spec.labels):
            raise ValueError(f"{metric}: not a counter with labels {spec.labels}")
