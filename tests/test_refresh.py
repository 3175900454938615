"""The refresh loop: isolation of failures, last good data, dependencies, readiness."""

from __future__ import annotations

import asyncio

import pytest

from exporter.errors import AuthError
from exporter.model import ImageKey, ImageRef, Sample, SourceData, SourceKey
from exporter.refresh import Refresher
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

IMAGE = ImageKey("aliyun", "a", "cn-hangzhou", "shop", "cart", "1.0", "u1")


class FakeSource:
    """A source whose next outcome the test sets: data, an exception, or a hang."""

    def __init__(self, name: str, depends_on: SourceKey | None = None) -> None:
        self.key = SourceKey("aliyun", "a", "cn-shanghai", name)
        self.interval = 60.0
        self.depends_on = depends_on
        self.outcome: SourceData | BaseException | None = SourceData(
            samples=(Sample("imagesec_image_vulnerabilities", IMAGE, 3.0),),
            images=(ImageRef(IMAGE, "u1", "m1"),),
        )
        self.upstreams: list[SourceData | None] = []
        self.hang = False

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        self.upstreams.append(upstream)
        if self.hang:
            await asyncio.sleep(3600)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


async def test_failure_keeps_last_good_data_and_marks_down(clock: FakeClock) -> None:
    source, other = FakeSource("sas_images"), FakeSource("sas_image_risk")
    telemetry = Telemetry()
    refresher = Refresher([source, other], telemetry=telemetry, clock=clock)
    first = await refresher.run_once()
    assert first.ready() and first.sources[source.key].up
    good = first.sources[source.key].data

    clock.advance(60)
    source.outcome = AuthError("denied", code="InvalidAccessKeyId.NotFound")
    second = await refresher.run_once()
    state = second.sources[source.key]
    assert (state.up, state.data, state.last_success) == (
        False,
        good,
        first.sources[source.key].last_success,
    )
    assert state.last_attempt == clock.now
    assert "denied" in (state.last_error or "")
    assert second.sources[other.key].up
    labels = (*source.key.labels(), "InvalidAccessKeyId.NotFound")
    assert telemetry.value("imagesec_refresh_failures", labels) == 1

    source.outcome = SourceData()
    third = await refresher.run_once()
    assert third.sources[source.key].up and third.sources[source.key].last_error is None


async def test_a_bug_in_a_collector_is_contained(clock: FakeClock) -> None:
    source = FakeSource("sas_images")
    source.outcome = ZeroDivisionError("oops")
    telemetry = Telemetry()
    snapshot = await Refresher([source], telemetry=telemetry, clock=clock).run_once()
    assert not snapshot.sources[source.key].up
    assert telemetry.value("imagesec_refresh_failures", (*source.key.labels(), "internal")) == 1


async def test_a_hanging_source_times_out(clock: FakeClock) -> None:
    source = FakeSource("sas_images")
    source.hang = True
    telemetry = Telemetry()
    snapshot = await Refresher([source], telemetry=telemetry, timeout=0.05, clock=clock).run_once()
    assert snapshot.sources[source.key].last_error == "refresh took longer than 0.05s"
    assert telemetry.value("imagesec_refresh_failures", (*source.key.labels(), "timeout")) == 1


async def test_dependents_run_after_their_upstream_and_get_its_data(clock: FakeClock) -> None:
    upstream = FakeSource("sas_images")
    dependent = FakeSource("sas_baseline", depends_on=upstream.key)
    refresher = Refresher([dependent, upstream], telemetry=Telemetry(), clock=clock)
    await refresher.run_once()
    assert dependent.upstreams == [upstream.outcome]


async def test_dependent_fails_visibly_without_upstream_data(clock: FakeClock) -> None:
    upstream = FakeSource("sas_images")
    upstream.outcome = AuthError("denied", code="SignatureDoesNotMatch")
    dependent = FakeSource("sas_baseline", depends_on=upstream.key)
    snapshot = await Refresher([upstream, dependent], telemetry=Telemetry(), clock=clock).run_once()
    state = snapshot.sources[dependent.key]
    assert not state.up and "no data yet from sas_images" in (state.last_error or "")
    assert dependent.upstreams == []  # never called without an inventory


async def test_not_ready_until_every_source_attempted(clock: FakeClock) -> None:
    a, b = FakeSource("sas_images"), FakeSource("sas_image_risk")
    published = []
    refresher = Refresher([a, b], telemetry=Telemetry(), clock=clock, on_snapshot=published.append)
    assert not refresher.snapshot.ready()
    await refresher.refresh(a)
    assert not refresher.snapshot.ready()
    await refresher.refresh(b)
    assert refresher.snapshot.ready()
    assert len(published) == 2 and published[-1] is refresher.snapshot


async def test_run_loops_each_source_on_its_interval() -> None:
    source = FakeSource("sas_images")
    source.interval = 0.01
    refresher = Refresher([source], telemetry=Telemetry())
    task = asyncio.create_task(refresher.run())
    while len(source.upstreams) < 3:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert refresher.snapshot.sources[source.key].up


def test_duplicate_sources_are_a_bug() -> None:
    with pytest.raises(ValueError):
        Refresher([FakeSource("x"), FakeSource("x")], telemetry=Telemetry())


async def test_reconfigure_keeps_unchanged_sources_and_the_last_good_data_of_changed_ones(
    clock: FakeClock,
) -> None:
    kept, changed, removed = (
        FakeSource("sas_images"),
        FakeSource("sas_image_risk"),
        FakeSource("sas_malicious"),
    )
    refresher = Refresher([kept, changed, removed], telemetry=Telemetry(), clock=clock)
    published: list[object] = []
    refresher.on_snapshot = published.append
    task = asyncio.create_task(refresher.run())
    try:
        async with asyncio.timeout(10):
            while not refresher.snapshot.ready():
                await asyncio.sleep(0.01)
        before = refresher.snapshot
        replacement, added = FakeSource("sas_image_risk"), FakeSource("sas_baseline")
        replacement.interval, replacement.hang = 120.0, True
        refresher.reconfigure([kept, replacement, added], timeout=30)
        after = refresher.snapshot
        assert published[-1] is after
        assert set(after.sources) == {kept.key, changed.key, added.key}
        assert after.sources[changed.key].data == before.sources[changed.key].data
        assert after.sources[changed.key].interval == 120.0
        assert after.sources[kept.key] == before.sources[kept.key]
        async with asyncio.timeout(10):
            while not refresher.snapshot.sources[added.key].attempted:
                await asyncio.sleep(0.01)
        assert len(kept.upstreams) == 1  # its loop was not restarted
        assert len(replacement.upstreams) == 1  # the new object refreshes at once
        assert removed.key not in refresher.snapshot.sources
        with pytest.raises(ValueError):
            refresher.reconfigure([kept, kept])
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_last_good_data_older_than_max_age_is_dropped_visibly(clock: FakeClock) -> None:
    source = FakeSource("sas_images")
    refresher = Refresher([source], telemetry=Telemetry(), clock=clock, max_age=600)
    await refresher.run_once()
    source.outcome = AuthError("denied", code="InvalidAccessKeyId")
    clock.advance(600)
    kept = (await refresher.run_once()).sources[source.key]
    assert kept.data is not None and not kept.expired  # exactly max_age old: still served
    clock.advance(1)
    dropped = (await refresher.run_once()).sources[source.key]
    assert dropped.data is None and dropped.expired and not dropped.up
    source.outcome = SourceData(images=(ImageRef(IMAGE, "u1", "m1"),))
    back = (await refresher.run_once()).sources[source.key]
    assert back.up and back.data is not None and not back.expired


def test_max_age_shorter_than_an_interval_is_a_config_error() -> None:
    from exporter.config import parse_config
    from exporter.errors import ConfigError

    account = {"name": "a", "provider": "tencent", "regions": ["ap-guangzhou"]}
    parse_config({"accounts": [account], "refresh": {"max_age": "1h"}})
    with pytest.raises(ConfigError, match="max_age"):
        parse_config({"accounts": [account], "refresh": {"max_age": "1m"}})


def test_data_kept_with_another_completeness_keeps_its_truncation() -> None:
    data = SourceData(images=(ImageRef(IMAGE, "u1", "m1"),), truncated="page_cap")
    partial = data.with_completeness(0.5)
    assert partial.truncated == "page_cap" and partial.completeness == 0.5
    assert partial == data  # health, not series


def _vulnerabilities(value: float, truncated: str = "") -> SourceData:
    """Data built afresh each call (new objects), as a refresh builds it."""
    key = ImageKey(*IMAGE.labels())
    return SourceData(
        samples=(Sample("imagesec_image_vulnerabilities", key, value),),
        images=(ImageRef(key, "u1", "m1"),),
        truncated=truncated,
    )


async def test_a_refresh_equal_to_the_last_good_data_holds_one_copy(clock: FakeClock) -> None:
    source = FakeSource("sas_images")
    refresher = Refresher([source], telemetry=Telemetry(), clock=clock)
    source.outcome = _vulnerabilities(3.0)
    good = (await refresher.run_once()).sources[source.key].data
    assert good is not None
    source.outcome = _vulnerabilities(3.0, truncated="page_cap")  # same series, new health
    clock.advance(60)
    state = (await refresher.run_once()).sources[source.key]
    assert state.data is not None and state.data == good
    # The old generation's records and columns, not the new copy's
    assert state.data.images is good.images and state.data.keys is good.keys
    assert state.data.families is good.families
    assert state.data.truncated == "page_cap"  # the new pass's health
    source.outcome = _vulnerabilities(4.0)  # a change: the new data as it is
    clock.advance(60)
    changed = (await refresher.run_once()).sources[source.key].data
    assert changed is source.outcome
