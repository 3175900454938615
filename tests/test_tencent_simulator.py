"""TCSS collectors against the simulator: through its transport, and once over loopback HTTP."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from exporter.clouds.http import RetryPolicy, TokenBucket
from exporter.clouds.tencent.api import TcssClient, describe_asset_image_list
from exporter.clouds.tencent.signing import TC3Auth
from exporter.clouds.tencent.source import TcssImageDetailSource, TcssImagesSource
from exporter.config import ResolvedCredentials, parse_config
from exporter.errors import AuthError
from exporter.model import ImageRef, Snapshot, SourceKey
from exporter.refresh import Refresher
from exporter.simulator import (
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Fault,
    Simulator,
    SimulatorServer,
)
from exporter.sources import build_sources
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock, fleet_now

REGION = "ap-guangzhou"
LIST = "DescribeAssetImageList"
DETAIL = "DescribeAssetImageDetail"
IMAGES = SourceKey("tencent", "demo", REGION, "tcss_images")
DETAILS = SourceKey("tencent", "demo", REGION, "tcss_image_detail")
PER_REGION = 30


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator(seed=11, images_per_region=PER_REGION, clock=clock)


def make_client(
    sim: Simulator,
    clock: FakeClock,
    telemetry: Telemetry,
    *,
    secret_key: str = "",
    region: str = REGION,
    buckets: dict[str, TokenBucket] | None = None,
) -> TcssClient:
    return TcssClient(
        httpx.AsyncClient(transport=sim.transport("tencent")),
        TC3Auth(DEMO_TENCENT_SECRET_ID, secret_key or DEMO_TENCENT_SECRET_KEY, clock=clock),
        base_url="https://tcss.tencentcloudapi.com",
        account="demo",
        region=region,
        telemetry=telemetry,
        buckets=buckets,
        sleep=clock.sleep,
        clock=clock,
        retry=RetryPolicy(max_attempts=4),
    )


def make_refresher(sim: Simulator, clock: FakeClock, telemetry: Telemetry) -> Refresher:
    client = make_client(sim, clock, telemetry)
    images = TcssImagesSource(IMAGES, 300, client)
    details = TcssImageDetailSource(
        DETAILS, 300, client, depends_on=IMAGES, telemetry=telemetry, timer=clock
    )
    return Refresher([images, details], telemetry=telemetry)


def detail_calls(telemetry: Telemetry) -> float:
    return telemetry.value("imagesec_api_requests", ("tencent", "demo", REGION, DETAIL))


def refs(snapshot: Snapshot) -> dict[str, ImageRef]:
    data = snapshot.sources[IMAGES].data
    assert data is not None
    return {ref.native_id: ref for ref in data.images}


def changed(before: dict[str, ImageRef], after: dict[str, ImageRef]) -> set[str]:
    return {
        i for i, ref in after.items() if i not in before or before[i].scan_marker != ref.scan_marker
    }


async def test_inventory_and_details_match_the_simulated_fleet(
    sim: Simulator, clock: FakeClock
) -> None:
    telemetry = Telemetry()
    snapshot = await make_refresher(sim, clock, telemetry).run_once()
    assert snapshot.sources[IMAGES].up and snapshot.sources[DETAILS].up
    fleet_ids = {spec.key for spec in sim.fleet.images("tencent", REGION)}
    assert len(fleet_ids) == PER_REGION
    assert set(refs(snapshot)) == fleet_ids
    details = snapshot.sources[DETAILS].data
    assert details is not None
    assert {ref.native_id for ref in details.images} == fleet_ids
    assert detail_calls(telemetry) == PER_REGION
    assert sim.request_counts[("tencent", DETAIL)] == PER_REGION
    # Every detail call passed the simulator's 20/s flow control: the client paces itself.
    assert not telemetry.values("imagesec_api_request_errors")


async def test_rescan_costs_one_detail_call_per_changed_image(
    sim: Simulator, clock: FakeClock
) -> None:
    telemetry = Telemetry()
    refresher = make_refresher(sim, clock, telemetry)
    first = await refresher.run_once()
    calls = detail_calls(telemetry)

    # Within the stage floor (the clock only moves by the client's pacing), an image costs a
    # call only when its finished scan or counts changed: running scans are not re-fetched.
    second = await refresher.run_once()
    expected = changed(refs(first), refs(second))
    assert detail_calls(telemetry) - calls == len(expected)
    assert len(expected) < PER_REGION // 10  # steady state: a small fraction of the fleet
    calls = detail_calls(telemetry)

    rescanned = set(sim.fleet.rescan("tencent", 5, site=REGION))
    third = await refresher.run_once()
    assert rescanned <= changed(refs(second), refs(third))
    expected = changed(refs(second), refs(third))
    assert detail_calls(telemetry) - calls == len(expected)
    assert 5 <= len(expected) < 5 + PER_REGION // 10
    assert third.sources[DETAILS].up


async def test_simulated_throttling_is_retried(sim: Simulator, clock: FakeClock) -> None:
    sim.faults.add(Fault(kind="throttle", cloud="tencent", action=LIST, times=2))
    telemetry = Telemetry()
    rows = await describe_asset_image_list(make_client(sim, clock, telemetry))
    assert len(rows) == PER_REGION
    errors = telemetry.values("imagesec_api_request_errors")
    assert errors == {("tencent", "demo", REGION, LIST, "RequestLimitExceeded"): 2}


async def test_simulator_rejects_a_wrong_key_with_auth_error(
    sim: Simulator, clock: FakeClock
) -> None:
    telemetry = Telemetry()
    client = make_client(sim, clock, telemetry, secret_key="wrong")
    with pytest.raises(AuthError) as caught:
        await describe_asset_image_list(client)
    assert caught.value.code == "AuthFailure.SignatureFailure"
    assert sim.request_counts[("tencent", LIST)] == 1


async def test_both_collectors_over_a_real_loopback_socket() -> None:
    # Production wiring end to end: config endpoint override, tcss_client, real clocks, and
    # the demo's fleet size, at which two regions with a 20/s limiter each would trip the
    # per-account quota (RequestLimitExceeded): the regions of one account share one limiter.
    sim = Simulator(seed=5, images_per_region=24, fleet_clock=fleet_now)
    with SimulatorServer(sim, "tencent") as server:
        config = parse_config(
            {
                "accounts": [
                    {
                        "name": "demo",
                        "provider": "tencent",
                        "regions": [REGION, "ap-singapore"],
                        "endpoint": f"http://{server.address}",
                    }
                ]
            }
        )
        creds = ResolvedCredentials(
            DEMO_TENCENT_SECRET_ID, SecretStr(DEMO_TENCENT_SECRET_KEY), None, "config"
        )
        telemetry = Telemetry()
        async with httpx.AsyncClient(timeout=10) as http:
            sources = build_sources(config, {("tencent", "demo"): creds}, telemetry, http)
            snapshot = await Refresher(sources, telemetry=telemetry).run_once()
    assert len(snapshot.sources) == 4
    for key, state in snapshot.sources.items():
        assert state.up, (key, state.last_error)
        assert state.data is not None
        fleet = {spec.key for spec in sim.fleet.images("tencent", key.region)}
        assert {ref.native_id for ref in state.data.images} == fleet
        assert len(fleet) == 24
    samples: set[str] = {
        s.metric
        for state in snapshot.sources.values()
        for s in state.data.samples  # type: ignore[union-attr]
    }
    assert {"imagesec_image_info", "imagesec_image_vulnerabilities_by_severity"} <= samples
    assert not telemetry.values("imagesec_api_request_errors")
