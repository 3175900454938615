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
from tests.conftest import fleet_now, require_tool

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
    sim = Simulator(images_per_region=6, faults=plan, rate_limit=False, fleet_clock=fleet_now)
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


async def test_hostile_answers_at_random_never_spread_or_grow_memory() -> None:
    """The short soak of issue 9: a hostile account cycling through every hostile answer beside
    healthy ones (bench/soak_hostile.py is the long version, with scrapes over HTTP)."""
    import random

    from exporter.errors import CODES
    from tests.hostile import MODES
    from tests.test_hostile import RSS_BOUND, RssPeak, promtool_clean, rig

    rng = random.Random(3)
    modes = [m for m in MODES if m not in ("slow", "healthy")]
    async with rig("aliyun", request_deadline="1s", retry_deadline="2s") as r:
        with RssPeak() as memory:
            for _ in range(8):
                mode = rng.choice(modes)
                r.hostile.set(mode)
                snapshot = await r.run()
                r.assert_healthy_current(snapshot)
        failures = r.telemetry.values("imagesec_refresh_failures")
        assert not [labels for labels in failures if labels[-1] == "internal"]
        errors = r.telemetry.values("imagesec_api_request_errors")
        assert {labels[-1] for labels in errors} <= CODES  # the bounded vocabulary
        assert memory.peak - memory.start < RSS_BOUND
        r.hostile.set("healthy")
        await r.run()
        recovered = await r.run()
        assert all(s.up for s in recovered.sources.values())
        promtool_clean(r.store.scrape(accept_gzip=False))
