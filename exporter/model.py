"""Provider-neutral records: image identity, samples, per-source state and the Snapshot."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
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

    def log_fields(self) -> dict[str, str]:
        """The source's identity as log ``extra`` keys (exporter/logs.py)."""
        return {
            "provider": self.provider,
            "account": self.account,
            "region": self.region,
            "source": self.source,
        }

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

    def unchanged(
        self, path: tuple[str, str, str], scan_marker: str, vulnerabilities: int | None, stage: str
    ) -> bool:
        """Whether the image, listed again with this (namespace, repo, tag) ``path``, marker,
        total and stage, is still what this ref says (an inventory then reuses the ref)."""
        return (
            self.scan_marker == scan_marker
            and self.stage == stage
            and self.vulnerabilities == vulnerabilities
            and (self.key.repo_namespace, self.key.repo, self.key.tag) == path
        )


@dataclass(frozen=True, slots=True)
class Family:
    """The series of one metric family of one source, in columns (no object per series).

    Series ``i`` is image ``keys[image[i]]`` of the source, extra label values
    ``extras[extra[i]]`` and value ``values[i]``: 13-16 bytes per series plus the shared tables.
    """

    image: array[int]  # 'I': index into SourceData.keys
    extra: array[int]  # 'B', 'H' or 'I' (the narrowest for len(extras)): index into extras
    extras: tuple[tuple[str, ...], ...]
    values: array[float]  # 'd'

    def __len__(self) -> int:
        return len(self.values)


class _FamilyBuilder:
    """Columns of one family as samples arrive. A repeated label set keeps its first value.

    Collectors give an image's samples together, so repeats are found with the extras of the
    current image and a bitmap of the images already done, not a set of every series (an int
    object per series: 8 MB for 250k series, made and freed on every refresh). An image that
    comes back after others switches the builder to a set built from the columns."""

    __slots__ = ("current", "done", "extra", "extras", "image", "last", "seen", "values")

    def __init__(self) -> None:
        self.image: array[int] = array("I")
        self.extra: array[int] = array("I")
        self.extras: dict[tuple[str, ...], int] = {}
        self.values: array[float] = array("d")
        self.last = -1  # the image of the last sample
        self.current: set[int] = set()  # its extras so far
        self.done = bytearray()  # 1 at the images given before ``last``
        self.seen: set[int] | None = None  # (image << 32 | extra) of every series, once needed

    def _repeated(self, image: int, index: int) -> bool:
        if self.seen is not None:
            ident = image << 32 | index
            if ident in self.seen:
                return True
            self.seen.add(ident)
            return False
        if image == self.last:
            if index in self.current:
                return True
            self.current.add(index)
            return False
        if self.last >= 0:
            if len(self.done) <= self.last:
                self.done.extend(bytes(self.last + 1 - len(self.done)))
            self.done[self.last] = 1
        if image < len(self.done) and self.done[image]:  # it comes back: switch to a set
            self.seen = {i << 32 | e for i, e in zip(self.image, self.extra, strict=True)}
            return self._repeated(image, index)
        self.last, self.current = image, {index}
        return False

    def add(self, image: int, extra: tuple[str, ...], value: float) -> None:
        index = self.extras.get(extra)
        if index is None:
            index = self.extras[extra] = len(self.extras)
        if self._repeated(image, index):
            return
        self.image.append(image)
        self.extra.append(index)
        self.values.append(value)

    def build(self) -> Family:
        """The columns, copied to their exact size (an array grows by about 1/16 ahead), the
        extra label index in the narrowest type that holds it (a family has few label sets
        but ``imagesec_image_info``)."""
        extras = len(self.extras)
        narrow = "B" if extras <= 1 << 8 else "H" if extras <= 1 << 16 else "I"
        return Family(
            array("I", self.image),
            array(narrow, self.extra.tolist()),
            tuple(self.extras),
            array("d", self.values),
        )


class SourceData:
    """The result of one successful refresh of a source, held compactly.

    Collectors pass ``Sample`` objects; they are folded at once into per-family columns
    (``families``) over a table of the source's image keys (``keys``), so the data of a big
    fleet costs a few bytes per series rather than an object per series. Two SourceData are
    equal when they would render the same series: the exposition compares a refresh's data
    with the previous one and renders nothing when they are equal.

    ``completeness`` is the share of the pass's images it covers (below 1 while a per-image
    pass is still under way: published progress, or a pass that resumes in the next attempt).
    ``skipped`` counts the images a listing left out, by reason (config filters and bounds:
    ``imagesec_images_skipped``). ``truncated`` says why the listing is known to be incomplete
    ("" if it is not): ``page_cap`` or ``shifting`` (see ``exporter.clouds.http.Rows``). All
    three are health, not series: equality ignores them.
    """

    __slots__ = (
        "__weakref__",
        "completeness",
        "families",
        "images",
        "keys",
        "skipped",
        "truncated",
    )

    def __init__(
        self,
        samples: Iterable[Sample] = (),
        images: Iterable[ImageRef] = (),
        *,
        completeness: float = 1.0,
        skipped: tuple[tuple[str, int], ...] = (),
        truncated: str = "",
    ) -> None:
        self.images: tuple[ImageRef, ...] = tuple(images)
        self.completeness = completeness
        self.skipped = skipped
        self.truncated = truncated
        index: dict[ImageKey, int] = {}
        builders: dict[str, _FamilyBuilder] = {}
        for sample in samples:
            builder = builders.get(sample.metric)
            if builder is None:
                builder = builders[sample.metric] = _FamilyBuilder()
            position = index.get(sample.image)
            if position is None:
                position = index[sample.image] = len(index)
            builder.add(position, sample.extra, sample.value)
        self.keys: tuple[ImageKey, ...] = tuple(index)
        self.families: dict[str, Family] = {
            name: builders[name].build() for name in CATALOGUE if name in builders
        }

    @property
    def samples(self) -> tuple[Sample, ...]:
        """The series as Sample objects, family by family (built on demand: for tests and
        tools, not for the render path)."""
        return tuple(
            Sample(name, self.keys[i], v, family.extras[e])
            for name, family in self.families.items()
            for i, e, v in zip(family.image, family.extra, family.values, strict=True)
        )

    def with_completeness(self, completeness: float) -> SourceData:
        """The same data (shared, not copied) with another ``completeness``."""
        copy = object.__new__(SourceData)
        copy.images, copy.keys, copy.families = self.images, self.keys, self.families
        copy.skipped, copy.completeness = self.skipped, completeness
        copy.truncated = self.truncated
        return copy

    def settled(self, older: SourceData | None) -> SourceData:
        """``self``, or, when it renders the same series as ``older``, ``older``'s columns and
        records (shared) with ``self``'s health: a refresh that changed nothing then holds no
        second copy of the source's data, and the next comparison of the two is by identity."""
        if older is None or older is self or older != self:
            return self
        settled = older.with_completeness(self.completeness)
        settled.skipped, settled.truncated = self.skipped, self.truncated
        return settled

    @property
    def series(self) -> int:
        return sum(len(f) for f in self.families.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceData):
            return NotImplemented
        return self is other or (
            self.families == other.families
            and self.keys == other.keys
            and self.images == other.images
        )

    def __repr__(self) -> str:
        return f"SourceData(images={len(self.images)}, series={self.series})"


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
    expired: bool = False  # last good data dropped: older than refresh.max_age


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Immutable view of every source, swapped atomically after each refresh."""

    sources: Mapping[SourceKey, SourceState] = field(default_factory=dict)

    def ready(self) -> bool:
        """True once every source has finished at least one refresh attempt."""
        return all(s.attempted for s in self.sources.values())


def stateset(metric: str, image: ImageKey, vocabulary: tuple[str, ...], state: str) -> list[Sample]:
    """The stateset of an image: one series, its current state, at 1. The other states of
    ``vocabulary`` are not emitted (they would be 0): an image's status is the one series it has
    (``== 1`` queries and ``sum by (status)`` read the same; one series per image, not one per
    state)."""
    if state not in vocabulary:
        raise ValueError(f"{metric}: state {state!r} not in {vocabulary}")
    return [Sample(metric, image, 1.0, (state,))]


def optional(metric: str, image: ImageKey, value: float | None, *extra: str) -> list[Sample]:
    """A sample if the vendor gave a value; nothing (not a made-up 0) if it did not."""
    return [] if value is None else [Sample(metric, image, float(value), extra)]
