"""Per-image API calls: what the caches and the vulnerability counting cost, in calls.

Runs the Sas and TCSS collectors in-process against the simulator (its fleet clock frozen
or stepped, no rate limits) and counts the per-image calls they make:

- first pass: calls per image, against the cheapest the vendor API allows;
- steady state with nothing changed (must be zero);
- 1% of the images rescanned: calls against the changed images' minimum (target <= 1.1x);
- two hours of scans running and finishing, a refresh a minute: calls against finished scans,
  and what keying on the scan stage (the old cache key) would have cost.

Prints a table and writes JSON. Companion of bench/bench.py (render and scrape costs).

    python bench/fetch_cost.py [--images 1000] [--churn-images 200] [--json fetch_cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import httpx

from exporter.clouds.aliyun.api import SasClient
from exporter.clouds.aliyun.findings import SasBaselineSource, SasVulnerabilitiesSource
from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.aliyun.source import SasImagesSource
from exporter.clouds.tencent.api import TcssClient
from exporter.clouds.tencent.signing import TC3Auth
from exporter.clouds.tencent.source import TcssImageDetailSource, TcssImagesSource
from exporter.model import ImageRef, SourceKey
from exporter.refresh import Refresher, Source
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Simulator,
)
from exporter.telemetry import Telemetry

SITE, REGION = "cn-shanghai", "ap-guangzhou"
PER_IMAGE = {
    "aliyun": ("DescribeImageBaselineCheckResult", "DescribeImageVulList"),
    "tencent": ("DescribeAssetImageDetail",),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def no_sleep(seconds: float) -> None:
    """Client pacing must not move the fleet's clock."""


class Harness:
    """The inventory and per-image collectors of one provider, on one simulator."""

    def __init__(self, sim: Simulator, clock: Clock, provider: str) -> None:
        self.provider = provider
        self.telemetry = Telemetry()
        region = SITE if provider == "aliyun" else REGION
        self.region = region

        def key(name: str) -> SourceKey:
            return SourceKey(provider, "bench", region, name)

        self.inventory = key("sas_images" if provider == "aliyun" else "tcss_images")
        sources: list[Source]
        if provider == "aliyun":
            nonces = itertools.count()
            client = SasClient(
                httpx.AsyncClient(transport=sim.transport("aliyun")),
                ACS3Auth(
                    DEMO_ALIYUN_ACCESS_KEY_ID,
                    DEMO_ALIYUN_ACCESS_KEY_SECRET,
                    clock=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC),
                    nonce=lambda: f"n{next(nonces)}",
                ),
                base_url="https://tds.cn-shanghai.aliyuncs.com",
                account="bench",
                region=region,
                telemetry=self.telemetry,
                rate=1e6,
                sleep=no_sleep,
            )
            common: dict[str, Any] = {"depends_on": self.inventory, "concurrency": 16}
            sources = [
                SasImagesSource(self.inventory, 300, client),
                SasBaselineSource(
                    key("sas_baseline"), 900, client, self.telemetry, timer=clock, **common
                ),
                SasVulnerabilitiesSource(
                    key("sas_vulnerabilities"), 900, client, self.telemetry, timer=clock, **common
                ),
            ]
        else:
            tclient = TcssClient(
                httpx.AsyncClient(transport=sim.transport("tencent")),
                TC3Auth(DEMO_TENCENT_SECRET_ID, DEMO_TENCENT_SECRET_KEY, clock=clock),
                base_url="https://tcss.tencentcloudapi.com",
                account="bench",
                region=region,
                telemetry=self.telemetry,
                rate=1e6,
                sleep=no_sleep,
                clock=clock,
            )
            sources = [
                TcssImagesSource(self.inventory, 300, tclient),
                TcssImageDetailSource(
                    key("tcss_image_detail"),
                    300,
                    tclient,
                    depends_on=self.inventory,
                    telemetry=self.telemetry,
                    concurrency=16,
                    timer=clock,
                ),
            ]
        self.refresher = Refresher(sources, telemetry=self.telemetry, clock=clock)

    async def refresh(self) -> dict[str, ImageRef]:
        snapshot = await self.refresher.run_once()
        down = [str(k) for k, s in snapshot.sources.items() if not s.up]
        if down:
            raise RuntimeError(f"sources down: {down}")
        data = snapshot.sources[self.inventory].data
        assert data is not None
        return {ref.native_id: ref for ref in data.images}

    def lookups(self) -> float:
        """Per-image lookups made (cache misses), over every per-image collector."""
        return sum(
            v
            for labels, v in self.telemetry.values("imagesec_detail_cache_requests").items()
            if labels[-1] == "miss"
        )

    def calls(self) -> float:
        return sum(
            self.telemetry.value("imagesec_api_requests", (self.provider, "bench", self.region, a))
            for a in PER_IMAGE[self.provider]
        )


def vul_minimum(vulnerabilities: int) -> int:
    """Fewest DescribeImageVulList calls for one image: pages of 100 records, at most 3."""
    return min(3, max(1, math.ceil(vulnerabilities / 100)))


async def steady(provider: str, images: int) -> dict[str, Any]:
    clock = Clock()
    sim = Simulator(seed=7, images_per_region=images, clock=clock, rate_limit=False)
    h = Harness(sim, clock, provider)
    site = SITE if provider == "aliyun" else REGION
    specs = {s.key: s for s in sim.fleet.images(provider, site)}  # type: ignore[arg-type]

    def minimum_of(keys: list[str]) -> int:
        if provider != "aliyun":
            return len(keys)  # one DescribeAssetImageDetail
        states = [sim.fleet.state(specs[k], clock()) for k in keys]
        return sum(1 + vul_minimum(s.findings.vul_count) for s in states)

    await h.refresh()
    first = h.calls()
    first_min = minimum_of(list(specs))
    # Before: Sas baseline + three Necessity-filtered counts per image; TCSS one detail.
    old_first = 4 * len(specs) if provider == "aliyun" else len(specs)
    await h.refresh()
    unchanged = h.calls() - first
    changed = sim.fleet.rescan(provider, max(1, images // 100), site=site)  # type: ignore[arg-type]
    before = h.calls()
    await h.refresh()
    rescan = h.calls() - before
    minimum = minimum_of(changed)
    return {
        "provider": provider,
        "images": images,
        "first_pass_calls": first,
        "first_pass_minimum": first_min,
        "first_pass_calls_before": old_first,
        "unchanged_calls": unchanged,
        "rescanned": len(changed),
        "rescan_calls": rescan,
        "rescan_minimum": minimum,
        "rescan_ratio": rescan / minimum,
    }


async def churn(provider: str, images: int, hours: float, step: float) -> dict[str, Any]:
    clock = Clock()
    sim = Simulator(seed=9, images_per_region=images, clock=clock, rate_limit=False)
    h = Harness(sim, clock, provider)
    before = await h.refresh()
    start, start_lookups = h.calls(), h.lookups()
    finished = stage_keyed = 0
    running = 0
    for _ in range(int(hours * 3600 / step)):
        clock.now += step
        after = await h.refresh()
        for i, ref in after.items():
            old = before.get(i)
            if old is None:
                continue
            finished += old.scan_marker != ref.scan_marker
            stage_keyed += (old.scan_marker, old.stage) != (ref.scan_marker, ref.stage)
            running += ref.stage in ("scanning",)
        before = after
    calls, lookups = h.calls() - start, h.lookups() - start_lookups
    # Before: Sas keyed on ScaStatus (a lookup per collector for every stage a refresh saw);
    # TCSS re-fetched the detail of every running scan on every refresh.
    old = stage_keyed * 2 if provider == "aliyun" else finished + running
    return {
        "provider": provider,
        "images": images,
        "hours": hours,
        "finished_scans": finished,
        "calls": calls,
        "lookups": lookups,
        "lookups_before": old,
        "over_fetch_before": old / max(1, lookups),
    }


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, Callable[[Any], str]]]) -> str:
    head = [c[0] for c in columns]
    body = [[fmt(r[key]) for _, key, fmt in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    steady_rows = [await steady(p, args.images) for p in ("aliyun", "tencent")]
    churn_rows = [
        await churn(p, args.churn_images, args.hours, 60.0) for p in ("aliyun", "tencent")
    ]
    return {"steady": steady_rows, "churn": churn_rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="images per site/region")
    parser.add_argument("--churn-images", type=int, default=200)
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours of churn")
    parser.add_argument("--json", default="fetch_cost.json", help="where to write the results")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    n, f = str, (lambda v: f"{v:.2f}")
    print(
        table(
            result["steady"],
            [
                ("provider", "provider", n),
                ("images", "images", n),
                ("first pass", "first_pass_calls", lambda v: f"{v:.0f}"),
                ("minimum", "first_pass_minimum", n),
                ("before", "first_pass_calls_before", n),
                ("unchanged", "unchanged_calls", lambda v: f"{v:.0f}"),
                ("rescanned", "rescanned", n),
                ("rescan calls", "rescan_calls", lambda v: f"{v:.0f}"),
                ("minimum", "rescan_minimum", n),
                ("ratio", "rescan_ratio", f),
            ],
        )
    )
    print()
    print(
        table(
            result["churn"],
            [
                ("provider", "provider", n),
                ("images", "images", n),
                ("hours", "hours", n),
                ("finished scans", "finished_scans", n),
                ("calls", "calls", lambda v: f"{v:.0f}"),
                ("lookups", "lookups", lambda v: f"{v:.0f}"),
                ("lookups before", "lookups_before", n),
                ("over-fetch before", "over_fetch_before", f),
            ],
        )
    )
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
