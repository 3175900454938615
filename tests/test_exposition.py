"""The chunked exposition: renders only what changed, equals the straightforward render, and
serves one gzip member without copying the per-image part."""

from __future__ import annotations

import errno
import gzip
import os
import random
import weakref
import zlib
from array import array
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Metric, generate_latest

from exporter import exposition
from exporter.collector import HealthCollector, render_images
from exporter.exposition import (
    INFLATED_PIECE,
    ExpositionStore,
    Mapped,
    body_length,
    crc32_combine,
)
from exporter.metrics import CATALOGUE, metric_selection
from exporter.model import ImageKey, ImageRef, Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.refresh import Refresher
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock


def key(source: str, region: str = "cn-shanghai") -> SourceKey:
    return SourceKey("aliyun", "prod", region, source)


def image(n: int, region: str = "cn-hangzhou") -> ImageKey:
    return ImageKey("aliyun", "prod", region, "shop", f"repo{n % 7}", f"1.{n}", f"u{n}")


ODD = ImageKey("aliyun", "prod", "cn-hangzhou", 'ns"quote', "repo\\back", "tag\nline", "ü-1")


def inventory(images: range, bump: int = 0) -> SourceData:
    samples = [Sample("imagesec_image_vulnerabilities", ODD, 3.0)]
    for n in images:
        samples += [
            Sample("imagesec_image_vulnerabilities", image(n), float(n + bump)),
            Sample("imagesec_image_scan_status", image(n), 1.0, ("succeeded",)),
            Sample("imagesec_image_last_scan_timestamp_seconds", image(n), 1.7e9 + n),
            Sample("imagesec_image_scan_progress_ratio", image(n), 0.35, ("overall",)),
        ]
    return SourceData(samples, [ImageRef(image(n), f"u{n}", "m") for n in images])


def findings(images: range, value: float = 2.0) -> SourceData:
    return SourceData(
        [
            Sample("imagesec_image_baseline_risk_items", image(n), value, (s,))
            for n in images
            for s in ("high", "low")
        ]
        # a duplicate of the inventory's series for image 1: the first source in order keeps it
        + [Sample("imagesec_image_vulnerabilities", image(1), 99.0)]
    )


def snapshot(**data: tuple[SourceData | None, float]) -> Snapshot:
    states = {}
    for name, (d, interval) in data.items():
        source, _, region = name.partition("__")
        k = key(source, region or "cn-shanghai")
        states[k] = SourceState(k, interval, d, d is not None, True)
    return Snapshot(states)


def straightforward(store: ExpositionStore, snap: Snapshot) -> bytes:
    """What a render of everything on every scrape would serve: images, then health (the
    per-source families, then what else the store's health registry holds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Frozen(list(HealthCollector.collect_sources(snap))))
    registry.register(store.health)
    return render_images(snap) + generate_latest(registry)


class Frozen:
    """A collector of fixed families."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def renders(telemetry: Telemetry, source: str, region: str = "cn-shanghai") -> float:
    return telemetry.value("imagesec_exposition_renders", key(source, region).labels())


def test_chunks_and_health_equal_the_straightforward_render() -> None:
    snap = snapshot(
        sas_images=(inventory(range(50)), 300),
        sas_baseline=(findings(range(0, 60, 3)), 900),
        sas_malicious=(None, 900),
        # a second region of the same Sas site: the same images under the same labels
        sas_images__cn_hangzhou=(inventory(range(40, 80), bump=5), 300),
    )
    store = ExpositionStore(snap, Telemetry())
    assert store.scrape(accept_gzip=False) == straightforward(store, snap)
    assert gzip.decompress(store.scrape(accept_gzip=True)) == straightforward(store, snap)
    # A change of one source, with overlapping images in a later one, still agrees.
    changed = snapshot(
        sas_images=(inventory(range(45), bump=1), 300),
        sas_baseline=(findings(range(0, 60, 3)), 900),
        sas_malicious=(None, 900),
        sas_images__cn_hangzhou=(inventory(range(40, 80), bump=5), 300),
    )
    store.update(changed)
    assert store.scrape(accept_gzip=False) == straightforward(store, changed)
    assert gzip.decompress(store.scrape(accept_gzip=True)) == straightforward(store, changed)


def test_gzip_body_is_one_member_and_plain_parts_know_their_length() -> None:
    snap = snapshot(sas_images=(inventory(range(1000)), 1000), sas_baseline=(findings(range(9)), 9))
    store = ExpositionStore(snap, Telemetry())
    parts = store.scrape_parts(accept_gzip=True)
    # The shared part is one sealed memfd holding the header and the chunks; then the tail.
    assert len(parts) == 2 and isinstance(parts[0], Mapped) and isinstance(parts[1], bytes)
    assert os.pread(parts[0].file.fileno(), len(parts[0]) + 1, 0) == bytes(parts[0])
    body = b"".join(parts)
    reader = zlib.decompressobj(wbits=31)
    text = reader.decompress(body)
    assert reader.eof and reader.unused_data == b""  # exactly one gzip member, nothing after
    assert text == straightforward(store, snap)
    plain = store.scrape_parts(accept_gzip=False)
    assert body_length(plain) == len(b"".join(plain)) == len(text)
    # A plain scrape holds a bounded piece of text at a time, not a whole family's chunk.
    pieces = [len(p) for p in plain]
    chunks = store.exposition.parts
    largest = max(len(zlib.decompressobj(-15).decompress(p)) for p in chunks)
    assert max(pieces) == INFLATED_PIECE < largest
    # Concurrent scrapes share the per-image bytes: the same file, not copies; the chunks are
    # views into it, so each byte is held once.
    again = store.scrape_parts(accept_gzip=True)
    assert again[0] is parts[0]
    assert all(isinstance(c, memoryview) and c.obj is parts[0] for c in chunks)


def test_the_shared_file_is_sealed_and_freed_once_no_scrape_holds_it() -> None:
    snap = snapshot(sas_images=(inventory(range(50)), 50), sas_baseline=(findings(range(9)), 9))
    store = ExpositionStore(snap, Telemetry())
    held = store.scrape_parts(accept_gzip=True)[0]
    assert isinstance(held, Mapped)
    writable = os.open(f"/proc/self/fd/{held.file.fileno()}", os.O_RDWR)
    try:
        with pytest.raises(PermissionError):  # F_SEAL_WRITE: nobody can change a served byte
            os.pwrite(writable, b"x", 0)
    finally:
        os.close(writable)
    first = weakref.ref(held)
    store.update(
        snapshot(
            sas_images=(inventory(range(50), bump=1), 50), sas_baseline=(findings(range(9)), 9)
        )
    )
    second = store.exposition.mapped
    assert second is not None and second is not held and first() is held  # the scrape's
    fd = held.file.fileno()
    del held
    assert first() is None  # no scrape, no chunk and no cached header keeps the old file
    with pytest.raises(OSError):
        os.fstat(fd)
    # A change of one source re-points the unchanged source's chunks into the new file too.
    again = weakref.ref(second)
    del second
    store.update(
        snapshot(
            sas_images=(inventory(range(50), bump=1), 50), sas_baseline=(findings(range(8)), 9)
        )
    )
    assert again() is None


def test_without_a_memfd_the_chunks_are_served_from_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(name: str, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", refuse)
    snap = snapshot(sas_images=(inventory(range(50)), 50), sas_baseline=(findings(range(9)), 9))
    store = ExpositionStore(snap, Telemetry())
    store.update(snapshot(sas_images=(inventory(range(50), bump=1), 50)))
    parts = store.scrape_parts(accept_gzip=True)
    assert store.exposition.mapped is None and all(isinstance(p, bytes) for p in parts)
    assert gzip.decompress(b"".join(parts)) == straightforward(store, store.snapshot)
    assert [r.getMessage() for r in caplog.records] == ["exposition kept in memory: no memfd"]
    monkeypatch.undo()
    store.update(snap)
    assert isinstance(store.scrape_parts(accept_gzip=True)[0], Mapped)


async def test_a_refresh_that_changed_nothing_does_not_render(clock: FakeClock) -> None:
    class Source:
        def __init__(self, name: str) -> None:
            self.key = key(name)
            self.interval = 60.0
            self.depends_on = None
            self.value = 1.0
            self.image = image(7)

        async def refresh(self, upstream: SourceData | None) -> SourceData:
            # A fresh, equal object every time, as a real refresh returns.
            return SourceData([Sample("imagesec_image_vulnerabilities", self.image, self.value)])

    a, b = Source("sas_images"), Source("tcss_images")
    b.key = SourceKey("tencent", "prod", "ap-guangzhou", "tcss_images")
    b.image = replace(image(8), provider="tencent", region="ap-guangzhou")
    telemetry = Telemetry()
    refresher = Refresher([a, b], telemetry=telemetry, clock=clock)
    store = ExpositionStore(refresher.snapshot, telemetry)
    refresher.on_snapshot = store.update
    await refresher.run_once()
    b_renders = lambda: telemetry.value("imagesec_exposition_renders", b.key.labels())  # noqa: E731
    assert (renders(telemetry, "sas_images"), b_renders()) == (1, 1)
    first = store.exposition
    for _ in range(3):
        clock.advance(60)
        await refresher.run_once()
    assert (renders(telemetry, "sas_images"), b_renders()) == (1, 1)
    assert store.exposition is first
    a.value = 2.0  # one source changes: only it renders again
    await refresher.run_once()
    assert (renders(telemetry, "sas_images"), b_renders()) == (2, 1)
    assert b'image_id="u7"} 2.0' in store.scrape(accept_gzip=False)


def test_a_change_re_renders_a_later_source_on_the_same_images_only_if_they_share_a_family() -> (
    None
):
    def baseline(value: float) -> SourceData:
        return SourceData(
            Sample("imagesec_image_baseline_risk_items", image(n), value, ("high",))
            for n in range(20)
        )

    telemetry = Telemetry()
    store = ExpositionStore(
        snapshot(sas_baseline=(baseline(1.0), 900), sas_images=(inventory(range(20)), 300)),
        telemetry,
    )
    # sas_baseline sorts first; sas_images has the same images but no family in common: its
    # duplicates cannot change, so it is not rendered again.
    changed = snapshot(sas_baseline=(baseline(2.0), 900), sas_images=(inventory(range(20)), 300))
    store.update(changed)
    assert (renders(telemetry, "sas_baseline"), renders(telemetry, "sas_images")) == (2, 1)
    assert store.scrape(accept_gzip=False) == straightforward(store, changed)
    # The sets of image keys are not held between renders (no table of them on the store).
    assert not [
        name
        for name, value in vars(store).items()
        if isinstance(value, dict) and any(isinstance(v, frozenset) for v in value.values())
    ]
    # A change in a source that shares a family with a later one does re-render that one.
    overlapping = snapshot(
        sas_baseline=(findings(range(0, 20, 3)), 900), sas_images=(inventory(range(20)), 300)
    )
    store.update(overlapping)
    assert renders(telemetry, "sas_images") == 2
    assert store.scrape(accept_gzip=False) == straightforward(store, overlapping)


def test_render_failure_drops_only_that_source_and_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snap = snapshot(sas_images=(inventory(range(5)), 300), sas_baseline=(findings(range(5)), 900))
    telemetry = Telemetry()
    store = ExpositionStore(snap, telemetry)
    original = exposition.render_family

    def broken(name: str, *args: object, **kwargs: object) -> exposition.Chunk:
        if name == "imagesec_image_baseline_risk_items":
            raise RuntimeError("boom")
        return original(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(exposition, "render_family", broken)
    changed = snapshot(
        sas_images=(inventory(range(6)), 300), sas_baseline=(findings(range(5), 3.0), 900)
    )
    store.update(changed)
    text = store.scrape(accept_gzip=False).decode()
    labels = key("sas_baseline").labels()
    assert telemetry.value("imagesec_exposition_render_failures", labels) == 1
    assert "imagesec_image_baseline_risk_items{" not in text
    assert 'image_id="u5"' in text  # the other source's new data is there
    assert store.render_errors == {key("sas_baseline"): "render failed: RuntimeError"}
    assert 'imagesec_exposition_render_failures_total{account="prod"' in text
    monkeypatch.setattr(exposition, "render_family", original)
    store.update(replace(changed))  # the next swap retries the failed source
    assert store.scrape(accept_gzip=False) == straightforward(store, changed)
    assert store.render_errors == {}


def test_crc32_combine_matches_zlib() -> None:
    rng = random.Random(7)
    for _ in range(50):
        a = rng.randbytes(rng.randrange(0, 3000))
        b = rng.randbytes(rng.randrange(0, 3000))
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_metric_selection_follows_kube_state_metrics() -> None:
    assert metric_selection(None, None) == frozenset(CATALOGUE)
    allowed = metric_selection("imagesec_up, imagesec_api_requests_total", None)
    assert allowed == {"imagesec_up", "imagesec_api_requests"}  # _total may be given
    denied = metric_selection(None, "imagesec_image_.*")
    assert denied == {n for n in CATALOGUE if not n.startswith("imagesec_image_")}
    with pytest.raises(ValueError, match="matches no metric"):
        metric_selection("imagesec_image_vulns", None)


def test_store_leaves_out_the_families_not_selected() -> None:
    snap = snapshot(sas_images=(inventory(range(5)), 300))
    families = metric_selection(None, "imagesec_image_scan_.*,imagesec_build_info")
    store = ExpositionStore(snap, Telemetry(), families=families)
    text = store.scrape(accept_gzip=False).decode()
    assert "imagesec_image_vulnerabilities{" in text and "imagesec_up{" in text
    assert "imagesec_image_scan_" not in text and "imagesec_build_info" not in text
    assert "imagesec_image_last_scan_timestamp_seconds{" in text


def test_self_metrics_render_as_prometheus_client_would() -> None:
    """render_text writes generate_latest's bytes: every family type, escapes, odd values."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        GCCollector,
        Histogram,
        Info,
        ProcessCollector,
        Summary,
    )
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.exposition import generate_latest

    from exporter.exposition import render_text

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    gauge = Gauge("odd_values", 'help with \\ and\nnewline and "quotes"', ["v"], registry=registry)
    for label, value in {
        'back\\slash "quoted"\nline': 1.0,
        "big": 1e21,
        "small": 1.5e-7,
        "inf": float("inf"),
        "-inf": float("-inf"),
        "nan": float("nan"),
        "million": 1e6,
        "negative": -123456789.25,
        "中文": 3.0,
    }.items():
        gauge.labels(label).set(value)
    Counter("calls", "a counter", ["action", "code"], registry=registry).labels("A", "x").inc(3)
    Histogram("latency_seconds", "a histogram", ["action"], registry=registry).labels("A").observe(
        0.3
    )
    Summary("sizes_bytes", "a summary", registry=registry).observe(12)
    Info("build", "an info", registry=registry).info({"version": "1.0", "revision": "abc"})

    class Stamped:
        def collect(self) -> list[GaugeMetricFamily]:
            family = GaugeMetricFamily("stamped", "ints and timestamps", labels=["a"])
            family.add_metric(["1"], 5, timestamp=1_700_000_000.123)  # type: ignore[arg-type]
            return [family]

    registry.register(Stamped())  # type: ignore[arg-type]
    metrics = list(registry.collect())  # one collection for both: process CPU time moves
    assert render_text(metrics) == generate_latest(Frozen(metrics))  # type: ignore[arg-type]

    class Dotted:  # not a legacy name: the library's own escaping, whole
        def collect(self) -> list[GaugeMetricFamily]:
            return [GaugeMetricFamily("with.dot", "utf-8 name", value=1.0)]

    registry.register(Dotted())  # type: ignore[arg-type]
    metrics = list(registry.collect())
    assert render_text(metrics) == generate_latest(Frozen(metrics))  # type: ignore[arg-type]


def test_overlapping_scrapes_share_self_metrics_for_at_most_a_second() -> None:
    snap = snapshot(sas_images=(inventory(range(3)), 3))
    telemetry = Telemetry()
    telemetry.declare("imagesec_api_requests", ("aliyun", "prod", "cn-shanghai", "A"))
    now = [100.0]
    store = ExpositionStore(snap, telemetry, clock=lambda: now[0])

    def calls(body: bytes) -> bytes:
        (line,) = [x for x in body.splitlines() if x.startswith(b"imagesec_api_requests_total{")]
        return line.rsplit(b" ", 1)[1]

    first = store.scrape_parts(accept_gzip=False, shared=False)
    telemetry.inc("imagesec_api_requests", ("aliyun", "prod", "cn-shanghai", "A"))
    now[0] += 0.5
    overlapping = store.scrape_parts(accept_gzip=False, shared=True)
    alone = store.scrape_parts(accept_gzip=False, shared=False)
    assert calls(b"".join(first)) == calls(b"".join(overlapping)) == b"0.0"
    assert calls(b"".join(alone)) == b"1.0"  # a scrape on its own always renders
    telemetry.inc("imagesec_api_requests", ("aliyun", "prod", "cn-shanghai", "A"))
    now[0] += 0.99
    assert calls(b"".join(store.scrape_parts(accept_gzip=False, shared=True))) == b"1.0"
    now[0] += 0.02  # the shared render is a second old: render again
    gz = store.scrape_parts(accept_gzip=True, shared=True)
    assert calls(zlib.decompress(b"".join(gz), 31)) == b"2.0"
    # Scrapes sharing the self-metrics share their compression (and trailer) too ...
    again = store.scrape_parts(accept_gzip=True, shared=True)
    assert again[-1] is gz[-1]
    # ... not after a change of the per-image part, whose CRC and size the trailer carries.
    store.update(snapshot(sas_images=(inventory(range(4)), 4)))
    now[0] += 0.1
    changed = store.scrape_parts(accept_gzip=True, shared=True)
    assert changed[-1] is not gz[-1]
    text = zlib.decompress(b"".join(changed), 31)  # checks the trailer's CRC-32 and size
    assert text.startswith(store.scrape(accept_gzip=False).split(b"# HELP imagesec_up ")[0])


def test_per_source_self_metrics_render_once_per_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """They grow with accounts x regions; a scrape renders them only for a new snapshot."""
    made = []
    collect_sources = HealthCollector.collect_sources

    def counting(snap: Snapshot):  # type: ignore[no-untyped-def]
        made.append(snap)
        return collect_sources(snap)

    monkeypatch.setattr(HealthCollector, "collect_sources", staticmethod(counting))
    first = snapshot(sas_images=(inventory(range(3)), 300))
    store = ExpositionStore(first, Telemetry())
    up = b'imagesec_up{account="prod",provider="aliyun",region="cn-shanghai",source="sas_images"}'
    for _ in range(3):
        assert up + b" 1.0\n" in store.scrape(accept_gzip=False)
    assert made == [first]
    (state,) = first.sources.values()
    failed = Snapshot({state.key: replace(state, up=False)})
    store.update(failed)
    assert up + b" 0.0\n" in store.scrape(accept_gzip=False)  # a new snapshot shows at once
    assert made == [first, failed]


def test_the_benchmark_counts_a_mapped_exposition_file_once() -> None:
    from bench.fleet_bench import memfd_mb

    before = memfd_mb(os.getpid())
    mapped = exposition.map_parts([b"x" * 1_000_000])  # its mapping holds a second descriptor
    assert memfd_mb(os.getpid()) - before == pytest.approx(1.0)
    del mapped


def test_prefixes_are_one_string_with_offsets_and_read_as_each_images_labels() -> None:
    images = [image(n) for n in range(50)] + [ODD, image(7, region="ü")]
    prefixes = exposition.Prefixes(images)
    assert len(prefixes) == len(images)
    assert [prefixes[i] for i in range(len(images))] == [exposition.image_prefix(k) for k in images]
    assert all(type(v) in (str, array) for v in (prefixes._text, prefixes._ends))
