"""Image filters: repo and tag regexes, newest tags per repo, max_images, and what they skip."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.clouds.aliyun.api import SasClient
from exporter.clouds.aliyun.findings import SasMaliciousSource
from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.aliyun.source import SasImagesSource
from exporter.collector import HealthCollector
from exporter.config import DEFAULT_MAX_IMAGES, parse_config
from exporter.errors import ConfigError
from exporter.filters import ImageFilter, Listed
from exporter.metrics import SKIP_REASONS
from exporter.model import Snapshot, SourceKey
from exporter.refresh import Refresher
from exporter.simulator import DEMO_ALIYUN_ACCESS_KEY_ID, DEMO_ALIYUN_ACCESS_KEY_SECRET, Simulator
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

SITE = "cn-shanghai"


def item(namespace: str, repo: str, tag: str, created: float | None = 0.0) -> Listed:
    return Listed(namespace, repo, tag, created, f"{namespace}/{repo}:{tag}")


def names(rows: list[Listed]) -> list[str]:
    return [r.image_id for r in rows]


def test_repo_and_tag_patterns_match_whole_strings() -> None:
    rows = [
        item("shop", "cart", "1.0"),
        item("shop", "cart", "latest"),
        item("shop", "cart-dev", "1.0"),
        item("infra", "nginx", "1.25"),
        item("", "busybox", "1.36"),
    ]
    filters = ImageFilter(
        repo_include=[r"shop/.*", "busybox"], repo_exclude=[".*-dev"], tag_exclude=["latest"]
    )
    kept, skipped = filters.apply(rows, lambda r: r)
    assert names(kept) == ["shop/cart:1.0", "/busybox:1.36"]
    assert dict(skipped) == {"repo_filter": 2, "tag_filter": 1, "newest_tags": 0, "max_images": 0}
    # "shop" alone does not match "shop/cart": patterns are anchored at both ends.
    assert ImageFilter(repo_include=["shop"]).apply(rows, lambda r: r)[0] == []
    assert names(ImageFilter(tag_include=[r"1\.\d+"]).apply(rows, lambda r: r)[0]) == [
        "shop/cart:1.0",
        "shop/cart-dev:1.0",
        "infra/nginx:1.25",
        "/busybox:1.36",
    ]


def test_newest_tags_per_repo_then_max_images_newest_first() -> None:
    rows = [
        item("shop", "cart", "1.0", 100.0),
        item("shop", "cart", "1.1", 300.0),
        item("shop", "cart", "1.2", 200.0),
        item("shop", "cart", "old", None),  # no creation time: the oldest
        item("infra", "nginx", "1.25", 50.0),
        item("infra", "nginx", "1.26", 400.0),
    ]
    kept, skipped = ImageFilter(newest_tags=2).apply(rows, lambda r: r)
    assert names(kept) == ["shop/cart:1.1", "shop/cart:1.2", "infra/nginx:1.25", "infra/nginx:1.26"]
    assert dict(skipped)["newest_tags"] == 2
    kept, skipped = ImageFilter(newest_tags=2, max_images=3).apply(rows, lambda r: r)
    assert names(kept) == ["shop/cart:1.1", "shop/cart:1.2", "infra/nginx:1.26"]  # list order
    assert dict(skipped) == {"repo_filter": 0, "tag_filter": 0, "newest_tags": 2, "max_images": 1}
    # Without creation times (rank=False) newest_tags does not apply; max_images still does.
    kept, skipped = ImageFilter(newest_tags=1, max_images=5).apply(rows, lambda r: r, rank=False)
    assert len(kept) == 5 and dict(skipped)["newest_tags"] == 0
    assert dict(skipped)["max_images"] == 1


def account(**images: Any) -> dict[str, Any]:
    return {"name": "prod", "provider": "aliyun", "regions": [SITE], "images": images}


def test_filters_that_can_drop_nothing_read_no_row() -> None:
    # A walk of 25k images made a Listed, a pair and a "namespace/repo" string per image to
    # keep them all: a third of a walk's short-lived objects with no filter configured.
    rows = [item("shop", f"r{i}", "1") for i in range(5)]
    read: list[Listed] = []

    def describe(row: Listed) -> Listed:
        read.append(row)
        return row

    for unfiltered in (ImageFilter(), ImageFilter(max_images=5)):
        assert unfiltered.apply(rows, describe) == (rows, tuple((r, 0) for r in SKIP_REASONS))
    assert read == []
    for filtering in (
        ImageFilter(max_images=4),
        ImageFilter(newest_tags=1),
        ImageFilter(repo_exclude=["shop/r0"]),
        ImageFilter(tag_include=["1"]),
    ):
        read.clear()
        filtering.apply(rows, describe)
        assert read == rows


def test_filter_config_is_validated_and_bounded_by_default() -> None:
    config = parse_config({"accounts": [account(repo_include=["shop/.*"], newest_tags=3)]})
    assert config.accounts[0].images.newest_tags == 3
    assert config.accounts[0].images.max_images == DEFAULT_MAX_IMAGES  # a bound by default
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "accounts": [
                    account(repo_include=["shop/(unclosed"], newest_tags=0, max_images=0, tags=[])
                ]
            }
        )
    text = "\n".join(str(d) for d in err.value.details)
    assert "not a regular expression: 'shop/(unclosed'" in text
    assert "accounts[0] (prod).images.newest_tags" in text
    assert "accounts[0] (prod).images.max_images" in text
    assert "accounts[0] (prod).images.tags" in text  # unknown keys are errors
    assert len(err.value.details) == 4


async def no_sleep(seconds: float) -> None:
    """Rate-limit waits must not move the fleet's clock."""


def sas_client(sim: Simulator, clock: FakeClock, telemetry: Telemetry) -> SasClient:
    nonces = itertools.count()
    return SasClient(
        httpx.AsyncClient(transport=sim.transport("aliyun")),
        ACS3Auth(
            DEMO_ALIYUN_ACCESS_KEY_ID,
            DEMO_ALIYUN_ACCESS_KEY_SECRET,
            clock=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC),
            nonce=lambda: f"n-{next(nonces)}",
        ),
        base_url="https://tds.cn-shanghai.aliyuncs.com",
        account="prod",
        region=SITE,
        telemetry=telemetry,
        rate=1000.0,
        sleep=no_sleep,
    )


def skipped_gauge(snapshot: Snapshot, source: SourceKey) -> dict[str, float | None]:
    registry = CollectorRegistry()
    registry.register(HealthCollector(lambda: snapshot, Telemetry()))
    labels = dict(zip(("provider", "account", "region", "source"), source.labels(), strict=True))
    return {
        r: registry.get_sample_value("imagesec_images_skipped", labels | {"reason": r})
        for r in SKIP_REASONS
    }


async def test_filtered_inventory_against_the_simulator(clock: FakeClock) -> None:
    sim = Simulator(seed=2, images_per_region=80, clock=clock, rate_limit=False)
    telemetry = Telemetry()
    client = sas_client(sim, clock, telemetry)
    inventory = SourceKey("aliyun", "prod", SITE, "sas_images")
    malicious = SourceKey("aliyun", "prod", SITE, "sas_malicious")
    filters = ImageFilter(repo_exclude=["library/.*"], tag_exclude=["latest"], newest_tags=2)
    refresher = Refresher(
        [
            SasImagesSource(inventory, 300, client, filters),
            SasMaliciousSource(malicious, 900, client, depends_on=inventory, filters=filters),
        ],
        telemetry=telemetry,
        clock=clock,
    )
    snapshot = await refresher.run_once()
    data = snapshot.sources[inventory].data
    assert data is not None
    specs = sim.fleet.images("aliyun", SITE)
    kept = [s for s in specs if s.namespace != "library" and s.tag != "latest"]
    by_repo: dict[tuple[str, str], list[Any]] = {}
    for spec in kept:
        by_repo.setdefault((spec.namespace, spec.repo), []).append(spec)
    newest = {
        s.uuid for group in by_repo.values() for s in sorted(group, key=lambda s: -s.created_ms)[:2]
    }
    assert {ref.native_id for ref in data.images} == newest
    gauge = skipped_gauge(snapshot, inventory)
    library = sum(s.namespace == "library" for s in specs)
    latest = sum(s.namespace != "library" and s.tag == "latest" for s in specs)
    assert gauge == {
        "repo_filter": library,
        "tag_filter": latest,
        "newest_tags": len(kept) - len(newest),
        "max_images": 0,
    }
    assert sum(v or 0 for v in gauge.values()) + len(newest) == len(specs)
    # No series of a skipped image comes back through the malware listing.
    mal = snapshot.sources[malicious].data
    assert mal is not None and {s.image.image_id for s in mal.samples} <= newest
    # Sources that do not list images have no skipped series.
    assert skipped_gauge(snapshot, malicious) == dict.fromkeys(SKIP_REASONS)
