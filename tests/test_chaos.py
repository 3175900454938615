"""Chaos over real sockets: every fault kind at random, and /metrics still tells the truth."""

from __future__ import annotations

import subprocess

import httpx

from exporter.config import parse_config, resolve_all
from exporter.exposition import ExpositionStore
from exporter.refresh import Refresher
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    FAULT_KINDS,
    Fault,
    FaultPlan,
    Simulator,
    SimulatorServer,
)
from exporter.sources import build_sources
from exporter.telemetry import Telemetry
from tests.conftest import require_tool

ENV = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ALIYUN_ACCESS_KEY_ID,
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ALIYUN_ACCESS_KEY_SECRET,
    "TENCENTCLOUD_SECRET_ID": DEMO_TENCENT_SECRET_ID,
    "TENCENTCLOUD_SECRET_KEY": DEMO_TENCENT_SECRET_KEY,
}


async def test_random_faults_never_crash_a_refresh_or_break_the_exposition() -> None:
    plan = FaultPlan(seed=7)
    for cloud in ("aliyun", "tencent"):
        for kind in FAULT_KINDS:
            if kind != "latency":  # real sleeps would only slow the test down
                plan.add(Fault(kind=kind, cloud=cloud, probability=0.015, times=10**6))
    sim = Simulator(images_per_region=6, faults=plan, rate_limit=False)
    with SimulatorServer(sim, "aliyun") as sas, SimulatorServer(sim, "tencent") as tcss:
        config = parse_config(
            {
                "accounts": [
                    {
                        "name": "a",
                        "provider": "aliyun",
                        "regions": ["cn-shanghai"],
                        "endpoint": f"http://{sas.address}",
                    },
                    {
                        "name": "t",
                        "provider": "tencent",
                        "regions": ["ap-guangzhou"],
                        "endpoint": f"http://{tcss.address}",
                    },
                ],
                "refresh": {"max_attempts": 2},
            }
        )
        telemetry = Telemetry()
        async with httpx.AsyncClient(timeout=10) as http:
            sources = build_sources(config, resolve_all(config, ENV), telemetry, http)
            refresher = Refresher(sources, telemetry=telemetry, timeout=60)
            store = ExpositionStore(refresher.snapshot, telemetry)
            ever_up = set()
            for _ in range(10):
                snapshot = await refresher.run_once()
                store.update(snapshot)
                ever_up |= {k for k, s in snapshot.sources.items() if s.up}
                for key, state in snapshot.sources.items():
                    if key in ever_up:  # once it had data, a failure never loses it
                        assert state.data is not None, key
            plan.clear()  # the cloud behaves again: every source recovers on the next pass
            recovered = await refresher.run_once()
            store.update(recovered)
    assert all(state.up for state in recovered.sources.values())
    failures = telemetry.values("imagesec_refresh_failures")
    assert failures, "the faults should have failed some refreshes"
    assert not [labels for labels in failures if labels[-1] == "internal"]  # no bug was hit
    assert sum(telemetry.values("imagesec_api_request_errors").values()) > 0
    exposition = store.scrape(accept_gzip=False)
    result = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout + result.stderr == b"", result
