"""Sas findings collectors against the simulator: consistent data, O(N) calls after a rescan."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.clouds.aliyun.api import SasClient
from exporter.clouds.aliyun.findings import (
    SasBaselineSource,
    SasImageRiskSource,
    SasMaliciousSource,
    SasVulnerabilitiesSource,
)
from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.aliyun.source import SasImagesSource
from exporter.collector import ImageCollector
from exporter.model import ImageKey, Snapshot, SourceKey
from exporter.normalise import SAS_MALWARE_STATUS, SAS_NECESSITY_SEVERITY
from exporter.refresh import Refresher, Source
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    Simulator,
    SimulatorServer,
)
from exporter.simulator.fleet import ImageState
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

ACCOUNT, REGION = "demo", "cn-shanghai"
PER_IMAGE = ("DescribeImageBaselineCheckResult", "DescribeImageVulList")
ACCOUNT_WIDE = ("DescribeImageInstances", "DescribeAffectedMaliciousFileImages", "ListImageRisk")


def skey(source: str) -> SourceKey:
    return SourceKey("aliyun", ACCOUNT, REGION, source)


async def no_sleep(seconds: float) -> None:
    """The client's rate-limit and retry waits; the fleet's clock must not move with them."""


class Exporter:
    """The five Sas collectors of one (account, region) on one client, as production wires them."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, clock: FakeClock) -> None:
        nonces = itertools.count()
        auth = ACS3Auth(
            DEMO_ALIYUN_ACCESS_KEY_ID,
            DEMO_ALIYUN_ACCESS_KEY_SECRET,
            clock=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC),
            nonce=lambda: f"nonce-{next(nonces)}",
        )
        self.telemetry = Telemetry()
        client = SasClient(
            http,
            auth,
            base_url=base_url,
            account=ACCOUNT,
            region=REGION,
            telemetry=self.telemetry,
            rate=1000.0,
            sleep=no_sleep,
        )
        inventory = skey("sas_images")
        per_image: dict[str, Any] = {
            "depends_on": inventory,
            "concurrency": 8,
            "timer": clock,
        }
        self.sources: list[Source] = [
            SasImagesSource(inventory, 300, client),
            SasBaselineSource(skey("sas_baseline"), 900, client, self.telemetry, **per_image),
            SasVulnerabilitiesSource(
                skey("sas_vulnerabilities"), 900, client, self.telemetry, **per_image
            ),
            SasMaliciousSource(skey("sas_malicious"), 900, client, depends_on=inventory),
            SasImageRiskSource(skey("sas_image_risk"), 900, client),
        ]
        self.refresher = Refresher(self.sources, telemetry=self.telemetry, clock=clock)

    async def refresh(self) -> Snapshot:
        snapshot = await self.refresher.run_once()
        down = {k.source: s.last_error for k, s in snapshot.sources.items() if not s.up}
        assert not down
        return snapshot

    def requests(self) -> dict[str, float]:
        return {
            labels[3]: value
            for labels, value in self.telemetry.values("imagesec_api_requests").items()
        }


def series(snapshot: Snapshot, metric: str) -> dict[ImageKey, dict[tuple[str, ...], float]]:
    out: dict[ImageKey, dict[tuple[str, ...], float]] = {}
    for state in snapshot.sources.values():
        for sample in state.data.samples if state.data else ():
            if sample.metric == metric:
                out.setdefault(sample.image, {})[sample.extra] = sample.value
    return out


def truth(sim: Simulator, clock: FakeClock) -> dict[str, ImageState]:
    """What the simulated scanner knows, by image Uuid."""
    specs = sim.fleet.images("aliyun", "cn-shanghai")
    return {spec.uuid: sim.fleet.state(spec, clock()) for spec in specs}


def vul_calls(vulnerabilities: int) -> int:
    """DescribeImageVulList calls one image costs: pages of 100 records, at most three."""
    return min(3, max(1, -(-vulnerabilities // 100)))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator(seed=11, images_per_region=60, clock=clock, rate_limit=False)


async def test_every_collector_agrees_with_the_fleet(sim: Simulator, clock: FakeClock) -> None:
    async with httpx.AsyncClient(transport=sim.transport("aliyun")) as http:
        exporter = Exporter(http, "https://tds.cn-shanghai.aliyuncs.com", clock)
        snapshot = await exporter.refresh()
    states = truth(sim, clock)
    inventory = snapshot.sources[skey("sas_images")].data
    assert inventory is not None
    keys = {ref.native_id: ref.key for ref in inventory.images}
    assert set(keys) == set(states) and len(keys) == 60

    # The per-image series join the inventory's on every identity label.
    info = series(snapshot, "imagesec_image_info")
    for metric in (
        "imagesec_image_baseline_risk_items",
        "imagesec_image_vulnerabilities_by_severity",
        "imagesec_image_malicious_samples_all",
    ):
        assert set(series(snapshot, metric)) == set(info), metric

    baseline = series(snapshot, "imagesec_image_baseline_risk_items")
    by_severity = series(snapshot, "imagesec_image_vulnerabilities_by_severity")
    totals = series(snapshot, "imagesec_image_vulnerabilities")
    malware = series(snapshot, "imagesec_image_malicious_samples")
    totals_malware = series(snapshot, "imagesec_image_malicious_samples_all")
    for uuid, state in states.items():
        key, findings = keys[uuid], state.findings
        want = {
            ("high",): sum(b.high for b in findings.baseline),
            ("medium",): sum(b.middle for b in findings.baseline),
            ("low",): sum(b.low for b in findings.baseline),
        }
        assert baseline[key] == want
        assert sum(baseline[key].values()) == findings.hc_count
        necessity: Counter[str] = Counter(v.necessity for v in sim.fleet.vulns(state))
        want = {(sev,): necessity[n] for n, sev in SAS_NECESSITY_SEVERITY.items()}
        assert by_severity[key] == want
        assert sum(by_severity[key].values()) == totals[key][()]  # = VulCount
        files = Counter((m.level, SAS_MALWARE_STATUS[m.status]) for m in findings.malware)
        assert malware.get(key, {}) == files  # only the cells with files
        assert totals_malware[key][()] == sum(files.values())

    # ListImageRisk covers the images in use: same keys, numbers that agree with the rest.
    in_use = series(snapshot, "imagesec_image_in_use_findings")
    registration = series(snapshot, "imagesec_image_registration_status")
    deployed = {keys[u] for u, s in states.items() if s.spec.deployed}
    assert set(in_use) == set(registration) == deployed
    for key in deployed:
        assert in_use[key][("vulnerability",)] == totals[key][()]
        assert in_use[key][("baseline",)] == sum(baseline[key].values())
        cells = malware.get(key, {}).items()
        unhandled = sum(n for (_, status), n in cells if status == "unhandled")
        assert in_use[key][("new_suspicious",)] == unhandled
        scanned = states[key.image_id].phase != "never"
        assert registration[key] == {("in_sas",) if scanned else ("not_in_sas",): 1.0}

    # ...and they render: one sample through the real collector.
    registry = CollectorRegistry()
    registry.register(ImageCollector(lambda: snapshot))
    key, values = next(iter(baseline.items()))
    names = ("provider", "account", "region", "repo_namespace", "repo", "tag", "image_id")
    labels = dict(zip(names, key.labels(), strict=True)) | {"severity": "high"}
    value = registry.get_sample_value("imagesec_image_baseline_risk_items", labels)
    assert value == values[("high",)]


@pytest.mark.parametrize("rescanned", [1, 4])
async def test_a_rescan_of_n_images_costs_o_n_per_image_calls(
    sim: Simulator, clock: FakeClock, rescanned: int
) -> None:
    async with httpx.AsyncClient(transport=sim.transport("aliyun")) as http:
        exporter = Exporter(http, "https://tds.cn-shanghai.aliyuncs.com", clock)
        await exporter.refresh()
        first = exporter.requests()
        assert first["DescribeImageBaselineCheckResult"] == 60
        before = truth(sim, clock)
        want = sum(vul_calls(s.findings.vul_count) for s in before.values())
        assert first["DescribeImageVulList"] == want < 2 * 60

        # Unchanged fleet: no per-image calls at all; the account-wide lists as usual.
        await exporter.refresh()
        second = exporter.requests()
        for action in PER_IMAGE:
            assert second[action] == first[action], action
        for action in ACCOUNT_WIDE:
            assert second[action] == 2 * first[action], action

        changed = set(sim.fleet.rescan("aliyun", rescanned))
        snapshot = await exporter.refresh()
        third = exporter.requests()
    baseline_calls = "DescribeImageBaselineCheckResult"
    assert third[baseline_calls] - second[baseline_calls] == rescanned
    states = truth(sim, clock)
    want = sum(vul_calls(states[u].findings.vul_count) for u in changed)
    assert third["DescribeImageVulList"] - second["DescribeImageVulList"] == want
    hits = exporter.telemetry.value(
        "imagesec_detail_cache_requests", (*skey("sas_vulnerabilities").labels(), "hit")
    )
    assert hits == 60 + 60 - rescanned
    # The new numbers are in: the rescanned images' totals changed, and the breakdown follows.
    by_severity = series(snapshot, "imagesec_image_vulnerabilities_by_severity")
    totals = series(snapshot, "imagesec_image_vulnerabilities")
    for key in by_severity:
        assert sum(by_severity[key].values()) == totals[key][()]
        if key.image_id in changed:
            assert totals[key][()] == states[key.image_id].findings.vul_count


async def test_the_collectors_over_real_http(clock: FakeClock) -> None:
    sim = Simulator(seed=5, images_per_region=12, clock=clock, rate_limit=False)
    with SimulatorServer(sim, "aliyun") as server:
        async with httpx.AsyncClient(timeout=10) as http:
            exporter = Exporter(http, f"http://{server.address}", clock)
            snapshot = await exporter.refresh()
    assert len(series(snapshot, "imagesec_image_baseline_risk_items")) == 12
    want = sum(vul_calls(s.findings.vul_count) for s in truth(sim, clock).values())
    assert sim.request_counts[("aliyun", "DescribeImageVulList")] == want
