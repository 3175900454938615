"""Benchmark: what a scrape costs with pre-rendered snapshots, against rendering per scrape.

Prints one table. The baseline, measured in the same run on the same data, is what an exporter
that renders with prometheus_client on every scrape would pay ("baseline scrape"); "render" is
what this exporter pays to render a whole fleet from scratch (a swap renders only the sources
whose data changed), in a background thread, with its own renderer;
"scrape" is what a scrape then costs. The ratios matter on a shared, noisy machine, not the
absolute times.

    python bench/bench.py [--images 1000,10000] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

from prometheus_client import CollectorRegistry, generate_latest

from exporter.clouds.aliyun.schemas import ImageInstance
from exporter.clouds.aliyun.source import image_key, instance_samples
from exporter.collector import ImageCollector
from exporter.exposition import ExpositionStore
from exporter.metrics import BASELINE_SEVERITIES, SEVERITIES
from exporter.model import Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry


def fleet(images: int) -> Snapshot:
    """A Sas-shaped fleet: inventory samples plus by-severity findings, as the collectors emit."""
    key = SourceKey("aliyun", "bench", "cn-shanghai", "sas_images")
    samples: list[Sample] = []
    for i in range(images):
        row = ImageInstance.model_validate(
            {
                "Uuid": f"{i:08x}-60aa-4efa-863a-56d72fb0000",
                "RepoNamespace": f"team{i % 40}",
                "RepoName": f"service{i % 400}",
                "Tag": f"1.{i % 17}.{i}",
                "RegionId": "cn-hangzhou",
                "Digest": f"{i:064x}",
                "RegistryType": "acr",
                "RepoType": "private",
                "VulCount": i % 50,
                "AlarmCount": i % 3,
                "Deployed": i % 2,
                "ScaStatus": "SUCCESS",
                "ScaProgress": 100,
                "LastScanTime": 1700000000000 + i,
                "ImageSize": str(10_000_000 + i),
                "ImageCreate": "1600069948849",
            }
        )
        image = image_key(row, "bench", "cn-shanghai")
        samples += instance_samples(row, image)
        samples += [
            Sample("imagesec_image_vulnerabilities_by_severity", image, float(i % 7), (s,))
            for s in SEVERITIES
        ]
        samples += [
            Sample("imagesec_image_baseline_risk_items", image, float(i % 5), (s,))
            for s in BASELINE_SEVERITIES
        ]
    state = SourceState(
        key=key, interval=300, data=SourceData(samples=tuple(samples)), up=True, attempted=True
    )
    return Snapshot({key: state})


def per_scrape_render(snapshot: Snapshot) -> bytes:
    """The baseline: a prometheus_client collector rendered by generate_latest on each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ImageCollector(lambda: snapshot))
    return generate_latest(registry)


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="1000,5000,10000")
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    header = (
        f"{'images':>7} {'series':>8} {'text MB':>8} {'gzip MB':>8} {'render s':>9} "
        f"{'baseline scrape ms':>19} {'scrape ms':>10} {'gzip scrape ms':>15} {'speed-up':>9} "
        f"{'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for images in (int(n) for n in args.images.split(",")):
        snapshot = fleet(images)
        series = sum(len(s.data.samples) for s in snapshot.sources.values() if s.data)
        gc.collect()
        tracemalloc.start()
        store = ExpositionStore(snapshot, Telemetry())  # renders once, as a snapshot swap does
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # A swap with unchanged data renders nothing: time a render from scratch instead.
        render = timed(lambda: ExpositionStore(snapshot, Telemetry()), 3)  # noqa: B023
        baseline = timed(lambda: per_scrape_render(snapshot), 3)  # noqa: B023
        plain = timed(lambda: store.scrape(accept_gzip=False), args.scrapes)  # noqa: B023
        gz = timed(lambda: store.scrape(accept_gzip=True), args.scrapes)  # noqa: B023
        text = store.scrape(accept_gzip=False)
        zipped = store.scrape(accept_gzip=True)
        print(
            f"{images:>7} {series:>8} {len(text) / 1e6:>8.1f} {len(zipped) / 1e6:>8.2f} "
            f"{render:>9.2f} {baseline * 1000:>19.0f} {plain * 1000:>10.2f} {gz * 1000:>15.2f} "
            f"{baseline / plain:>8.0f}x {peak / 1e6:>8.0f}"
        )


if __name__ == "__main__":
    main()
