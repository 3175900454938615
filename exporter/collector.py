"""Render a Snapshot as metric families: a pure function of memory, no I/O.

Two collectors, both reading state the refresher owns:

``ImageCollector`` emits the per-image families (rendered once per snapshot swap)::

    # HELP imagesec_image_scan_status Normalised scan status of the image; exactly one status is 1 (cached, refreshed every 300s).
    # TYPE imagesec_image_scan_status gauge
    imagesec_image_scan_status{provider="aliyun",...,image_id="12f8...",status="succeeded"} 1.0

``HealthCollector`` emits the self-metrics: per-source health (rendered once per snapshot) and
telemetry (rendered on every scrape)::

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
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.metrics import (
    CATALOGUE,
    IMAGE_LABELS,
    IMAGE_METRICS,
    LISTING_SOURCES,
    SELF_METRICS,
    SKIP_REASONS,
    Kind,
)
from exporter.model import ImageKey, Snapshot, SourceState
from exporter.normalise import clean_stats
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

# Gauges kept in Telemetry rather than derived from the snapshot.
TELEMETRY_GAUGES = ("imagesec_credential_expiry_timestamp_seconds",)


def interval_help(help_: str, intervals: set[float]) -> str:
    if not intervals:
        return f"{help_} (cached)."
    low, high = min(intervals), max(intervals)
    if low == high:
        return f"{help_} (cached, refreshed every {low:g}s)."
    return f"{help_} (cached, refreshed every {low:g}s to {high:g}s)."


def _gather(
    snapshot: Snapshot,
) -> tuple[dict[str, dict[tuple[ImageKey, tuple[str, ...]], float]], dict[str, set[float]]]:
    """Per metric, the series of every source's last good data. An image's series of one family
    come from the first source (in source order) that has that family for the image; a later
    source's series of that family for the same image are dropped as duplicates."""
    series: dict[str, dict[tuple[ImageKey, tuple[str, ...]], float]] = {
        m.name: {} for m in IMAGE_METRICS
    }
    intervals: dict[str, set[float]] = {m.name: set() for m in IMAGE_METRICS}
    duplicates = 0
    for key in sorted(snapshot.sources):
        state = snapshot.sources[key]
        if state.data is None:
            continue
        for name, family in state.data.families.items():
            target = series[name]
            owned = {image for image, _ in target}
            for i, e, value in zip(family.image, family.extra, family.values, strict=True):
                image = state.data.keys[i]
                if image in owned:
                    duplicates += 1
                    continue
                target[(image, family.extras[e])] = value
                intervals[name].add(state.interval)
    if duplicates:
        log.debug("dropped duplicate series count=%d", duplicates)
    return series, intervals


class ImageCollector(Collector):
    """Per-image families from every source's last good data; duplicate label sets dropped."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        series, intervals = _gather(self._snapshot())
        for spec in IMAGE_METRICS:
            values = series[spec.name]
            if not values:
                continue
            family = GaugeMetricFamily(
                spec.name, interval_help(spec.help, intervals[spec.name]), labels=spec.labels
            )
            for (image, extra), value in values.items():
                family.add_metric(image.labels() + extra, value)
            yield family


def _escape(value: str) -> str:
    # Text format 0.0.4: label values escape backslash, double quote and line feed.
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_images(snapshot: Snapshot) -> bytes:
    """The per-image families of the whole snapshot in the text format, as ``ImageCollector`` +
    ``generate_latest`` would write them, several times faster: each image's identity labels
    are escaped once, not once per series (tests/test_collector.py checks the two agree sample
    for sample). The straightforward render: the exporter serves ``ExpositionStore``'s
    per-source chunks, which tests/test_exposition.py checks against this."""
    series, intervals = _gather(snapshot)
    prefixes: dict[ImageKey, str] = {}
    chunks: list[bytes] = []  # one per family: bounds the transient list of small strings
    for spec in IMAGE_METRICS:
        values = series[spec.name]
        if not values:
            continue
        help_ = interval_help(spec.help, intervals[spec.name])
        help_ = help_.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {spec.name} {help_}\n# TYPE {spec.name} gauge\n"]
        extra_names = spec.labels[len(IMAGE_LABELS) :]
        for (image, extra), value in values.items():
            prefix = prefixes.get(image)
            if prefix is None:
                prefix = ",".join(
                    f'{name}="{_escape(v)}"'
                    for name, v in zip(IMAGE_LABELS, image.labels(), strict=True)
                )
                prefixes[image] = prefix
            labels = prefix + "".join(
                f',{name}="{_escape(v)}"' for name, v in zip(extra_names, extra, strict=True)
            )
            lines.append(f"{spec.name}{{{labels}}} {floatToGoString(value)}\n")  # type: ignore[no-untyped-call]
        chunks.append("".join(lines).encode("utf-8"))
    return b"".join(chunks)


def _skipped(states: list[SourceState]) -> Metric:
    """``imagesec_images_skipped``: every reason of every listing source, 0 when none."""
    spec = CATALOGUE["imagesec_images_skipped"]
    family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    for state in states:
        if state.key.source not in LISTING_SOURCES:
            continue
        skipped = dict(state.data.skipped) if state.data else {}
        for reason in SKIP_REASONS:
            family.add_metric((*state.key.labels(), reason), float(skipped.get(reason, 0)))
    return family


class HealthCollector(Collector):
    """Self-metrics: per-source health from the snapshot, counters from telemetry, build info."""

    def __init__(self, snapshot: Callable[[], Snapshot], telemetry: Telemetry) -> None:
        self._snapshot = snapshot
        self._telemetry = telemetry

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.collect_sources(self._snapshot())
        yield from self.collect_live()

    @staticmethod
    def collect_sources(snapshot: Snapshot) -> Iterator[Metric]:
        """The per-source families: a function of the snapshot alone (rendered once per swap
        by the exposition store, not per scrape: they grow with accounts x regions)."""
        states = [snapshot.sources[k] for k in sorted(snapshot.sources)]
        gauges: dict[str, Callable[[SourceState], float]] = {
            "imagesec_up": lambda s: 1.0 if s.up else 0.0,
            "imagesec_last_refresh_success_timestamp_seconds": lambda s: s.last_success or 0.0,
            "imagesec_refresh_duration_seconds": lambda s: s.duration or 0.0,
            "imagesec_refresh_interval_seconds": lambda s: s.interval,
            "imagesec_source_images": lambda s: float(len(s.data.images)) if s.data else 0.0,
            "imagesec_source_pass_completeness_ratio": lambda s: (
                s.data.completeness if s.data else 0.0
            ),
            "imagesec_source_truncated": lambda s: 1.0 if s.data and s.data.truncated else 0.0,
            "imagesec_source_expired": lambda s: 1.0 if s.expired else 0.0,
        }
        for name, value in gauges.items():
            spec = CATALOGUE[name]
            family = GaugeMetricFamily(name, spec.help, labels=spec.labels)
            for state in states:
                family.add_metric(state.key.labels(), value(state))
            yield family
        yield _skipped(states)

    def collect_live(self) -> Iterator[Metric]:
        """The families that move between snapshots: telemetry counters and gauges, build."""
        for spec in SELF_METRICS:
            if spec.kind is not Kind.COUNTER:
                continue
            counter = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            if spec.name == "imagesec_sanitised_strings":
                for reason, count in clean_stats.counts().items():
                    counter.add_metric((reason,), float(count))
            for labels, total in sorted(self._telemetry.values(spec.name).items()):
                counter.add_metric(labels, total)
            yield counter
        for name in TELEMETRY_GAUGES:
            spec = CATALOGUE[name]
            gauge = GaugeMetricFamily(name, spec.help, labels=spec.labels)
            for labels, current in sorted(self._telemetry.values(name).items()):
                gauge.add_metric(labels, current)
            yield gauge
        build = GaugeMetricFamily(
            "imagesec_build_info",
            CATALOGUE["imagesec_build_info"].help,
            labels=("version", "python_version"),
        )
        build.add_metric((__version__, platform.python_version()), 1.0)
        yield build
