"""Provider-neutral records: image identity, samples, per-source state and the Snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.metrics import CATALOGUE


@dataclass(frozen=True, slots=True, order=True)
class SourceKey:
    """One source: a collector run against one (account, region)."""

    provider: str
    account: str
    region: str
    source: str

    def labels(self) -> tuple[str, str, str, str]:
        return (self.provider, self.account, self.region, self.source)

    def __str__(self) -> str:
        return f"{self.provider}/{self.account}/{self.region}/{self.source}"


@dataclass(frozen=True, slots=True, order=True)
class ImageKey:
    """Identity labels of one image, in ``metrics.IMAGE_LABELS`` order."""

    provider: str
    account: str
    region: str
    repo_namespace: str
    repo: str
    tag: str
    image_id: str

    def labels(self) -> tuple[str, ...]:
        return (
            self.provider,
            self.account,
            self.region,
            self.repo_namespace,
            self.repo,
            self.tag,
            self.image_id,
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One per-image value: metric name, image, the metric's extra label values, value."""

    metric: str
    image: ImageKey
    value: float
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        spec = CATALOGUE[self.metric]  # KeyError: a metric outside the catalogue is a bug
        if len(spec.labels) != len(self.image.labels()) + len(self.extra):
            raise ValueError(
                f"{self.metric}: expected labels {spec.labels}, got extra {self.extra}"
            )


@dataclass(frozen=True, slots=True)
class ImageRef:
    """What dependent collectors need to know about an image the inventory listed.

    ``native_id`` is the vendor's key for per-image calls (Sas ``Uuid``, TCSS ``ImageID``);
    ``scan_marker`` changes when the vendor's result for the image can have changed (a finished
    scan's time, its counts), not on every stage of a running scan, and keys the per-image
    caches. ``stage`` is the scan's current stage as the inventory shows it (Sas ``ScaStatus``,
    TCSS ``ScanStatus``): caches of results that follow a running scan (TCSS details) look
    again when it moves, at most once per floor interval.
    """

    key: ImageKey
    native_id: str
    scan_marker: str
    vulnerabilities: int | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class SourceData:
    """The result of one successful refresh of a source.

    ``completeness`` is the share of the pass's images it covers (below 1 while a per-image
    pass is still under way: published progress, or a pass that resumes in the next attempt).
    ``skipped`` counts the images the inventory left out, by reason (config filters and
    bounds: ``imagesec_images_skipped``).
    """

    samples: tuple[Sample, ...] = ()
    images: tuple[ImageRef, ...] = ()
    completeness: float = 1.0
    skipped: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the exporter knows about one source: its last good data and its health."""

    key: SourceKey
    interval: float
    data: SourceData | None = None
    up: bool = False
    attempted: bool = False
    last_success: float | None = None
    last_attempt: float | None = None
    duration: float | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Immutable view of every source, swapped atomically after each refresh."""

    sources: Mapping[SourceKey, SourceState] = field(default_factory=dict)

    def ready(self) -> bool:
        """True once every source has finished at least one refresh attempt."""
        return all(s.attempted for s in self.sources.values())


def stateset(metric: str, image: ImageKey, vocabulary: tuple[str, ...], state: str) -> list[Sample]:
    """One sample per state of ``vocabulary``: 1 for ``state``, 0 for the others."""
    return [Sample(metric, image, 1.0 if s == state else 0.0, (s,)) for s in vocabulary]


def optional(metric: str, image: ImageKey, value: float | None, *extra: str) -> list[Sample]:
    """A sample if the vendor gave a value; nothing (not a made-up 0) if it did not."""
    return [] if value is None else [Sample(metric, image, float(value), extra)]
