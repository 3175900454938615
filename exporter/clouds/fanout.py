"""Per-image detail calls: cached by image identity and version, run concurrently, bounded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, NamedTuple, TypeVar

from exporter.errors import AuthError, SourceError
from exporter.model import ImageRef, SourceKey
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

V = TypeVar("V")

Progress = Callable[[list[tuple[ImageRef, V]], float], None]
"""Called with the images looked up so far (in inventory order) and the share of the pass done."""

DEFAULT_PUBLISH_EVERY = 10.0
"""Seconds between two progress reports of one pass (a bounded cadence)."""

PROGRESS_STEPS = 20
"""A pass reports progress at most this many times (each after another 1/20 of its lookups)."""

CACHE_METRIC = "imagesec_detail_cache_requests"
FAILURE_METRIC = "imagesec_detail_lookup_failures"
DEFAULT_TTL = 86_400.0
"""Even an unchanged image is looked up again after a day: a safety net, should the vendor
change a detail without the inventory's scan marker moving."""


class _Entry(NamedTuple, Generic[V]):
    """What the fan-out keeps of one image: its last good detail and, if that detail may be
    reused, the version it was fetched at. One tuple per image, in one dict: the cache and the
    fallback of a failed lookup are the same entry (no TTLCache links and size table beside a
    second dict)."""

    version: Hashable | None  # None: not cacheable (only a fallback for a failed lookup)
    value: V
    fetched: float  # timer() when fetched
    stage: str  # the image's stage when fetched


def first_source_error(group: BaseExceptionGroup[BaseException]) -> SourceError | None:
    """The first ``SourceError`` in a (possibly nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = first_source_error(exc)
            if found is not None:
                return found
    return None


class DetailFanOut(Generic[V]):
    """Looks up one detail per image, calling the API only for images whose version is not
    cached.

    The cache belongs to one source and is only touched from its refresh task. An image's
    entry is keyed by its native id and holds the version its detail was fetched at (the
    scan marker, plus anything else the detail depends on), so a steady-state refresh makes
    no calls and a rescan of N images costs N lookups. Entries of images that left the
    inventory are dropped after every complete pass.

    Hits and misses are counted in ``imagesec_detail_cache_requests{result="hit"|"miss"}``.

    A lookup that fails is counted in ``imagesec_detail_lookup_failures`` and logged; its
    image keeps its last good detail (whatever scan it was for), or has none yet. The whole
    pass fails only when most lookups fail (more than half of this pass's misses), or on an
    ``AuthError`` (no lookup can succeed): the same rule for every per-image collector.
    """

    def __init__(
        self,
        source: SourceKey,
        telemetry: Telemetry,
        *,
        concurrency: int,
        ttl: float = DEFAULT_TTL,
        timer: Callable[[], float] = time.monotonic,
        cacheable: Callable[[V], bool] | None = None,
        stage_floor: float | None = None,
        publish_every: float = DEFAULT_PUBLISH_EVERY,
    ) -> None:
        """Create a fan-out; ``cacheable`` says which details to keep (default: all of them).

        With ``stage_floor``, an entry also remembers the image's ``stage`` when it was
        fetched, and is looked up again when the inventory shows another stage, but not
        sooner than ``stage_floor`` seconds after it was fetched (TCSS details of a running
        scan). Without it, stages are ignored: the key alone decides.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._telemetry = telemetry
        self._labels = source.labels()
        self._log_fields = source.log_fields()
        self._concurrency = concurrency
        self._cacheable = cacheable
        self._stage_floor = stage_floor
        self._publish_every = publish_every
        self._timer = timer
        self._ttl = ttl
        # Native id -> the image's entry: its last good detail (whatever its scan: what a
        # failed lookup falls back to) and the key it is cached under. Sized by pruning to the
        # inventory after each pass, not by eviction: an LRU bound smaller than the fleet
        # would refetch images on every pass.
        self._entries: dict[str, _Entry[V]] = {}
        self.failed = 0  # lookups that failed in the last pass
        for result in ("hit", "miss"):
            telemetry.declare(CACHE_METRIC, (*self._labels, result))
        telemetry.declare(FAILURE_METRIC, self._labels)

    def _fresh(self, entry: _Entry[V], now: float) -> bool:
        return entry.version is not None and now - entry.fetched < self._ttl

    @property
    def cache(self) -> Mapping[tuple[str, Hashable], V]:
        """The details that may be reused, by (native id, version) (a copy: for tests and
        tools)."""
        now = self._timer()
        return {(n, e.version): e.value for n, e in self._entries.items() if self._fresh(e, now)}

    @property
    def last_good(self) -> Mapping[str, V]:
        """Each image's last good detail, by native id (a copy: for tests and tools)."""
        return {native_id: e.value for native_id, e in self._entries.items()}

    def _cached(self, version: Hashable, ref: ImageRef, now: float) -> V:
        """The cached value of ``ref`` at ``version``; KeyError if never fetched at that
        version, expired, or its stage moved."""
        entry = self._entries.get(ref.native_id)
        if entry is None or entry.version != version or not self._fresh(entry, now):
            raise KeyError(ref.native_id)
        if (
            self._stage_floor is not None
            and entry.stage != ref.stage
            and now - entry.fetched >= self._stage_floor
        ):
            raise KeyError(ref.native_id)
        return entry.value

    async def run(
        self,
        images: Sequence[ImageRef],
        version: Callable[[ImageRef], Hashable],
        fetch: Callable[[ImageRef], Awaitable[V]],
        progress: Progress[V] | None = None,
    ) -> list[tuple[ImageRef, V]]:
        """Every image with its detail, in ``images`` order.

        An image is its ``native_id``; ``version(ref)`` is what else its detail depends on
        (the scan marker, ...): a cached detail is reused while its version is the image's
        current one. A version the ref already holds (``ref.scan_marker``) keeps a pass from
        making, and the cache from holding, a key object per image.

        Misses are fetched by ``concurrency`` worker tasks, each taking the next image in
        order (the client's token bucket spaces them out): not a task per image, whose frames
        a big first pass held all at once. A failed lookup leaves its image on its last good
        detail (or out, if it never had one); once most lookups have failed, the rest are
        cancelled and the failure is raised as is. The lookups that completed stay cached
        either way, so the next attempt resumes where this one stopped.

        ``progress``, if given, gets what the pass has so far while lookups complete, at most
        every ``publish_every`` seconds and every ``1/PROGRESS_STEPS`` of the lookups, and once
        more if the pass is cancelled (a timeout), so a long first pass shows its images as
        they arrive.
        """
        wanted = {ref.native_id: ref for ref in images}
        results: dict[str, V] = {}
        missing: list[tuple[Hashable, ImageRef]] = []
        now = self._timer()
        for native_id, ref in wanted.items():
            current = version(ref)
            try:
                results[native_id] = self._cached(current, ref, now)
            except KeyError:  # never fetched, expired, or a running scan moved on
                missing.append((current, ref))
        self._telemetry.inc(CACHE_METRIC, (*self._labels, "hit"), len(results))
        self._telemetry.inc(CACHE_METRIC, (*self._labels, "miss"), len(missing))
        failures = 0
        fatal: SourceError | None = None
        last_report = self._timer()
        fetched = reported = 0
        # Each report re-renders everything found so far: at most PROGRESS_STEPS of them per
        # pass keeps a big first pass's rendering linear in its images, not quadratic.
        step = -(-len(missing) // PROGRESS_STEPS)

        def report() -> None:
            nonlocal last_report, reported
            last_report = self._timer()
            reported = fetched
            assert progress is not None
            found = [(ref, results[n]) for n, ref in wanted.items() if n in results]
            progress(found, len(results) / len(wanted) if wanted else 1.0)

        async def one(current: Hashable, ref: ImageRef) -> None:
            nonlocal failures, fatal, fetched
            try:
                value = await fetch(ref)
            except SourceError as err:
                failures += 1
                self._telemetry.inc(FAILURE_METRIC, self._labels)
                log.warning(
                    "detail lookup failed",
                    extra={
                        **self._log_fields,
                        "image_id": ref.native_id,
                        "code": err.code,
                        "error": err.message,
                    },
                )
                if isinstance(err, AuthError) or failures * 2 > len(missing):
                    fatal = err
                    raise
                return
            cacheable = self._cacheable is None or self._cacheable(value)
            self._entries[ref.native_id] = _Entry(
                current if cacheable else None, value, self._timer(), ref.stage
            )
            results[ref.native_id] = value
            fetched += 1
            if (
                progress is not None
                and fetched - reported >= step
                and self._timer() - last_report >= self._publish_every
            ):
                report()

        queue = iter(missing)

        async def worker() -> None:
            for current, ref in queue:  # shared: each lookup is taken by one worker, in order
                if fatal is not None:  # the pass was given up; the group cancels the rest
                    return
                await one(current, ref)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._concurrency, len(missing))):
                    group.create_task(worker())
        except asyncio.CancelledError:
            if progress is not None and fetched:
                report()  # what this attempt got, before the timeout stopped it
            raise
        except BaseExceptionGroup as group_error:
            err = first_source_error(group_error)
            if err is not None:
                raise err from None
            raise
        finally:
            self.failed = failures
        for native_id, entry in list(self._entries.items()):
            listed = wanted.get(native_id)
            if listed is None:
                del self._entries[native_id]
            elif entry.version is not None and entry.version != version(listed):  # older scan
                self._entries[native_id] = entry._replace(version=None)
        found: list[tuple[ImageRef, V]] = []
        for ref in images:
            if ref.native_id in results:
                found.append((ref, results[ref.native_id]))
            elif (kept := self._entries.get(ref.native_id)) is not None:
                found.append((ref, kept.value))
        return found
