"""Sharding: N replicas with one config together export exactly the series of one exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from exporter import cli, sources
from exporter.collector import render_images
from exporter.config import ResolvedCredentials, parse_config
from exporter.cost import estimate
from exporter.model import Snapshot, SourceKey
from exporter.refresh import Refresher
from exporter.sharding import Shard, ordinal, unit_hash
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Simulator,
)
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

CONFIG: dict[str, Any] = {
    "accounts": [
        {"name": "a1", "provider": "aliyun", "regions": ["cn-shanghai", "ap-southeast-1"]},
        {"name": "a2", "provider": "aliyun", "regions": ["cn-shanghai"]},
        {"name": "a3", "provider": "aliyun", "regions": ["ap-southeast-1"]},
        {"name": "t1", "provider": "tencent", "regions": ["ap-guangzhou", "ap-singapore"]},
        {"name": "t2", "provider": "tencent", "regions": ["ap-guangzhou"]},
    ],
    "collectors": {"sas_image_risk": {"enabled": False}},
}
for _account in CONFIG["accounts"]:
    _account["rate_limit"] = 1000


class Router(httpx.AsyncBaseTransport):
    """Sends Sas hosts to the simulated Sas, TCSS hosts to the simulated TCSS."""

    def __init__(self, sim: Simulator) -> None:
        self.aliyun = sim.transport("aliyun")
        self.tencent = sim.transport("tencent")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        cloud = self.tencent if request.url.host.startswith("tcss") else self.aliyun
        return await cloud.handle_async_request(request)


def credentials() -> dict[tuple[str, str], ResolvedCredentials]:
    out = {}
    for account in CONFIG["accounts"]:
        if account["provider"] == "aliyun":
            key, secret = DEMO_ALIYUN_ACCESS_KEY_ID, DEMO_ALIYUN_ACCESS_KEY_SECRET
        else:
            key, secret = DEMO_TENCENT_SECRET_ID, DEMO_TENCENT_SECRET_KEY
        out[(account["provider"], account["name"])] = ResolvedCredentials(
            key, SecretStr(secret), None, "config"
        )
    return out


@pytest.fixture
def signed_at(clock: FakeClock) -> FakeClock:
    """Requests are signed with the simulator's frozen clock, not the real time."""
    return clock


async def export(sim: Simulator, shard: Shard | None) -> tuple[set[SourceKey], list[bytes]]:
    config = parse_config(CONFIG)
    telemetry = Telemetry()
    async with httpx.AsyncClient(transport=Router(sim)) as http:
        built = sources.build_sources(
            config, credentials(), telemetry, http, shard=shard, clock=sim.clock
        )
        snapshot: Snapshot = await Refresher(built, telemetry=telemetry).run_once()
    down = [str(k) for k, s in snapshot.sources.items() if not s.up]
    assert not down
    lines = [line for line in render_images(snapshot).splitlines() if not line.startswith(b"#")]
    return set(snapshot.sources), lines


async def test_n_shards_together_export_exactly_one_exporters_series(
    signed_at: FakeClock,
) -> None:
    sim = Simulator(seed=8, images_per_region=10, clock=signed_at, rate_limit=False)
    whole_sources, whole = await export(sim, None)
    assert len(whole) == len(set(whole)) > 0
    for total in (2, 3):
        shard_sources: list[set[SourceKey]] = []
        series: list[bytes] = []
        for index in range(total):
            keys, lines = await export(sim, Shard(index, total))
            shard_sources.append(keys)
            series += lines
        # Every source and every series exactly once, in exactly one shard.
        assert sum(len(k) for k in shard_sources) == len(whole_sources)
        assert set().union(*shard_sources) == whole_sources
        assert sorted(series) == sorted(whole)
        assert sum(1 for k in shard_sources if k) >= 2  # the work is really split
        # A TCSS account's regions stay together: they share one API quota.
        for keys in shard_sources:
            regions = {k.region for k in keys if k.account == "t1"}
            assert regions in (set(), {"ap-guangzhou", "ap-singapore"})


def test_shard_assignment_is_stable_and_in_range() -> None:
    # sha256, not Python's per-process hash: the same unit lands on the same shard everywhere.
    # sha256("aliyun/a1/cn-shanghai")[:8] = 0x45a7d78de1f0bf22, which is 1 mod 3.
    assert unit_hash("aliyun", "a1", "cn-shanghai") == 0x45A7D78DE1F0BF22
    assert [Shard(i, 3).owns("aliyun", "a1", "cn-shanghai") for i in range(3)] == [
        False,
        True,
        False,
    ]
    owners = [
        [Shard(i, 4).owns("aliyun", f"acct{n}", "cn-shanghai") for i in range(4)] for n in range(40)
    ]
    assert all(sum(row) == 1 for row in owners)
    assert len({row.index(True) for row in owners}) == 4
    assert Shard(0, 1).owns("tencent", "x", "ap-guangzhou")
    with pytest.raises(ValueError):
        Shard(2, 2)
    with pytest.raises(ValueError):
        Shard(0, 0)


def parse(*argv: str) -> Any:
    return cli.run_parser().parse_args(list(argv))


def test_shard_flags_and_automatic_sharding_from_the_statefulset_ordinal(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert cli.shard_from_args(parse()) == Shard(0, 1)
    assert cli.shard_from_args(parse("--shard", "1", "--total-shards", "3")) == Shard(1, 3)
    auto = parse("--shard.auto", "--total-shards", "4")
    assert cli.shard_from_args(auto, env={"POD_NAME": "imagesec-exporter-3"}) == Shard(3, 4)
    assert cli.shard_from_args(auto, env={}, hostname="imagesec-exporter-2") == Shard(2, 4)
    with pytest.raises(ValueError, match="no '-<ordinal>' suffix"):
        cli.shard_from_args(auto, env={}, hostname="laptop")
    with pytest.raises(ValueError, match=r"must be in 0\.\.3"):
        cli.shard_from_args(auto, env={"POD_NAME": "imagesec-exporter-4"})
    with pytest.raises(ValueError, match=r"either --shard or --shard\.auto"):
        cli.shard_from_args(parse("--shard", "1", "--shard.auto", "--total-shards", "2"))
    clean_env.setenv("IMAGESEC_TOTAL_SHARDS", "5")
    clean_env.setenv("IMAGESEC_SHARD", "4")
    assert cli.shard_from_args(parse()) == Shard(4, 5)
    assert ordinal("x-10\n") == 10


def test_a_bad_shard_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--demo", "--check-config", "--shard", "2", "--total-shards", "2"])
    assert code == cli.EXIT_CONFIG
    assert "--shard: --shard must be in 0..1, not 2" in capsys.readouterr().err


def test_cost_estimate_counts_intervals_and_assumes_the_fleet_when_unknown() -> None:
    class S:
        def __init__(self, source: str, interval: float) -> None:
            self.key = SourceKey("aliyun", "a", "cn-shanghai", source)
            self.interval = interval
            self.depends_on = None

        async def refresh(self, upstream: object) -> Any:
            raise NotImplementedError

    listed = [S("sas_images", 300), S("sas_baseline", 900)]
    cost = estimate(listed, None)  # type: ignore[arg-type]
    assert cost.assumed and cost.images_per_source == 1000
    # 50 pages of 20 every 300s all day, plus one baseline lookup per image per day.
    assert cost.per_day == 50 * 288 + 1000
    assert cost.first_pass == 50 + 1000
    assert not estimate(listed, 40).assumed  # type: ignore[arg-type]
    assert estimate(listed, 40).per_day == 2 * 288 + 40  # type: ignore[arg-type]


def test_statefulset_example_agrees_with_the_deployment_and_its_flags() -> None:
    root = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
    base = {d["kind"]: d for p in root.glob("*.yml") for d in yaml.safe_load_all(p.read_text())}
    sharded = root / "sharded"
    overlay = yaml.safe_load((sharded / "kustomization.yml").read_text())
    assert overlay["resources"] == ["../", "statefulset.yml"]
    (patch,) = overlay["patches"]
    assert yaml.safe_load(patch["patch"])["kind"] == "Deployment"  # replaced, not doubled
    objects = {d["kind"]: d for d in yaml.safe_load_all((sharded / "statefulset.yml").read_text())}
    stateful, headless = objects["StatefulSet"], objects["Service"]
    assert stateful["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    (deployed,) = base["Deployment"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "--shard.auto" in args
    assert f"--total-shards={stateful['spec']['replicas']}" in args
    assert [a for a in args if "shard" not in a] == deployed["args"]
    assert container["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    same = {k: v for k, v in container.items() if k not in ("args", "env")}
    assert same == {k: v for k, v in deployed.items() if k != "args"}
    pod = stateful["spec"]["template"]
    assert {**pod, "spec": {**pod["spec"], "containers": []}} == {
        **base["Deployment"]["spec"]["template"],
        "spec": {**base["Deployment"]["spec"]["template"]["spec"], "containers": []},
    }
    # The base Service (scraped by the ServiceMonitor) selects every shard; the headless one
    # is not scraped, so no shard is scraped twice.
    monitor = base["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert not monitor.items() <= headless["metadata"]["labels"].items()
    assert base["Service"]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_the_cost_is_logged_at_start_with_the_shard(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(CONFIG)

    class S:
        def __init__(self, source: str) -> None:
            self.key = SourceKey("aliyun", "a1", "cn-shanghai", source)
            self.interval = 300.0
            self.depends_on = None

        async def refresh(self, upstream: object) -> Any:
            raise NotImplementedError

    with caplog.at_level("INFO", logger="exporter"):
        cli.log_cost(config, [S("sas_images")], Shard(1, 3))  # type: ignore[list-item]
    estimate_record, assumed = caplog.records
    assert estimate_record.getMessage() == "api cost estimate"
    assert (estimate_record.shard, estimate_record.total_shards) == (1, 3)  # type: ignore[attr-defined]
    assert estimate_record.calls_per_day == 50 * 288  # type: ignore[attr-defined]
    assert estimate_record.images_assumed is True  # type: ignore[attr-defined]
    assert assumed.getMessage() == "api cost estimate assumes the fleet size"
