"""First passes publish progress: partial data at a bounded cadence, a completeness gauge, and a
pass stopped by the timeout that resumes instead of failing."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from exporter.clouds.aliyun.findings import SasBaselineSource
from exporter.collector import HealthCollector
from exporter.model import ImageRef, Snapshot, SourceData
from exporter.refresh import Refresher
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock
from tests.test_aliyun_findings import (
    BASELINE,
    INVENTORY,
    Sas,
    api_requests,
    baseline_answer,
    baseline_source,
    image,
    make_client,
)


class Inventory:
    """An inventory source that lists fixed images."""

    def __init__(self, refs: list[ImageRef]) -> None:
        self.key = INVENTORY
        self.interval = 300.0
        self.depends_on = None
        self.refs = refs

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        return SourceData(images=tuple(self.refs))


class Steps:
    """A timer the test moves; the fan-out's cadence and cache read it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def completeness(snapshot: Snapshot, source: Any) -> float | None:
    registry = CollectorRegistry()
    registry.register(HealthCollector(lambda: snapshot, Telemetry()))
    labels = dict(
        zip(("provider", "account", "region", "source"), source.key.labels(), strict=True)
    )
    return registry.get_sample_value("imagesec_source_pass_completeness_ratio", labels)


def one_second_lookups(
    clock: FakeClock, publish_every: float, images: int
) -> tuple[SasBaselineSource, Refresher, list[Snapshot]]:
    """A baseline pass over ``images`` images, one lookup at a time, each taking a second of
    the fan-out's clock; returns the source, its refresher and the snapshots it publishes."""
    steps = Steps()

    def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        steps.now += 1.0
        return baseline_answer(params, request)

    telemetry = Telemetry()
    source = baseline_source(
        make_client(Sas(**{BASELINE: answer}), telemetry, clock),
        telemetry,
        concurrency=1,
        timer=steps,
        publish_every=publish_every,
    )
    inventory = Inventory([image(i) for i in range(images)])
    published: list[Snapshot] = []
    refresher = Refresher([inventory, source], telemetry=telemetry, clock=clock)
    refresher.on_snapshot = published.append
    return source, refresher, published


async def test_a_first_pass_publishes_images_as_they_arrive(clock: FakeClock) -> None:
    source, refresher, published = one_second_lookups(clock, 3.0, 10)
    await refresher.run_once()

    states = [s.sources[source.key] for s in published]
    partial = [s.data for s in states if s.data is not None and s.data.completeness < 1]
    # Every third lookup (the cadence), while the pass runs: 3, 6 and 9 of 10 images.
    assert [len(d.images) for d in partial] == [3, 6, 9]
    assert [d.completeness for d in partial] == [0.3, 0.6, 0.9]
    assert [len(d.samples) for d in partial] == [9, 18, 27]  # 3 severities per image
    # Partial data is not an error: up, but not yet "attempted" (ready waits for the pass).
    first_partial = next(s for s in states if s.data is not None)
    assert first_partial.up and not first_partial.attempted
    gauges = [completeness(s, source) for s in published]
    assert gauges[0] == 0.0 and 0.3 in gauges and 0.9 in gauges and gauges[-1] == 1.0
    final = refresher.snapshot.sources[source.key]
    assert final.up and final.data is not None and len(final.data.images) == 10


async def test_a_finished_pass_lets_go_of_its_progress_reports(clock: FakeClock) -> None:
    # The last report (a closure over all the pass had found: 25k (image, detail) pairs per
    # collector at 50k images) was held until the source's next refresh began.
    import gc
    import weakref

    source, refresher, _ = one_second_lookups(clock, 3.0, 10)
    report = source.on_progress
    assert report is not None
    reports: list[weakref.ref[Any]] = []

    def keep(partial: Any) -> None:
        reports.append(weakref.ref(partial))
        report(partial)

    source.on_progress = keep
    await refresher.run_once()
    gc.collect()
    assert len(reports) == 3 and all(r() is None for r in reports)


async def test_a_big_pass_reports_progress_at_most_twenty_times(clock: FakeClock) -> None:
    # Each report re-renders all the pass has found: reporting after every lookup (the time
    # cadence alone, here 0 s) would make a first pass's rendering quadratic in its images.
    source, refresher, published = one_second_lookups(clock, 0.0, 200)
    await refresher.run_once()
    partial = [
        d
        for d in (s.sources[source.key].data for s in published)
        if d is not None and d.completeness < 1
    ]
    assert [len(d.images) for d in partial] == list(range(10, 200, 10))  # every 5%


async def test_a_later_pass_serves_the_complete_data_until_it_completes(clock: FakeClock) -> None:
    steps = Steps()
    handler = Sas(**{BASELINE: baseline_answer})
    telemetry = Telemetry()
    source = baseline_source(
        make_client(handler, telemetry, clock), telemetry, timer=steps, publish_every=0.0
    )
    refs = [image(i) for i in range(6)]
    inventory = Inventory(refs)
    refresher = Refresher([inventory, source], telemetry=telemetry, clock=clock)
    await refresher.run_once()
    complete = refresher.snapshot.sources[source.key].data
    published: list[Snapshot] = []
    refresher.on_snapshot = published.append
    inventory.refs = [image(i, marker="m1") for i in range(6)]  # every image rescanned
    await refresher.run_once()
    mine = [s.sources[source.key] for s in published]
    assert mine[0].data is complete  # the inventory's publish: the old data, untouched
    assert all(s.data is not None and s.data.completeness == 1.0 for s in mine)


async def test_a_pass_stopped_by_the_timeout_is_incomplete_not_failed(clock: FakeClock) -> None:
    blocked = {"uuid-4", "uuid-5", "uuid-6"}
    release = asyncio.Event()

    async def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        if params["ImageUuid"] in blocked and not release.is_set():
            await asyncio.sleep(3600)  # the rate limit of a big fleet, in short
        return baseline_answer(params, request)

    handler = Sas(**{BASELINE: answer})
    telemetry = Telemetry()
    source = baseline_source(
        make_client(handler, telemetry, clock), telemetry, concurrency=1, timer=Steps()
    )
    inventory = Inventory([image(i) for i in range(8)])
    refresher = Refresher([inventory, source], telemetry=telemetry, clock=clock, timeout=0.2)
    snapshot = await refresher.run_once()
    state = snapshot.sources[source.key]
    assert state.up and state.attempted and state.last_error is None
    assert state.last_success == clock.now
    assert state.data is not None
    assert [r.native_id for r in state.data.images] == ["uuid-0", "uuid-1", "uuid-2", "uuid-3"]
    assert state.data.completeness == 0.5
    assert completeness(snapshot, source) == 0.5
    assert not telemetry.values("imagesec_refresh_failures").get((*source.key.labels(), "timeout"))
    assert api_requests(telemetry, BASELINE) == 5  # four answered, the fifth was cut off

    release.set()  # the next attempt resumes: only the images still missing are looked up
    snapshot = await refresher.run_once()
    state = snapshot.sources[source.key]
    assert state.data is not None and state.data.completeness == 1.0
    assert len(state.data.images) == 8
    assert api_requests(telemetry, BASELINE) == 5 + 4


async def test_a_pass_that_made_no_progress_still_times_out(clock: FakeClock) -> None:
    async def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    handler = Sas(**{BASELINE: answer})
    telemetry = Telemetry()
    source = baseline_source(make_client(handler, telemetry, clock), telemetry, timer=Steps())
    refresher = Refresher(
        [Inventory([image(1)]), source], telemetry=telemetry, clock=clock, timeout=0.05
    )
    state = (await refresher.run_once()).sources[source.key]
    assert not state.up and state.last_error == "refresh took longer than 0.05s"
    assert telemetry.value("imagesec_refresh_failures", (*source.key.labels(), "timeout")) == 1


class Resumable:
    """A source whose first attempt reports half its images, then hangs past the timeout."""

    def __init__(self) -> None:
        self.key = INVENTORY
        self.interval = 3600.0
        self.depends_on = None
        self.on_progress: Any = None
        self.attempts = 0

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        self.attempts += 1
        if self.attempts == 1:
            self.on_progress(lambda: SourceData(images=(image(1),), completeness=0.5))
            await asyncio.sleep(3600)
        return SourceData(images=(image(1), image(2)))


async def test_an_incomplete_pass_resumes_at_once_not_after_the_interval(
    clock: FakeClock,
) -> None:
    source = Resumable()
    refresher = Refresher([source], telemetry=Telemetry(), clock=clock, timeout=0.05)
    task = asyncio.create_task(refresher.run())
    try:
        async with asyncio.timeout(5):
            while source.attempts < 2 or refresher.snapshot.sources[source.key].data is None:
                await asyncio.sleep(0.01)
            while refresher.snapshot.sources[source.key].data.completeness < 1:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    state = refresher.snapshot.sources[source.key]
    assert state.up and state.data is not None and len(state.data.images) == 2
    assert source.attempts == 2  # and then it waits for the interval as usual
