"""Hostile upstreams (issue 9): every answer that broke the exporter, over real loopback sockets,
beside healthy simulated accounts.

For each row of the issue's table: the healthy accounts stay up and current, the hostile source
is marked down with its error counted (or its bad row skipped and counted), RSS stays bounded,
and everything recovers on the next pass once the answers turn good.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter.clouds.tencent import api as tcss_api
from exporter.config import parse_config, resolve_all
from exporter.model import Snapshot, SourceKey
from exporter.normalise import clean_stats
from exporter.refresh import Refresher
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Simulator,
    SimulatorServer,
)
from exporter.sources import Pools, build_sources, http_limits
from exporter.telemetry import Telemetry
from exporter.web import ExpositionStore, landing_page
from tests.conftest import fleet_now, require_tool
from tests.hostile import HostileCloud, gzip_bomb

ENV = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ALIYUN_ACCESS_KEY_ID,
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ALIYUN_ACCESS_KEY_SECRET,
    "TENCENTCLOUD_SECRET_ID": DEMO_TENCENT_SECRET_ID,
    "TENCENTCLOUD_SECRET_KEY": DEMO_TENCENT_SECRET_KEY,
}
TOKEN = "CAISsecretSessionTokenThatMustNeverLeak0123456789"
SECRET = "hostile-secret-key-value-42"
MiB = 1 << 20
RSS_BOUND = 120 * MiB  # growth allowed during one hostile pass (caps are 4 MiB per answer)


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RssPeak:
    """Samples the process's RSS every 10 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Rig:
    hostile: HostileCloud
    refresher: Refresher
    telemetry: Telemetry
    store: ExpositionStore
    now: list[float] = field(default_factory=lambda: [1_700_000_000.0])

    async def run(self) -> Snapshot:
        self.now[0] += 60
        snapshot = await self.refresher.run_once()
        self.store.update(snapshot)
        return snapshot

    def bad(self, snapshot: Snapshot, source: str | None = None) -> dict[SourceKey, Any]:
        return {
            k: s
            for k, s in snapshot.sources.items()
            if k.account == "bad" and (source is None or k.source == source)
        }

    def errors(self, provider: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.telemetry.values("imagesec_api_request_errors").items():
            if labels[0] == provider and labels[1] == "bad" and value:
                out[labels[-1]] = out.get(labels[-1], 0) + value
        return out

    def assert_healthy_current(self, snapshot: Snapshot) -> None:
        good = {k: s for k, s in snapshot.sources.items() if k.account != "bad"}
        assert good and all(s.up for s in good.values()), good
        assert all(s.last_success == self.now[0] for s in good.values())
        lines = self.store.scrape(accept_gzip=False).decode().splitlines()
        for account in ("good-a", "good-t"):  # their per-image series are served
            assert any(
                line.startswith("imagesec_image_vulnerabilities{")
                and f'account="{account}"' in line
                for line in lines
            ), account


@asynccontextmanager
async def rig(
    provider: str, *, regions: int = 1, delay: float = 30.0, **http: Any
) -> AsyncIterator[Rig]:
    hostile = HostileCloud(images=4, delay=delay)
    url = await hostile.start()
    sim = Simulator(images_per_region=3, rate_limit=False, fleet_clock=fleet_now)
    tencent_regions = ["ap-guangzhou", "ap-shanghai", "ap-beijing", "ap-chengdu"]
    bad: dict[str, Any] = {
        "name": "bad",
        "provider": provider,
        "endpoint": url,
        "rate_limit": 200,
    }
    if provider == "aliyun":
        bad["regions"] = ["cn-shanghai"]
        bad["credentials"] = {
            "access_key_id": "LTAIhostile0001",
            "access_key_secret": SECRET,
            "security_token": TOKEN,
        }
        bad["collectors"] = {
            name: {"enabled": False}
            for name in ("sas_vulnerabilities", "sas_malicious", "sas_image_risk")
        }
    else:
        bad["regions"] = tencent_regions[:regions]
        bad["credentials"] = {"secret_id": "AKIDhostile0001", "secret_key": SECRET}
    try:
        with SimulatorServer(sim, "aliyun") as sas, SimulatorServer(sim, "tencent") as tcss:
            config = parse_config(
                {
                    "accounts": [
                        {
                            "name": "good-a",
                            "provider": "aliyun",
                            "regions": ["cn-shanghai"],
                            "endpoint": f"http://{sas.address}",
                        },
                        {
                            "name": "good-t",
                            "provider": "tencent",
                            "regions": ["ap-guangzhou"],
                            "endpoint": f"http://{tcss.address}",
                        },
                        bad,
                    ],
                    "refresh": {"max_attempts": 2, "timeout": "30s"},
                    "http": {
                        "max_response_bytes": 4 * MiB,
                        "request_deadline": "2s",
                        "retry_deadline": "5s",
                        "read_timeout": "2s",
                        "max_connections": 2,
                    }
                    | http,
                }
            )
            telemetry = Telemetry()
            async with Pools(http_limits(config.http)) as pools:
                sources = build_sources(config, resolve_all(config, ENV), telemetry, pools)
                now = [1_700_000_000.0]
                refresher = Refresher(
                    sources, telemetry=telemetry, timeout=30, clock=lambda: now[0]
                )
                store = ExpositionStore(refresher.snapshot, telemetry)
                yield Rig(hostile, refresher, telemetry, store, now)
    finally:
        await hostile.stop()


def promtool_clean(exposition: bytes) -> None:
    result = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout + result.stderr == b"", result


Check = Callable[[Rig, Snapshot], None]


def down_with(code: str, source: str) -> Check:
    def check(r: Rig, snapshot: Snapshot) -> None:
        hit = r.bad(snapshot, source)
        assert hit and not any(s.up for s in hit.values()), hit
        provider = next(iter(hit)).provider
        assert r.errors(provider).get(code, 0) > 0, r.errors(provider)

    return check


def up_with_invalid_rows(action: str) -> Check:
    def check(r: Rig, snapshot: Snapshot) -> None:
        assert all(s.up for s in r.bad(snapshot).values()), r.bad(snapshot)
        skipped = {
            labels[-1]: value
            for labels, value in r.telemetry.values("imagesec_invalid_rows").items()
            if labels[1] == "bad" and value
        }
        assert skipped.get(action, 0) >= 4, skipped

    return check


def all_bad_up(r: Rig, snapshot: Snapshot) -> None:
    assert all(s.up for s in r.bad(snapshot).values()), r.bad(snapshot)


def nulls_are_absent_fields(r: Rig, snapshot: Snapshot) -> None:
    all_bad_up(r, snapshot)
    inventory = r.bad(snapshot, "sas_images")
    (state,) = inventory.values()
    assert state.data is not None and len(state.data.images) == 4  # no row dropped
    assert (
        r.telemetry.values("imagesec_invalid_rows").get(
            ("aliyun", "bad", "cn-shanghai", "DescribeImageInstances"), 0
        )
        == 0
    )


def one_detail_failed(r: Rig, snapshot: Snapshot) -> None:
    all_bad_up(r, snapshot)
    failed = r.telemetry.value(
        "imagesec_detail_lookup_failures", ("aliyun", "bad", "cn-shanghai", "sas_baseline")
    )
    assert failed == 1
    assert r.errors("aliyun").get("bad_payload", 0) >= 2  # retried, like a 5xx


def throttled_but_up(r: Rig, snapshot: Snapshot) -> None:
    all_bad_up(r, snapshot)
    assert r.errors("aliyun").get("Throttling.User", 0) >= 4


def only_other(r: Rig, snapshot: Snapshot) -> None:
    down_with("other", "tcss_images")(r, snapshot)
    assert set(r.errors("tencent")) == {"other"}


def four_slow_regions(r: Rig, snapshot: Snapshot) -> None:
    bad = r.bad(snapshot, "tcss_images")
    assert len(bad) == 4 and not any(s.up for s in bad.values())
    assert r.errors("tencent").get("timeout", 0) >= 4


SCENARIOS: dict[str, tuple[str, str, dict[str, Any], Check]] = {
    # row: (provider, mode, HostileCloud.set kwargs, check)
    "endless chunked body": (
        "aliyun",
        "endless",
        {},
        down_with("response_too_large", "sas_images"),
    ),
    "200 MB body": ("tencent", "huge", {}, down_with("response_too_large", "tcss_images")),
    "gzip bomb": ("aliyun", "gzip_bomb", {}, down_with("response_too_large", "sas_images")),
    "body dripped at 1 byte/s": ("aliyun", "drip", {}, down_with("timeout", "sas_images")),
    "new error code every answer": ("tencent", "new_code", {}, only_other),
    "10^400 as an integer": (
        "tencent",
        "bignum",
        {},
        up_with_invalid_rows("DescribeAssetImageList"),
    ),
    "100k-level nested JSON": ("aliyun", "deep", {}, down_with("bad_payload", "sas_images")),
    "null in string and number fields": ("aliyun", "null_field", {}, nulls_are_absent_fields),
    "truncated JSON on one per-image call": (
        "aliyun",
        "truncated",
        {"only": {"DescribeImageBaselineCheckResult"}, "image": "h-1"},
        one_detail_failed,
    ),
    "throttling on half the calls": (
        "aliyun",
        "throttle_half",
        {"only": {"DescribeImageBaselineCheckResult"}},
        throttled_but_up,
    ),
    "connection reset mid-body": ("tencent", "reset", {}, down_with("connect", "tcss_images")),
}


@pytest.mark.parametrize("row", sorted(SCENARIOS))
async def test_a_hostile_answer_harms_only_its_own_source(row: str) -> None:
    provider, mode, narrow, check = SCENARIOS[row]
    async with rig(provider) as r:
        r.hostile.set(mode, **narrow)
        with RssPeak() as memory:
            snapshot = await asyncio.wait_for(r.run(), 60)
        check(r, snapshot)
        r.assert_healthy_current(snapshot)
        assert memory.peak - memory.start < RSS_BOUND, (memory.start, memory.peak)
        r.hostile.set("healthy")
        recovered = await r.run()
        if mode in ("truncated", "throttle_half", "bignum", "null_field"):
            recovered = await r.run()
        assert all(s.up for s in recovered.sources.values()), recovered
        promtool_clean(r.store.scrape(accept_gzip=False))


async def test_four_slow_regions_of_one_account_leave_the_others_up() -> None:
    async with rig("tencent", regions=4, delay=60.0) as r:
        r.hostile.set("slow")
        snapshot = await asyncio.wait_for(r.run(), 60)
        four_slow_regions(r, snapshot)
        r.assert_healthy_current(snapshot)
        r.hostile.set("healthy")
        recovered = await r.run()
        assert all(s.up for s in recovered.sources.values())


async def test_a_lone_surrogate_leaves_metrics_valid_and_the_others_current() -> None:
    async with rig("tencent") as r:
        before = clean_stats.counts()["replaced"]
        r.hostile.set("surrogate")
        snapshot = await r.run()
        all_bad_up(r, snapshot)  # the strings were cleaned, not the rows dropped
        r.assert_healthy_current(snapshot)
        assert clean_stats.counts()["replaced"] > before
        exposition = r.store.scrape(accept_gzip=False)
        promtool_clean(exposition)
        text = exposition.decode("utf-8")  # strict: no surrogate escaped into the output
        assert 'os="debian\ufffd"' in text
        r.hostile.set("healthy")
        snapshot = await r.run()
        assert 'os="debian"' in r.store.scrape(accept_gzip=False).decode()


async def test_an_inventory_cut_at_the_page_cap_is_reported_incomplete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = tcss_api.PAGINATION["DescribeAssetImageList"]
    monkeypatch.setitem(
        tcss_api.PAGINATION,
        "DescribeAssetImageList",
        type(spec)(style="offset", page_size=100, max_pages=3),
    )
    async with rig("tencent") as r:
        r.hostile.set("endless_list", only={"DescribeAssetImageList"})
        snapshot = await r.run()
        (state,) = r.bad(snapshot, "tcss_images").values()
        assert state.up and state.data.truncated == "page_cap"
        text = r.store.scrape(accept_gzip=False).decode()
        assert (
            'imagesec_source_truncated{account="bad",provider="tencent",region="ap-guangzhou",'
            'source="tcss_images"} 1.0'
        ) in text
        assert "incomplete: page_cap" in landing_page(snapshot, "/metrics").decode()
        r.hostile.set("healthy")
        snapshot = await r.run()
        (state,) = r.bad(snapshot, "tcss_images").values()
        assert state.data.truncated == ""


async def test_an_echoed_credential_never_reaches_logs_or_the_landing_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with rig("aliyun") as r:
        r.hostile.set("echo")
        snapshot = await r.run()
        down_with("InvalidParameter", "sas_images")(r, snapshot)
        (state,) = r.bad(snapshot, "sas_images").values()
        assert "cannot parse request" in state.last_error
        assert len(state.last_error) <= 300
        page = landing_page(snapshot, "/metrics").decode()
        logged = "\n".join(f"{rec.getMessage()} {rec.__dict__}" for rec in caplog.records)
        for secret in (TOKEN, SECRET):
            assert secret not in state.last_error and secret not in page
            assert secret not in logged
        assert any(action == "DescribeImageInstances" for action, _ in r.hostile.seen)


async def test_a_connection_error_names_its_host_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = parse_config(
        {
            "accounts": [
                {
                    "name": "gone",
                    "provider": "tencent",
                    "regions": ["ap-guangzhou"],
                    "endpoint": f"http://127.0.0.1:{port}",
                    "collectors": {"tcss_image_detail": {"enabled": False}},
                }
            ],
            "refresh": {"max_attempts": 1},
        }
    )
    caplog.set_level(logging.WARNING)
    telemetry = Telemetry()
    async with Pools(http_limits(config.http)) as pools:
        sources = build_sources(config, resolve_all(config, ENV), telemetry, pools)
        snapshot = await Refresher(sources, telemetry=telemetry).run_once()
    (state,) = snapshot.sources.values()
    assert not state.up and "host=127.0.0.1" in state.last_error
    assert "errno=ECONNREFUSED" in state.last_error
    (failed,) = [r for r in caplog.records if r.getMessage() == "api call failed"]
    assert failed.__dict__["provider"] == "tencent" and failed.__dict__["account"] == "gone"
    assert failed.__dict__["action"] == "DescribeAssetImageList"
    assert failed.__dict__["code"] == "connect"


async def test_the_hostile_cloud_builds_its_gzip_bomb_before_it_serves() -> None:
    """Compressing the bomb takes ~1 s; done inside an answer it stalled the event loop the
    healthy accounts share past their 1 s deadlines (the chaos test failed ~1 run in 4)."""
    gzip_bomb.cache_clear()
    hostile = HostileCloud()
    await hostile.start()
    try:
        assert gzip_bomb.cache_info().currsize == 1
    finally:
        await hostile.stop()
