"""Render a Snapshot as metric families: a pure function of memory, no I/O.

Two collectors, both reading state the refresher owns:

``ImageCollector`` emits the per-image families (rendered once per snapshot swap)::

    # HELP imagesec_image_scan_status Normalised scan status of the image; exactly one status is 1 (cached, refreshed every 300s).
    # TYPE imagesec_image_scan_status gauge
    imagesec_image_scan_status{provider="aliyun",...,image_id="12f8...",status="succeeded"} 1.0

``HealthCollector`` emits the self-metrics (rendered on every scrape; they are small)::

    # HELP imagesec_up 1 if the last refresh of the source succeeded, else 0
    # TYPE imagesec_up gauge
    imagesec_up{account="prod",provider="aliyun",region="cn-shanghai",source="sas_images"} 1.0
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.metrics import CATALOGUE, IMAGE_METRICS, SELF_METRICS, Kind
from exporter.model import Snapshot, SourceState
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)


def _interval_help(help_: str, intervals: set[float]) -> str:
    if not intervals:
        return f"{help_} (cached)."
    low, high = min(intervals), max(intervals)
    if low == high:
        return f"{help_} (cached, refreshed every {low:g}s)."
    return f"{help_} (cached, refreshed every {low:g}s to {high:g}s)."


class ImageCollector(Collector):
    """Per-image families from every source's last good data; duplicate label sets dropped."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        series: dict[str, dict[tuple[str, ...], float]] = {m.name: {} for m in IMAGE_METRICS}
        intervals: dict[str, set[float]] = {m.name: set() for m in IMAGE_METRICS}
        duplicates = 0
        for key in sorted(snapshot.sources):
            state = snapshot.sources[key]
            if state.data is None:
                continue
            for sample in state.data.samples:
                labels = sample.image.labels() + sample.extra
                target = series[sample.metric]
                if labels in target:
                    duplicates += 1
                    continue
                target[labels] = sample.value
                intervals[sample.metric].add(state.interval)
        if duplicates:
            log.debug("dropped duplicate series count=%d", duplicates)
        for spec in IMAGE_METRICS:
            values = series[spec.name]
            if not values:
                continue
            family = GaugeMetricFamily(
                spec.name, _interval_help(spec.help, intervals[spec.name]), labels=spec.labels
            )
            for labels, value in values.items():
                family.add_metric(labels, value)
            yield family


class HealthCollector(Collector):
    """Self-metrics: per-source health from the snapshot, counters from telemetry, build info."""

    def __init__(self, snapshot: Callable[[], Snapshot], telemetry: Telemetry) -> None:
        self._snapshot = snapshot
        self._telemetry = telemetry

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        states = [snapshot.sources[k] for k in sorted(snapshot.sources)]
        gauges: dict[str, Callable[[SourceState], float]] = {
            "imagesec_up": lambda s: 1.0 if s.up else 0.0,
            "imagesec_last_refresh_success_timestamp_seconds": lambda s: s.last_success or 0.0,
            "imagesec_refresh_duration_seconds": lambda s: s.duration or 0.0,
            "imagesec_refresh_interval_seconds": lambda s: s.interval,
            "imagesec_source_images": lambda s: float(len(s.data.images)) if s.data else 0.0,
        }
        for name, value in gauges.items():
            spec = CATALOGUE[name]
            family = GaugeMetricFamily(name, spec.help, labels=spec.labels)
            for state in states:
                family.add_metric(state.key.labels(), value(state))
            yield family
        for spec in SELF_METRICS:
            if spec.kind is not Kind.COUNTER:
                continue
            counter = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, total in sorted(self._telemetry.values(spec.name).items()):
                counter.add_metric(labels, total)
            yield counter
        build = GaugeMetricFamily(
            "imagesec_build_info",
            CATALOGUE["imagesec_build_info"].help,
            labels=("version", "python_version"),
        )
        build.add_metric((__version__, platform.python_version()), 1.0)
        yield build
