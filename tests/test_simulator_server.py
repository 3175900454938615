"""The simulator over real loopback HTTP and through the httpx transport; the control plane."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator

import httpx
import pytest

from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.tencent.signing import TC3Auth
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Fault,
    Simulator,
    SimulatorServer,
    serve_forever,
)
from exporter.simulator.core import parse_address
from tests.conftest import fleet_now

NOW = 1_700_000_000.0


def _acs_auth() -> ACS3Auth:
    counter = iter(range(1_000_000))
    return ACS3Auth(
        DEMO_ALIYUN_ACCESS_KEY_ID,
        DEMO_ALIYUN_ACCESS_KEY_SECRET,
        clock=lambda: datetime.datetime.fromtimestamp(NOW, datetime.UTC),
        nonce=lambda: f"nonce-{next(counter)}",
    )


def _tc3_auth() -> TC3Auth:
    return TC3Auth(DEMO_TENCENT_SECRET_ID, DEMO_TENCENT_SECRET_KEY, clock=lambda: NOW)


def _sas_headers(action: str) -> dict[str, str]:
    return {"x-acs-action": action, "x-acs-version": "2018-12-03"}


def _tc_headers(action: str) -> dict[str, str]:
    return {
        "X-TC-Action": action,
        "X-TC-Version": "2020-11-01",
        "X-TC-Region": "ap-guangzhou",
        "Content-Type": "application/json",
    }


@pytest.fixture
def sim() -> Simulator:
    return Simulator(clock=lambda: NOW)


@pytest.fixture
def servers(sim: Simulator) -> Iterator[tuple[str, str]]:
    with SimulatorServer(sim, "aliyun") as a, SimulatorServer(sim, "tencent") as t:
        yield f"http://{a.address}", f"http://{t.address}"


def test_project_signers_through_sync_transport(sim: Simulator) -> None:
    with httpx.Client(transport=sim.transport("aliyun"), auth=_acs_auth()) as client:
        response = client.post(
            "http://tds.cn-shanghai.aliyuncs.com/",
            params={"PageSize": "5"},
            headers=_sas_headers("DescribeImageInstances"),
        )
    assert response.status_code == 200
    assert response.json()["PageInfo"]["Count"] == 5


async def test_project_signers_through_async_transport(sim: Simulator) -> None:
    async with httpx.AsyncClient(transport=sim.transport("tencent"), auth=_tc3_auth()) as client:
        response = await client.post(
            "https://tcss.tencentcloudapi.com/",
            json={"Limit": 3},
            headers=_tc_headers("DescribeAssetImageList"),
        )
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()["Response"]["List"]) == 3


def test_real_http_both_clouds(servers: tuple[str, str]) -> None:
    aliyun_url, tencent_url = servers
    with httpx.Client(auth=_acs_auth()) as client:
        response = client.post(
            aliyun_url + "/",
            params={"PageSize": "2"},
            headers=_sas_headers("ListImageRisk"),
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json;charset=utf-8"
    with httpx.Client(auth=_tc3_auth()) as client:
        response = client.post(
            tencent_url + "/",
            content=b'{"Limit": 1}',
            headers=_tc_headers("DescribeAssetImageList"),
        )
        assert response.json()["Response"]["TotalCount"] == 24


def test_control_plane_over_http(sim: Simulator, servers: tuple[str, str]) -> None:
    aliyun_url, tencent_url = servers
    with httpx.Client(base_url=aliyun_url) as control:
        faults = [{"kind": "throttle", "cloud": "aliyun", "times": 1, "retry_after_ms": 300}]
        assert control.post("/_sim/faults", json=faults).json()["faults"] == 1
        with httpx.Client(auth=_acs_auth()) as client:
            throttled = client.post(aliyun_url + "/", headers=_sas_headers("ListImageRisk"))
            assert throttled.status_code == 400
            assert throttled.headers["x-acs-retry-after"] == "300"
            assert client.post(aliyun_url + "/", headers=_sas_headers("ListImageRisk")).is_success

        stats = control.get("/_sim/stats").json()
        assert stats["requests"]["aliyun"] == {"ListImageRisk": 2}
        assert stats["faults"][0]["fired"] == 1

        rescanned = control.post("/_sim/rescan", json={"cloud": "tencent", "count": 2}).json()
        assert len(rescanned["images"]) == 2
        assert control.post(
            "/_sim/remove", json={"cloud": "tencent", "image_id": rescanned["images"][0]}
        ).json()["ok"]
        assert (
            len(sim.fleet.images("tencent", "ap-guangzhou"))
            + len(sim.fleet.images("tencent", "ap-singapore"))
            == 47
        )

        assert (
            control.post("/_sim/seed", json={"seed": 9, "images_per_region": 5}).json()["seed"] == 9
        )
        assert len(sim.fleet.images("aliyun", "cn-shanghai")) == 5

        assert control.post("/_sim/reset").json() == {"ok": True}
        assert sim.fleet.seed == 1 and len(sim.fleet.images("aliyun", "cn-shanghai")) == 24
        assert control.get("/_sim/stats").json()["requests"] == {"aliyun": {}, "tencent": {}}

    with httpx.Client(base_url=tencent_url) as control:
        assert control.post("/_sim/faults", json={"kind": "meteor"}).status_code == 400
        assert control.get("/_sim/nothing").status_code == 404
        control.post("/_sim/faults", json=[{"kind": "latency"}])
        assert control.delete("/_sim/faults").json() == {"ok": True}
        assert len(sim.faults) == 0


def test_server_applies_latency(sim: Simulator, servers: tuple[str, str]) -> None:
    sim.faults.add(Fault(kind="latency", delay_seconds=0.5, cloud="tencent"))
    with httpx.Client(auth=_tc3_auth(), timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                servers[1] + "/", content=b"{}", headers=_tc_headers("DescribeAssetImageList")
            )


def test_server_close_releases_the_port(sim: Simulator) -> None:
    server = SimulatorServer(sim, "aliyun")
    server.start()
    address = server.address
    server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{address}/_sim/stats")


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_address(":9000") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError):
        parse_address("localhost")


def test_serve_forever_serves_both_clouds_until_stopped() -> None:
    stop = threading.Event()
    addresses: list[str] = []
    ready = threading.Event()

    def started(aliyun: str, tencent: str) -> None:
        addresses.extend([aliyun, tencent])
        ready.set()

    thread = threading.Thread(
        target=serve_forever,
        args=("127.0.0.1:0", "127.0.0.1:0"),
        kwargs={"seed": 3, "images_per_region": 4, "stop": stop, "started": started},
    )
    thread.start()
    try:
        assert ready.wait(10)
        for address in addresses:
            stats = httpx.get(f"http://{address}/_sim/stats").json()
            assert (stats["seed"], stats["images_per_region"]) == (3, 4)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


async def test_a_sas_listener_bound_to_a_site_serves_that_site_only() -> None:
    """One endpoint per site, as tds.<site>.aliyuncs.com: the exporter sends no RegionId."""
    from exporter.clouds.aliyun.api import SasClient, describe_image_instances
    from exporter.clouds.aliyun.signing import default_nonce, utc_now
    from exporter.simulator import DEMO_ALIYUN_ACCESS_KEY_ID, DEMO_ALIYUN_ACCESS_KEY_SECRET
    from exporter.simulator.fleet import ALIYUN_SITE_INTL
    from exporter.telemetry import Telemetry

    sim = Simulator(images_per_region=3, fleet_clock=fleet_now)
    regions: dict[str | None, set[str]] = {}
    auth = ACS3Auth(
        DEMO_ALIYUN_ACCESS_KEY_ID, DEMO_ALIYUN_ACCESS_KEY_SECRET, clock=utc_now, nonce=default_nonce
    )
    for site in (None, ALIYUN_SITE_INTL):
        with SimulatorServer(sim, "aliyun", site=site) as server:
            async with httpx.AsyncClient() as http:
                client = SasClient(
                    http,
                    auth,
                    base_url=f"http://{server.address}",
                    account="a",
                    region="x",
                    telemetry=Telemetry(),
                )
                rows = await describe_image_instances(client)
            regions[site] = {row.region_id for row in rows}
    assert regions[None] and all(r.startswith("cn-") for r in regions[None])
    intl = regions[ALIYUN_SITE_INTL]
    assert intl and not any(r.startswith("cn-") for r in intl)
