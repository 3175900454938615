"""Cost proportional to change, against the simulator: per-image calls follow finished scans.

Steady state with nothing changed costs no per-image call; 1% of the fleet rescanned costs at
most 1.1 times the changed images' minimum; a fleet whose scans run and finish over two hours
costs one lookup per finished scan, not one per scan stage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import itertools
from pathlib import Path

import httpx
import pytest

from exporter.clouds.aliyun.api import SasClient
from exporter.clouds.aliyun.findings import SasBaselineSource, SasVulnerabilitiesSource
from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.aliyun.source import SasImagesSource
from exporter.clouds.http import RetryPolicy
from exporter.clouds.tencent.api import TcssClient
from exporter.clouds.tencent.signing import TC3Auth
from exporter.clouds.tencent.source import TcssImageDetailSource, TcssImagesSource
from exporter.model import ImageRef, SourceKey
from exporter.refresh import Refresher
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Simulator,
)
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

SAS_SITE, TCSS_REGION = "cn-shanghai", "ap-guangzhou"
SAS_PER_IMAGE = ("DescribeImageBaselineCheckResult", "DescribeImageVulList")
FLEET = 200  # per site: 1% is two images


async def no_sleep(seconds: float) -> None:
    """Rate-limit waits must not move the fleet's clock (the fleet would change)."""


def vul_calls(vulnerabilities: int) -> int:
    """The fewest DescribeImageVulList calls an image needs: pages of 100, at most three."""
    return min(3, max(1, -(-vulnerabilities // 100)))


class SasExporter:
    """sas_images with the two per-image collectors of one site, as production wires them."""

    def __init__(self, sim: Simulator, clock: FakeClock) -> None:
        nonces = itertools.count()
        auth = ACS3Auth(
            DEMO_ALIYUN_ACCESS_KEY_ID,
            DEMO_ALIYUN_ACCESS_KEY_SECRET,
            clock=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC),
            nonce=lambda: f"nonce-{next(nonces)}",
        )
        self.telemetry = Telemetry()
        client = SasClient(
            httpx.AsyncClient(transport=sim.transport("aliyun")),
            auth,
            base_url="https://tds.cn-shanghai.aliyuncs.com",
            account="demo",
            region=SAS_SITE,
            telemetry=self.telemetry,
            rate=1000.0,
            sleep=no_sleep,
        )
        self.inventory = SourceKey("aliyun", "demo", SAS_SITE, "sas_images")
        kwargs = {"depends_on": self.inventory, "concurrency": 8, "timer": clock}
        self.refresher = Refresher(
            [
                SasImagesSource(self.inventory, 300, client),
                SasBaselineSource(
                    SourceKey("aliyun", "demo", SAS_SITE, "sas_baseline"),
                    900,
                    client,
                    self.telemetry,
                    **kwargs,  # type: ignore[arg-type]
                ),
                SasVulnerabilitiesSource(
                    SourceKey("aliyun", "demo", SAS_SITE, "sas_vulnerabilities"),
                    900,
                    client,
                    self.telemetry,
                    **kwargs,  # type: ignore[arg-type]
                ),
            ],
            telemetry=self.telemetry,
            clock=clock,
        )

    async def refresh(self) -> dict[str, ImageRef]:
        snapshot = await self.refresher.run_once()
        assert all(s.up for s in snapshot.sources.values())
        data = snapshot.sources[self.inventory].data
        assert data is not None
        return {ref.native_id: ref for ref in data.images}

    def calls(self, action: str) -> float:
        return self.telemetry.value("imagesec_api_requests", ("aliyun", "demo", SAS_SITE, action))

    def per_image_calls(self) -> float:
        return sum(self.calls(a) for a in SAS_PER_IMAGE)


class TcssExporter:
    """tcss_images and tcss_image_detail of one region."""

    def __init__(self, sim: Simulator, clock: FakeClock) -> None:
        self.telemetry = Telemetry()
        client = TcssClient(
            httpx.AsyncClient(transport=sim.transport("tencent")),
            TC3Auth(DEMO_TENCENT_SECRET_ID, DEMO_TENCENT_SECRET_KEY, clock=clock),
            base_url="https://tcss.tencentcloudapi.com",
            account="demo",
            region=TCSS_REGION,
            telemetry=self.telemetry,
            sleep=no_sleep,
            clock=clock,
            rate=1000.0,
            retry=RetryPolicy(max_attempts=2),
        )
        self.inventory = SourceKey("tencent", "demo", TCSS_REGION, "tcss_images")
        details = SourceKey("tencent", "demo", TCSS_REGION, "tcss_image_detail")
        self.refresher = Refresher(
            [
                TcssImagesSource(self.inventory, 300, client),
                TcssImageDetailSource(
                    details,
                    300,
                    client,
                    depends_on=self.inventory,
                    telemetry=self.telemetry,
                    timer=clock,
                ),
            ],
            telemetry=self.telemetry,
            clock=clock,
        )

    async def refresh(self) -> dict[str, ImageRef]:
        snapshot = await self.refresher.run_once()
        assert all(s.up for s in snapshot.sources.values())
        data = snapshot.sources[self.inventory].data
        assert data is not None
        return {ref.native_id: ref for ref in data.images}

    def detail_calls(self) -> float:
        labels = ("tencent", "demo", TCSS_REGION, "DescribeAssetImageDetail")
        return self.telemetry.value("imagesec_api_requests", labels)


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator(seed=3, images_per_region=FLEET, clock=clock, rate_limit=False)


async def test_sas_steady_state_and_one_percent_rescanned(sim: Simulator, clock: FakeClock) -> None:
    exporter = SasExporter(sim, clock)
    await exporter.refresh()
    first = exporter.per_image_calls()
    assert exporter.calls("DescribeImageBaselineCheckResult") == FLEET

    await exporter.refresh()
    assert exporter.per_image_calls() == first  # nothing changed: no per-image call

    changed = sim.fleet.rescan("aliyun", FLEET // 100, site=SAS_SITE)
    await exporter.refresh()
    cost = exporter.per_image_calls() - first
    specs = {s.uuid: s for s in sim.fleet.images("aliyun", SAS_SITE)}
    minimum = sum(
        1 + vul_calls(sim.fleet.state(specs[u], clock()).findings.vul_count) for u in changed
    )
    assert 0 < cost <= 1.1 * minimum


async def test_tcss_steady_state_and_one_percent_rescanned(
    sim: Simulator, clock: FakeClock
) -> None:
    exporter = TcssExporter(sim, clock)
    await exporter.refresh()
    assert exporter.detail_calls() == FLEET
    await exporter.refresh()
    assert exporter.detail_calls() == FLEET
    changed = sim.fleet.rescan("tencent", FLEET // 100, site=TCSS_REGION)
    await exporter.refresh()
    assert 0 < exporter.detail_calls() - FLEET <= 1.1 * len(changed)


@pytest.mark.parametrize("cloud", ["aliyun", "tencent"])
async def test_a_walk_of_an_unchanged_fleet_makes_no_new_image_objects(
    sim: Simulator, clock: FakeClock, cloud: str
) -> None:
    # Each walk made every image's key and ref anew, and dropped them when the data compared
    # equal: at 50k images, ~150k objects a cycle among which longer-lived ones got placed.
    exporter = SasExporter(sim, clock) if cloud == "aliyun" else TcssExporter(sim, clock)
    site = SAS_SITE if cloud == "aliyun" else TCSS_REGION
    inventory = next(s for s in exporter.refresher.sources if s.key == exporter.inventory)
    first = {ref.native_id: ref for ref in (await inventory.refresh(None)).images}
    second = {ref.native_id: ref for ref in (await inventory.refresh(None)).images}
    assert len(second) == FLEET and all(second[n] is first[n] for n in first)
    changed = sim.fleet.rescan(cloud, 2, site=site)  # type: ignore[arg-type]
    third = {ref.native_id: ref for ref in (await inventory.refresh(None)).images}
    assert {n for n in third if third[n] is not second[n]} == set(changed)
    assert all(third[n].scan_marker != second[n].scan_marker for n in changed)


async def test_sas_running_scans_cost_one_lookup_per_finished_scan(clock: FakeClock) -> None:
    sim = Simulator(seed=4, images_per_region=40, clock=clock, rate_limit=False)
    exporter = SasExporter(sim, clock)
    before = await exporter.refresh()
    markers = stages = 0
    for _ in range(120):  # two hours, a refresh a minute
        clock.advance(60)
        after = await exporter.refresh()
        markers += sum(before[u].scan_marker != ref.scan_marker for u, ref in after.items())
        stages += sum(
            (before[u].scan_marker, before[u].stage) != (ref.scan_marker, ref.stage)
            for u, ref in after.items()
        )
        before = after
    baseline = exporter.calls("DescribeImageBaselineCheckResult") - 40
    # One lookup per finished scan: exactly the scan-marker changes the inventory showed...
    assert baseline == markers > 0
    # ...where keying on ScaStatus, as before, cost one per stage the refreshes saw.
    assert stages >= 3 * markers


async def test_tcss_running_scans_cost_at_most_one_lookup_per_stage_change(
    clock: FakeClock,
) -> None:
    sim = Simulator(seed=4, images_per_region=40, clock=clock, rate_limit=False)
    exporter = TcssExporter(sim, clock)
    before = await exporter.refresh()
    markers = stage_moves = running = 0
    for _ in range(120):
        clock.advance(60)
        after = await exporter.refresh()
        markers += sum(before[i].scan_marker != ref.scan_marker for i, ref in after.items())
        stage_moves += sum(
            before[i].scan_marker == ref.scan_marker and before[i].stage != ref.stage
            for i, ref in after.items()
        )
        running += sum(ref.stage == "scanning" for ref in after.values())
        before = after
    calls = exporter.detail_calls() - 40
    # A finished scan costs one call, a scan starting at most one more (after the floor).
    assert markers <= calls <= markers + stage_moves
    # Before, every running scan's detail was fetched on every refresh.
    assert calls < markers + running


async def test_the_fetch_cost_benchmark_runs_short_and_meets_its_targets() -> None:
    """bench/fetch_cost.py, bounded: the script keeps working and its targets hold."""
    path = Path(__file__).resolve().parent.parent / "bench" / "fetch_cost.py"
    spec = importlib.util.spec_from_file_location("fetch_cost", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(images=100, churn_images=20, hours=0.25)
    result = await bench.run(args)
    for row in result["steady"]:
        assert row["unchanged_calls"] == 0
        assert row["first_pass_calls"] <= 1.1 * row["first_pass_minimum"]
        assert 0 < row["rescan_calls"] <= 1.1 * row["rescan_minimum"]
    aliyun, tencent = result["churn"]
    assert aliyun["lookups"] == 2 * aliyun["finished_scans"]  # one per collector and scan
    assert tencent["lookups"] <= tencent["lookups_before"]
