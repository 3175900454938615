"""Sas findings collectors: seed samples 001/002/004, per-image caching, bad rows, units."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from exporter.clouds.aliyun.api import (
    PAGINATION,
    SasClient,
    describe_image_baseline_check_result,
)
from exporter.clouds.aliyun.findings import (
    SAS_MALWARE_LEVELS,
    SAS_MALWARE_STATUSES,
    SasBaselineSource,
    SasImageRiskSource,
    SasMaliciousSource,
    SasVulnerabilitiesSource,
)
from exporter.clouds.aliyun.schemas import parse_statistics
from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.aliyun.source import SasImagesSource
from exporter.clouds.fanout import DetailFanOut
from exporter.clouds.http import RetryPolicy, TokenBucket
from exporter.collector import HealthCollector, ImageCollector, render_images
from exporter.config import ResolvedCredentials, parse_config
from exporter.errors import AuthError, PayloadError, UpstreamError
from exporter.metrics import MALWARE_LEVELS, MALWARE_STATUSES
from exporter.model import ImageKey, ImageRef, Snapshot, SourceData, SourceKey, SourceState
from exporter.normalise import SAS_MALWARE_STATUS
from exporter.refresh import Refresher, Source
from exporter.sources import build_sources
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock, fixture_json

ACCOUNT, REGION = "prod", "cn-shanghai"
BASELINE = "DescribeImageBaselineCheckResult"
MALWARE = "DescribeAffectedMaliciousFileImages"
RISK = "ListImageRisk"
VULS = "DescribeImageVulList"

Answer = Callable[[dict[str, str], httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def skey(source: str) -> SourceKey:
    return SourceKey("aliyun", ACCOUNT, REGION, source)


INVENTORY = skey("sas_images")


class Sas:
    """Fake Sas: routes each request by its ``x-acs-action`` header to an answer function."""

    def __init__(self, **answers: Answer) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> Any:  # a response, or one to await
        self.requests.append(request)
        action = request.headers["x-acs-action"]
        return self.answers[action](dict(request.url.params), request)

    def params(self, action: str) -> list[dict[str, str]]:
        return [dict(r.url.params) for r in self.requests if r.headers["x-acs-action"] == action]


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


def paged(list_field: str, rows: list[Any], total: int | None = None) -> dict[str, Any]:
    return {
        "RequestId": "req",
        "PageInfo": {
            "CurrentPage": 1,
            "PageSize": 20,
            "TotalCount": len(rows) if total is None else total,
            "Count": len(rows),
        },
        list_field: rows,
    }


def make_client(handler: Sas, telemetry: Telemetry, clock: FakeClock, **kwargs: Any) -> SasClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = ACS3Auth(
        "testid",
        "testsecret",
        clock=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC),
        nonce=lambda: "nonce",
    )
    return SasClient(
        http,
        auth,
        base_url="https://tds.cn-shanghai.aliyuncs.com",
        account=ACCOUNT,
        region=REGION,
        telemetry=telemetry,
        sleep=clock.sleep,
        retry=kwargs.pop("retry", RetryPolicy(max_attempts=1)),
        rate=kwargs.pop("rate", 10_000.0),
        **kwargs,
    )


def image(i: int, marker: str = "m0", vulnerabilities: int | None = 5) -> ImageRef:
    key = ImageKey("aliyun", ACCOUNT, REGION, "shop", f"repo{i}", "1.0", f"uuid-{i}")
    return ImageRef(key, f"uuid-{i}", marker, vulnerabilities)


def inventory(*refs: ImageRef) -> SourceData:
    return SourceData(images=refs)


def snapshot_of(*pairs: tuple[Any, SourceData]) -> Snapshot:
    states = {
        s.key: SourceState(key=s.key, interval=s.interval, data=data, up=True, attempted=True)
        for s, data in pairs
    }
    return Snapshot(states)


def registry_of(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ImageCollector(lambda: snapshot))
    return registry


def labels_of(key: ImageKey, **extra: str) -> dict[str, str]:
    names = ("provider", "account", "region", "repo_namespace", "repo", "tag", "image_id")
    return dict(zip(names, key.labels(), strict=True)) | extra


def api_requests(telemetry: Telemetry, action: str) -> float:
    return telemetry.value("imagesec_api_requests", ("aliyun", ACCOUNT, REGION, action))


def invalid_rows(telemetry: Telemetry, action: str) -> float:
    return telemetry.value("imagesec_invalid_rows", ("aliyun", ACCOUNT, REGION, action))


def cache(telemetry: Telemetry, source: str, result: str) -> float:
    labels = (*skey(source).labels(), result)
    return telemetry.value("imagesec_detail_cache_requests", labels)


def baseline_source(client: SasClient, telemetry: Telemetry, **kwargs: Any) -> SasBaselineSource:
    return SasBaselineSource(
        skey("sas_baseline"),
        900,
        client,
        telemetry,
        depends_on=INVENTORY,
        concurrency=kwargs.pop("concurrency", 4),
        **kwargs,
    )


def vul_source(client: SasClient, telemetry: Telemetry, **kwargs: Any) -> SasVulnerabilitiesSource:
    return SasVulnerabilitiesSource(
        skey("sas_vulnerabilities"),
        900,
        client,
        telemetry,
        depends_on=INVENTORY,
        concurrency=kwargs.pop("concurrency", 4),
        **kwargs,
    )


def baseline_row(key: str, high: int, middle: int, low: int, **extra: Any) -> dict[str, Any]:
    return {
        "BaselineNameKey": key,
        "BaselineNameLevel": "high",
        "HighRiskItemCount": high,
        "MiddleRiskItemCount": middle,
        "LowRiskItemCount": low,
        "LastScanTime": 1610304058301,
        "Status": 0,
        **extra,
    }


def baseline_answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
    """Every image has two baselines; counts derive from the image's number."""
    i = int(params["ImageUuid"].split("-")[1])
    rows = [baseline_row("identification", i, 1, 2), baseline_row("ak_leak", 1, 0, i)]
    return ok(paged("BaselineResult", rows))


# -- seed samples ---------------------------------------------------------------------------


async def test_baseline_seed_sample_parses_and_appears_in_metrics(clock: FakeClock) -> None:
    sample = fixture_json("aliyun", BASELINE)
    handler = Sas(**{BASELINE: lambda params, request: ok(sample)})
    telemetry = Telemetry()
    source = baseline_source(make_client(handler, telemetry, clock), telemetry)
    ref = image(1)
    data = await source.refresh(inventory(ref))
    # The sample claims 100 rows over 5 pages yet repeats one row: counted once.
    assert {p["ImageUuid"] for p in handler.params(BASELINE)} == {"uuid-1"}
    registry = registry_of(snapshot_of((source, data)))
    row = sample["BaselineResult"][0]
    expected = {
        "high": row["HighRiskItemCount"],
        "medium": row["MiddleRiskItemCount"],
        "low": row["LowRiskItemCount"],
    }
    assert expected == {"high": 1, "medium": 1, "low": 10}
    for severity, value in expected.items():
        labels = labels_of(ref.key, severity=severity)
        assert registry.get_sample_value("imagesec_image_baseline_risk_items", labels) == value


async def test_malicious_seed_sample_joins_the_inventory_with_sparse_grid_and_total(
    clock: FakeClock,
) -> None:
    sample = fixture_json("aliyun", MALWARE)
    handler = Sas(**{MALWARE: lambda params, request: ok(sample)})
    telemetry = Telemetry()
    source = SasMaliciousSource(
        skey("sas_malicious"), 900, make_client(handler, telemetry, clock), depends_on=INVENTORY
    )
    row = sample["AffectedMaliciousFileImagesResponse"][0]
    # The inventory's labels win over the row's (here: another region) when the Uuid joins.
    inventory_key = ImageKey(
        "aliyun", ACCOUNT, REGION, "hanghai-namespace", "centos", "0.2", row["ImageUuid"]
    )
    known = ImageRef(inventory_key, row["ImageUuid"], "m")
    clean = image(2)
    data = await source.refresh(inventory(known, clean))
    text = render_images(snapshot_of((source, data))).decode()
    assert 'level="unknown"' not in text and 'status="unknown"' not in text
    registry = registry_of(snapshot_of((source, data)))
    metric = "imagesec_image_malicious_samples"
    # Only the cells with files are emitted; every image has the total, 0 when clean.
    for ref, found in ((known, {("serious", "handled"): 1.0}), (clean, {})):
        for level in SAS_MALWARE_LEVELS:
            for status in SAS_MALWARE_STATUSES:
                labels = labels_of(ref.key, level=level, status=status)
                want = found.get((level, status))
                assert registry.get_sample_value(metric, labels) == want, (ref, level, status)
        all_ = registry.get_sample_value(f"{metric}_all", labels_of(ref.key))
        assert all_ == sum(found.values())
    assert row["Level"] == "serious" and SAS_MALWARE_STATUS[row["Status"]] == "handled"


async def test_malicious_rows_of_images_the_inventory_does_not_know_use_their_own_labels(
    clock: FakeClock,
) -> None:
    sample = fixture_json("aliyun", MALWARE)
    handler = Sas(**{MALWARE: lambda params, request: ok(sample)})
    telemetry = Telemetry()
    source = SasMaliciousSource(
        skey("sas_malicious"), 900, make_client(handler, telemetry, clock), depends_on=INVENTORY
    )
    data = await source.refresh(inventory())
    row = sample["AffectedMaliciousFileImagesResponse"][0]
    key = ImageKey(
        "aliyun",
        ACCOUNT,
        row["RepoRegionId"],
        row["Namespace"],
        row["RepoName"],
        row["Tag"],
        row["ImageUuid"],
    )
    registry = registry_of(snapshot_of((source, data)))
    labels = labels_of(key, level="serious", status="handled")
    assert registry.get_sample_value("imagesec_image_malicious_samples", labels) == 1.0
    labels = labels_of(key, level="remind", status="unhandled")
    assert registry.get_sample_value("imagesec_image_malicious_samples", labels) is None
    assert registry.get_sample_value("imagesec_image_malicious_samples_all", labels_of(key)) == 1
    assert [ref.native_id for ref in data.images] == [row["ImageUuid"]]


async def test_image_risk_seed_sample_parses_and_appears_in_metrics(clock: FakeClock) -> None:
    sample = fixture_json("aliyun", RISK)
    handler = Sas(**{RISK: lambda params, request: ok(sample)})
    telemetry = Telemetry()
    source = SasImageRiskSource(skey("sas_image_risk"), 900, make_client(handler, telemetry, clock))
    data = await source.refresh(None)
    row = sample["ImageRiskList"][0]
    assert isinstance(row["Statistics"], dict)  # the seed sends an object, the doc a string
    key = ImageKey(
        "aliyun",
        ACCOUNT,
        REGION,  # the configured source region, never the row's RegionId
        row["RepoNamespace"],
        row["RepoName"],
        row["Tag"],
        row["Uuid"],
    )
    registry = registry_of(snapshot_of((source, data)))
    for finding, field in (
        ("baseline", "baselineNum"),
        ("new_suspicious", "newSuspicious"),
        ("vulnerability", "vul"),
    ):
        labels = labels_of(key, finding=finding)
        value = registry.get_sample_value("imagesec_image_in_use_findings", labels)
        assert value == row["Statistics"][field]
    for status, value in (("in_sas", 1.0), ("not_in_sas", None), ("unknown", None)):
        labels = labels_of(key, status=status)
        assert registry.get_sample_value("imagesec_image_registration_status", labels) == value
    assert invalid_rows(telemetry, RISK) == 0


# -- ListImageRisk Statistics -----------------------------------------------------------------


def risk_row(i: int, statistics: Any, access: str = "IN_SAS", **extra: Any) -> dict[str, Any]:
    return {
        "Uuid": f"uuid-{i}",
        "RepoNamespace": "shop",
        "RepoName": f"repo{i}",
        "Tag": "1.0",
        "RegionId": "cn-hangzhou",
        "ImageAccessType": access,
        "Statistics": statistics,
        **extra,
    }


async def test_statistics_as_a_json_string_becomes_findings(clock: FakeClock) -> None:
    rows = [
        risk_row(1, '{"baselineNum": 3, "newSuspicious": 1, "vul": 7}'),
        risk_row(2, json.dumps({"vul": 2}), access="NOT_IN_SAS"),
        risk_row(3, "", access="SOMETHING_NEW"),
    ]
    handler = Sas(**{RISK: lambda params, request: ok(paged("ImageRiskList", rows))})
    telemetry = Telemetry()
    source = SasImageRiskSource(skey("sas_image_risk"), 900, make_client(handler, telemetry, clock))
    registry = registry_of(snapshot_of((source, await source.refresh(None))))
    metric = "imagesec_image_in_use_findings"
    one, two, three = (image(i).key for i in (1, 2, 3))
    assert registry.get_sample_value(metric, labels_of(one, finding="baseline")) == 3
    assert registry.get_sample_value(metric, labels_of(one, finding="new_suspicious")) == 1
    assert registry.get_sample_value(metric, labels_of(one, finding="vulnerability")) == 7
    # A key Statistics lacks gives no sample, not an invented 0; an empty value gives none.
    assert registry.get_sample_value(metric, labels_of(two, finding="baseline")) is None
    assert registry.get_sample_value(metric, labels_of(two, finding="vulnerability")) == 2
    assert registry.get_sample_value(metric, labels_of(three, finding="vulnerability")) is None
    status = "imagesec_image_registration_status"
    assert registry.get_sample_value(status, labels_of(two, status="not_in_sas")) == 1
    assert registry.get_sample_value(status, labels_of(three, status="unknown")) == 1
    assert invalid_rows(telemetry, RISK) == 0


@pytest.mark.parametrize(
    "bad",
    ["{not json", '{"vul": -1}', "[1, 2]", '{"vul": "many"}', 42],
    ids=["not-json", "negative", "array", "not-a-number", "number"],
)
def test_parse_statistics_rejects_malformed_values(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_statistics(bad)


async def test_malformed_statistics_marks_its_row_and_keeps_the_rest_of_the_page(
    clock: FakeClock,
) -> None:
    rows = [
        risk_row(1, '{"baselineNum": 3, "newSuspicious": 1, "vul": 7}'),
        risk_row(2, "{baselineNum: 3"),  # not JSON
        risk_row(3, '{"vul": -4}'),  # negative
        risk_row(4, {"baselineNum": 2}),
    ]
    handler = Sas(**{RISK: lambda params, request: ok(paged("ImageRiskList", rows))})
    telemetry = Telemetry()
    source = SasImageRiskSource(skey("sas_image_risk"), 900, make_client(handler, telemetry, clock))
    data = await source.refresh(None)
    assert invalid_rows(telemetry, RISK) == 2
    registry = registry_of(snapshot_of((source, data)))
    metric = "imagesec_image_in_use_findings"
    keys = {i: image(i).key for i in (1, 2, 3, 4)}
    assert registry.get_sample_value(metric, labels_of(keys[1], finding="vulnerability")) == 7
    assert registry.get_sample_value(metric, labels_of(keys[4], finding="baseline")) == 2
    for i in (2, 3):
        for finding in ("baseline", "new_suspicious", "vulnerability"):
            labels = labels_of(keys[i], finding=finding)
            assert registry.get_sample_value(metric, labels) is None
        # ...but its registration status is still there.
        labels = labels_of(keys[i], status="in_sas")
        assert registry.get_sample_value("imagesec_image_registration_status", labels) == 1
    assert len(data.images) == 4


# -- bad rows ---------------------------------------------------------------------------------


def malware_row(uuid: str | None, level: Any, status: Any, md5: str, path: str) -> dict[str, Any]:
    return {
        "ImageUuid": uuid,
        "Level": level,
        "Status": status,
        "MaliciousMd5": md5,
        "FilePath": path,
        "RepoName": "centos",
        "Namespace": "ns",
        "Tag": "7",
        "RepoRegionId": "cn-beijing",
        "Uuid": "server-uuid",
    }


async def test_bad_malware_rows_are_counted_and_lose_nothing_else(clock: FakeClock) -> None:
    rows = [
        malware_row("uuid-1", "serious", 0, "a", "/a"),
        malware_row("uuid-1", "critical", 0, "b", "/b"),  # level outside the documented set
        malware_row("uuid-1", "serious", 9, "c", "/c"),  # status outside 0..3
        malware_row("uuid-1", "serious", -1, "c2", "/c2"),  # negative
        malware_row(None, "serious", 0, "d", "/d"),  # null ImageUuid
        malware_row("", "serious", 0, "e", "/e"),  # empty ImageUuid
        malware_row("uuid-1", "SUSPICIOUS", "3", "f", "/f"),  # upper case, numeric string
        "not an object",
    ]
    handler = Sas(
        **{MALWARE: lambda params, request: ok(paged("AffectedMaliciousFileImagesResponse", rows))}
    )
    telemetry = Telemetry()
    client = make_client(handler, telemetry, clock)
    source = SasMaliciousSource(skey("sas_malicious"), 900, client, depends_on=INVENTORY)
    ref = image(1)
    data = await source.refresh(inventory(ref))
    assert invalid_rows(telemetry, MALWARE) == 6
    registry = registry_of(snapshot_of((source, data)))
    metric = "imagesec_image_malicious_samples"
    labels = labels_of(ref.key, level="serious", status="unhandled")
    assert registry.get_sample_value(metric, labels) == 1
    labels = labels_of(ref.key, level="suspicious", status="whitelisted")
    assert registry.get_sample_value(metric, labels) == 1
    total = sum(
        registry.get_sample_value(metric, labels_of(ref.key, level=lv, status=st)) or 0
        for lv in SAS_MALWARE_LEVELS
        for st in SAS_MALWARE_STATUSES
    )
    assert total == 2
    assert [r.native_id for r in data.images] == ["uuid-1"]


async def test_malware_counts_distinct_files_per_image_not_rows(clock: FakeClock) -> None:
    rows = [
        # The same file reported for two containers, and again on the next page.
        malware_row("uuid-1", "serious", 0, "a", "/a") | {"ContainerId": "c1"},
        malware_row("uuid-1", "serious", 0, "a", "/a") | {"ContainerId": "c2"},
        malware_row("uuid-1", "serious", 0, "a", "/a") | {"ContainerId": "c2"},
        # Same md5 at another path: another sample.
        malware_row("uuid-1", "serious", 0, "a", "/elsewhere"),
        # The same file in another image counts there.
        malware_row("uuid-2", "serious", 0, "a", "/a"),
    ]
    handler = Sas(
        **{MALWARE: lambda params, request: ok(paged("AffectedMaliciousFileImagesResponse", rows))}
    )
    telemetry = Telemetry()
    client = make_client(handler, telemetry, clock)
    source = SasMaliciousSource(skey("sas_malicious"), 900, client, depends_on=INVENTORY)
    data = await source.refresh(inventory(image(1), image(2)))
    registry = registry_of(snapshot_of((source, data)))
    metric = "imagesec_image_malicious_samples"
    for i, want in ((1, 2), (2, 1)):
        labels = labels_of(image(i).key, level="serious", status="unhandled")
        assert registry.get_sample_value(metric, labels) == want


async def test_malware_page_size_is_sent_as_a_string(clock: FakeClock) -> None:
    handler = Sas(
        **{
            MALWARE: lambda params, request: ok(
                paged("AffectedMaliciousFileImagesResponse", [], total=45)
            )
        }
    )
    telemetry = Telemetry()
    client = make_client(handler, telemetry, clock)
    source = SasMaliciousSource(skey("sas_malicious"), 900, client, depends_on=INVENTORY)
    await source.refresh(inventory())
    assert PAGINATION[MALWARE].params(0) == {"CurrentPage": 1, "PageSize": "100"}
    queries = [r.url.query.decode() for r in handler.requests]
    assert queries and all("PageSize=100" in q for q in queries)
    assert [p["CurrentPage"] for p in handler.params(MALWARE)] == ["1"]  # empty page: stop


async def test_bad_baseline_rows_are_counted_and_lose_nothing_else(clock: FakeClock) -> None:
    rows = [
        baseline_row("identification", 1, 2, 3),
        baseline_row("weak_password", -1, 0, 0),  # negative count
        baseline_row("ak_leak", 1, 1, 1) | {"MiddleRiskItemCount": None},  # null: absent
        baseline_row("sshd_config", 2, 0, 1),
    ]
    handler = Sas(**{BASELINE: lambda params, request: ok(paged("BaselineResult", rows))})
    telemetry = Telemetry()
    source = baseline_source(make_client(handler, telemetry, clock), telemetry)
    data = await source.refresh(inventory(image(1)))
    assert invalid_rows(telemetry, BASELINE) == 1
    values = {s.extra[0]: s.value for s in data.samples}
    assert values == {"high": 4, "medium": 2, "low": 5}


async def test_bad_image_risk_rows_are_counted_and_lose_nothing_else(clock: FakeClock) -> None:
    rows = [risk_row(1, '{"vul": 1}'), risk_row(2, '{"vul": 2}') | {"Uuid": None}]
    handler = Sas(**{RISK: lambda params, request: ok(paged("ImageRiskList", rows))})
    telemetry = Telemetry()
    source = SasImageRiskSource(skey("sas_image_risk"), 900, make_client(handler, telemetry, clock))
    data = await source.refresh(None)
    assert invalid_rows(telemetry, RISK) == 1
    assert [r.native_id for r in data.images] == ["uuid-1"]


async def test_an_image_without_baseline_results_has_zero_risk_items(clock: FakeClock) -> None:
    handler = Sas(**{BASELINE: lambda params, request: ok(paged("BaselineResult", []))})
    telemetry = Telemetry()
    source = baseline_source(make_client(handler, telemetry, clock), telemetry)
    data = await source.refresh(inventory(image(1)))
    assert {s.extra[0]: s.value for s in data.samples} == {"high": 0, "medium": 0, "low": 0}


async def test_baseline_rows_repeated_across_pages_count_once(clock: FakeClock) -> None:
    def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        # Page 2 repeats page 1's last row (the list shifted during the walk).
        size = int(params["PageSize"])
        rows = [baseline_row(f"b{i}", 1, 0, 0) for i in range(size)] + [baseline_row("z", 0, 1, 0)]
        current = int(params["CurrentPage"])
        chunk = rows[:size] if current == 1 else rows[size - 1 :]
        return ok(paged("BaselineResult", chunk, total=size + 1))

    telemetry = Telemetry()
    rows = await describe_image_baseline_check_result(
        make_client(Sas(**{BASELINE: answer}), telemetry, clock), "uuid-1"
    )
    size = PAGINATION[BASELINE].page_size
    assert len(rows) == size + 1
    assert sum(r.high_risk_item_count or 0 for r in rows) == size


# -- per-image caching ------------------------------------------------------------------------


async def test_unchanged_inventory_makes_no_per_image_calls(clock: FakeClock) -> None:
    handler = Sas(**{BASELINE: baseline_answer})
    telemetry = Telemetry()
    source = baseline_source(make_client(handler, telemetry, clock), telemetry)
    refs = [image(i) for i in range(12)]
    first = await source.refresh(inventory(*refs))
    assert api_requests(telemetry, BASELINE) == 12
    assert cache(telemetry, "sas_baseline", "miss") == 12
    second = await source.refresh(inventory(*refs))
    assert api_requests(telemetry, BASELINE) == 12
    assert cache(telemetry, "sas_baseline", "hit") == 12
    assert second.samples == first.samples


@pytest.mark.parametrize("changed", [1, 3, 7])
async def test_changing_n_scan_markers_costs_n_calls(clock: FakeClock, changed: int) -> None:
    handler = Sas(**{BASELINE: baseline_answer})
    telemetry = Telemetry()
    source = baseline_source(make_client(handler, telemetry, clock), telemetry)
    refs = [image(i) for i in range(20)]
    await source.refresh(inventory(*refs))
    before = api_requests(telemetry, BASELINE)
    rescanned = [image(i, marker="m1") if i < changed else ref for i, ref in enumerate(refs)]
    await source.refresh(inventory(*rescanned))
    assert api_requests(telemetry, BASELINE) - before == changed
    assert {p["ImageUuid"] for p in handler.params(BASELINE)[-changed:]} == {
        f"uuid-{i}" for i in range(changed)
    }
    assert cache(telemetry, "sas_baseline", "miss") == 20 + changed
    assert cache(telemetry, "sas_baseline", "hit") == 20 - changed


async def test_cache_forgets_images_that_left_the_inventory_and_expires(clock: FakeClock) -> None:
    handler = Sas(**{BASELINE: baseline_answer})
    telemetry = Telemetry()
    source = baseline_source(
        make_client(handler, telemetry, clock), telemetry, ttl=3600, timer=clock
    )
    await source.refresh(inventory(image(1), image(2)))
    await source.refresh(inventory(image(1)))
    assert set(source.details.cache) == {("uuid-1", "m0")}
    await source.refresh(inventory(image(1), image(2)))  # back: looked up again
    assert api_requests(telemetry, BASELINE) == 3
    clock.advance(3601)  # past the TTL: the safety-net lookup
    await source.refresh(inventory(image(1), image(2)))
    assert api_requests(telemetry, BASELINE) == 5


async def test_fan_out_is_bounded_by_the_concurrency_limit(clock: FakeClock) -> None:
    in_flight, peak = 0, 0
    release = asyncio.Event()

    async def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak >= 3:
            release.set()
        await release.wait()
        in_flight -= 1
        return baseline_answer(params, request)

    telemetry = Telemetry()
    client = make_client(Sas(**{BASELINE: answer}), telemetry, clock)
    source = baseline_source(client, telemetry, concurrency=3)
    data = await source.refresh(inventory(*(image(i) for i in range(10))))
    assert peak == 3
    assert len(data.samples) == 30


async def test_fan_out_holds_a_task_per_concurrent_lookup_not_per_image(clock: FakeClock) -> None:
    # A first pass of a big fleet used to create a task per missing image at once: 25k waiting
    # tasks and their frames were the bulk of the first pass's peak memory.
    tasks = 0

    def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        nonlocal tasks
        tasks = max(tasks, len(asyncio.all_tasks()))
        return baseline_answer(params, request)

    telemetry = Telemetry()
    client = make_client(Sas(**{BASELINE: answer}), telemetry, clock)
    source = baseline_source(client, telemetry, concurrency=3)
    before = len(asyncio.all_tasks())
    data = await source.refresh(inventory(*(image(i) for i in range(50))))
    assert len(data.keys) == 50
    assert tasks - before <= 3


async def test_the_detail_cache_holds_no_key_or_result_object_per_image(clock: FakeClock) -> None:
    # Each entry held an (id, marker) key tuple beside the ref's own strings, and a tuple of
    # counts of its own: about 120 bytes more per image and per-image collector.
    import gc
    import tracemalloc

    def same(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        return ok(paged("BaselineResult", [baseline_row("identification", 1, 2, 3)]))

    telemetry = Telemetry()
    source = baseline_source(make_client(Sas(**{BASELINE: same}), telemetry, clock), telemetry)
    refs = inventory(*(image(i) for i in range(500)))
    await source.refresh(inventory(image(10**6)))  # the client, its pool, the counters
    gc.collect()
    tracemalloc.start()
    try:
        data = await source.refresh(refs)
        del data
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # What the exporter's code still holds (the fake cloud keeps a log of its requests).
    held = sum(
        stat.size
        for stat in snapshot.statistics("filename")
        if "/exporter/" in stat.traceback[0].filename
    )
    assert len(source.details.cache) == 500
    assert held / 500 < 150, held / 500  # bytes an image; measured 206 before, 88 after


async def test_fan_out_is_rate_limited_by_the_clients_token_bucket(clock: FakeClock) -> None:
    telemetry = Telemetry()
    client = make_client(Sas(**{BASELINE: baseline_answer}), telemetry, clock)
    # The client's bucket for the action, on the fake clock (SasClient makes it on first use).
    client._buckets[BASELINE] = TokenBucket(10.0, burst=1, clock=clock, sleep=clock.sleep)
    source = baseline_source(client, telemetry, concurrency=8)
    await source.refresh(inventory(*(image(i) for i in range(25))))
    # The first at once, then 24 more at 10/s: the bucket waited 2.4 s in all.
    assert sum(clock.slept) == pytest.approx(2.4, abs=0.01)


def flaky_baseline(broken: set[str]) -> Callable[[dict[str, str], httpx.Request], httpx.Response]:
    def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        if params["ImageUuid"] in broken:
            return httpx.Response(500, json={"Code": "ServerError", "Message": "ServerError"})
        return baseline_answer(params, request)

    return answer


async def test_a_failed_lookup_keeps_the_images_last_good_detail(clock: FakeClock) -> None:
    broken: set[str] = set()
    telemetry = Telemetry()
    client = make_client(Sas(**{BASELINE: flaky_baseline(broken)}), telemetry, clock)
    source = baseline_source(client, telemetry, concurrency=2)
    first = await source.refresh(inventory(*[image(i) for i in range(6)]))
    broken.add("uuid-3")
    rescanned = [image(i, marker="m1") for i in range(6)]  # every image needs a new lookup
    data = await source.refresh(inventory(*rescanned))
    assert data.samples == first.samples  # uuid-3 kept its last good counts
    assert source.details.failed == 1
    labels = skey("sas_baseline").labels()
    assert telemetry.value("imagesec_detail_lookup_failures", labels) == 1
    assert set(source.details.cache) == {(f"uuid-{i}", "m1") for i in range(6) if i != 3}


async def test_an_expired_detail_is_still_the_fallback_and_one_entry_per_image(
    clock: FakeClock,
) -> None:
    broken: set[str] = set()
    telemetry = Telemetry()
    client = make_client(Sas(**{BASELINE: flaky_baseline(broken)}), telemetry, clock)
    source = baseline_source(client, telemetry, concurrency=2, ttl=3600, timer=clock)
    first = await source.refresh(inventory(*[image(i) for i in range(6)]))
    clock.advance(3601)  # every entry past the TTL: looked up again
    broken.add("uuid-2")
    data = await source.refresh(inventory(*[image(i) for i in range(6)]))
    assert data.samples == first.samples  # uuid-2 served its expired detail, not dropped
    assert set(source.details.cache) == {(f"uuid-{i}", "m0") for i in range(6) if i != 2}
    assert set(source.details.last_good) == {f"uuid-{i}" for i in range(6)}
    assert len(source.details._entries) == 6  # the cache and the fallback are one entry
    broken.clear()
    data = await source.refresh(inventory(*[image(i) for i in range(3)]))  # 3 left
    assert len(source.details._entries) == 3 and len(data.keys) == 3


async def test_most_lookups_failing_fails_the_refresh_and_keeps_what_completed(
    clock: FakeClock,
) -> None:
    broken = {f"uuid-{i}" for i in range(2, 6)}
    telemetry = Telemetry()
    client = make_client(Sas(**{BASELINE: flaky_baseline(broken)}), telemetry, clock)
    source = baseline_source(client, telemetry, concurrency=1)
    refs = [image(i) for i in range(6)]
    with pytest.raises(UpstreamError) as err:  # the error itself, not an ExceptionGroup
        await source.refresh(inventory(*refs))
    assert err.value.code == "ServerError"
    assert set(source.details.cache) == {(f"uuid-{i}", "m0") for i in range(2)}
    broken.clear()
    before = api_requests(telemetry, BASELINE)
    data = await source.refresh(inventory(*refs))
    assert api_requests(telemetry, BASELINE) - before == 4
    assert len(data.samples) == 18


async def test_detail_fan_out_rejects_a_zero_concurrency() -> None:
    with pytest.raises(ValueError):
        DetailFanOut(skey("x"), Telemetry(), concurrency=0)


# -- vulnerabilities --------------------------------------------------------------------------


def vul_answer(per_image: dict[str, dict[str, int]], broken: set[str] | None = None) -> Answer:
    """DescribeImageVulList as Sas pages it: records per Necessity, filtered and sliced.

    Records of images in ``broken`` come back without a Necessity of the documented type.
    """

    def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        uuid = params["Uuids"]
        records: list[dict[str, Any]] = [
            {"Name": f"{uuid}-{n}-{i}", "Necessity": n}
            for n, count in per_image[uuid].items()
            for i in range(count)
            if params.get("Necessity") in (None, n)
        ]
        if broken and uuid in broken:
            records[0]["Necessity"] = ["not", "a", "string"]
        page, size = int(params.get("CurrentPage", 1)), int(params.get("PageSize", 10))
        assert 1 <= size <= 100
        rows = records[(page - 1) * size : page * size]
        body = {
            "CurrentPage": page,
            "PageSize": size,
            "TotalCount": len(records),
            "VulRecords": rows,
        }
        return ok(body)

    return answer


async def test_vulnerabilities_by_fix_priority(clock: FakeClock) -> None:
    counts = {
        "uuid-1": {"asap": 4, "later": 9, "nntf": 30},
        "uuid-2": {"asap": 0, "later": 0, "nntf": 0},
    }
    handler = Sas(**{VULS: vul_answer(counts)})
    telemetry = Telemetry()
    source = vul_source(make_client(handler, telemetry, clock), telemetry)
    data = await source.refresh(inventory(image(1, vulnerabilities=43), image(2)))
    registry = registry_of(snapshot_of((source, data)))
    metric = "imagesec_image_vulnerabilities_by_severity"
    for i, (high, medium, low) in ((1, (4, 9, 30)), (2, (0, 0, 0))):
        key = image(i).key
        assert registry.get_sample_value(metric, labels_of(key, severity="high")) == high
        assert registry.get_sample_value(metric, labels_of(key, severity="medium")) == medium
        assert registry.get_sample_value(metric, labels_of(key, severity="low")) == low
        assert registry.get_sample_value(metric, labels_of(key, severity="critical")) is None
    # One call per image: a page of up to 100 records, counted by their Necessity.
    params = handler.params(VULS)
    assert len(params) == 2
    assert {p["Type"] for p in params} == {"cve"}
    assert {p["PageSize"] for p in params} == {"100"}
    assert {p["StatusList"] for p in params} == {"1,4"}
    assert all("Necessity" not in p for p in params)


@pytest.mark.parametrize(
    ("asap", "later", "nntf", "calls", "filtered"),
    [
        (10, 20, 70, 1, 0),  # exactly one page
        (30, 70, 150, 3, 0),  # three pages of records: as cheap as the filtered counts
        (100, 150, 200, 3, 3),  # more: three filtered counts, no record page at all
    ],
)
async def test_vulnerability_counts_take_the_cheaper_way(
    clock: FakeClock, asap: int, later: int, nntf: int, calls: int, filtered: int
) -> None:
    counts = {"uuid-1": {"asap": asap, "later": later, "nntf": nntf}}
    handler = Sas(**{VULS: vul_answer(counts)})
    telemetry = Telemetry()
    source = vul_source(make_client(handler, telemetry, clock), telemetry)
    data = await source.refresh(inventory(image(1, vulnerabilities=asap + later + nntf)))
    values = {s.extra[0]: s.value for s in data.samples}
    assert values == {"high": asap, "medium": later, "low": nntf}
    params = handler.params(VULS)
    assert len(params) == calls
    assert sum("Necessity" in p for p in params) == filtered


async def test_vulnerability_records_that_do_not_add_up_fall_back_to_filtered_counts(
    clock: FakeClock,
) -> None:
    counts = {"uuid-1": {"asap": 2, "later": 3, "nntf": 4}}
    handler = Sas(**{VULS: vul_answer(counts, broken={"uuid-1"})})
    telemetry = Telemetry()
    source = vul_source(make_client(handler, telemetry, clock), telemetry)
    # The inventory under-states the total (records are read first), one record is invalid.
    data = await source.refresh(inventory(image(1, vulnerabilities=5)))
    values = {s.extra[0]: s.value for s in data.samples}
    assert values == {"high": 2, "medium": 3, "low": 4}  # TotalCount of each filter
    params = handler.params(VULS)
    assert [p.get("Necessity") for p in params] == [None, "asap", "later", "nntf"]
    invalid = telemetry.values("imagesec_invalid_rows")
    assert sum(invalid.values()) == 1


async def test_a_refused_record_page_size_falls_back_to_filtered_counts_for_good(
    clock: FakeClock,
) -> None:
    counts = {f"uuid-{i}": {"asap": i, "later": 2, "nntf": 3} for i in (1, 2)}
    paged = vul_answer(counts)

    def answer(params: dict[str, str], request: httpx.Request) -> httpx.Response:
        if params["PageSize"] != "1":  # a Sas that takes no page of 100
            body = {"RequestId": "r", "Code": "InvalidParameter", "Message": "PageSize"}
            return httpx.Response(400, json=body)
        return paged(params, request)

    handler = Sas(**{VULS: answer})
    telemetry = Telemetry()
    source = vul_source(make_client(handler, telemetry, clock), telemetry, concurrency=1)
    data = await source.refresh(inventory(image(1), image(2)))
    values = {(s.image.image_id, s.extra[0]): s.value for s in data.samples}
    assert values[("uuid-1", "high")] == 1 and values[("uuid-2", "high")] == 2
    assert values[("uuid-2", "low")] == 3
    # One refused page, then only the filtered counts: 1 + 3 + 3 calls.
    assert [p.get("Necessity") for p in handler.params(VULS)] == [
        None,
        "asap",
        "later",
        "nntf",
        "asap",
        "later",
        "nntf",
    ]


async def test_vulnerabilities_are_looked_up_again_when_the_total_changes(
    clock: FakeClock,
) -> None:
    counts = {f"uuid-{i}": {"asap": 1, "later": 2, "nntf": 3} for i in range(5)}
    handler = Sas(**{VULS: vul_answer(counts)})
    telemetry = Telemetry()
    source = vul_source(make_client(handler, telemetry, clock), telemetry)
    refs = [image(i, vulnerabilities=6) for i in range(5)]
    await source.refresh(inventory(*refs))
    assert api_requests(telemetry, VULS) == 5
    await source.refresh(inventory(*refs))
    assert api_requests(telemetry, VULS) == 5
    counts["uuid-0"]["nntf"] = 4
    refs[0] = image(0, vulnerabilities=7)  # same scan marker, new total
    refs[1] = image(1, marker="m1", vulnerabilities=6)  # new scan, same total
    data = await source.refresh(inventory(*refs))
    assert api_requests(telemetry, VULS) == 7
    low = {s.image.image_id: s.value for s in data.samples if s.extra == ("low",)}
    assert low["uuid-0"] == 4


async def test_a_vulnerability_answer_without_total_is_a_payload_error(clock: FakeClock) -> None:
    handler = Sas(**{VULS: lambda params, request: ok({"RequestId": "r", "VulRecords": []})})
    telemetry = Telemetry()
    source = vul_source(make_client(handler, telemetry, clock), telemetry)
    with pytest.raises(PayloadError, match="TotalCount") as err:
        await source.refresh(inventory(image(1)))
    assert err.value.code == "bad_payload"


# -- vocabularies, wiring, isolation ----------------------------------------------------------


def test_sas_malware_vocabularies_are_in_the_catalogue() -> None:
    assert set(SAS_MALWARE_LEVELS) <= set(MALWARE_LEVELS)
    assert set(SAS_MALWARE_STATUSES) <= set(MALWARE_STATUSES)
    assert "unknown" not in SAS_MALWARE_LEVELS + SAS_MALWARE_STATUSES


def inventory_row(i: int) -> dict[str, Any]:
    return {
        "Uuid": f"uuid-{i}",
        "RepoName": f"repo{i}",
        "RepoNamespace": "shop",
        "Tag": "1.0",
        "RegionId": "cn-hangzhou",
        "VulCount": 6,
        "HcCount": 3,
        "ScaStatus": "SUCCESS",
        "LastScanTime": 1700000000000 + i,
    }


def full_sas(rows: list[dict[str, Any]], **overrides: Answer) -> Sas:
    counts = {r["Uuid"]: {"asap": 1, "later": 2, "nntf": 3} for r in rows}
    answers: dict[str, Answer] = {
        "DescribeImageInstances": lambda p, r: ok(paged("ImageInstanceList", rows)),
        BASELINE: baseline_answer,
        VULS: vul_answer(counts),
        MALWARE: lambda p, r: ok(
            paged(
                "AffectedMaliciousFileImagesResponse",
                [malware_row("uuid-1", "remind", 2, "m", "/m")],
            )
        ),
        RISK: lambda p, r: ok(paged("ImageRiskList", [risk_row(1, '{"vul": 6}')])),
    }
    answers.update(overrides)
    return Sas(**answers)


def aliyun_config(**collectors: bool) -> Any:
    return parse_config(
        {
            "accounts": [
                {
                    "name": ACCOUNT,
                    "provider": "aliyun",
                    "regions": [REGION],
                    "collectors": {k: {"enabled": v} for k, v in collectors.items()},
                }
            ],
            "refresh": {"concurrency": 2},
        }
    )


CREDS = {("aliyun", ACCOUNT): ResolvedCredentials("id", SecretStr("secret"), None, "env")}


async def test_factories_build_the_four_collectors_on_the_inventory() -> None:
    handler = full_sas([inventory_row(i) for i in range(3)])
    telemetry = Telemetry()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sources = build_sources(aliyun_config(), CREDS, telemetry, http)
        names = [s.key.source for s in sources]
        assert names == [
            "sas_images",
            "sas_baseline",
            "sas_vulnerabilities",
            "sas_malicious",
            "sas_image_risk",
        ]
        deps = {s.key.source: s.depends_on for s in sources}
        assert deps["sas_image_risk"] is None and deps["sas_images"] is None
        for name in ("sas_baseline", "sas_vulnerabilities", "sas_malicious"):
            assert deps[name] == INVENTORY
        # One client per (account, region): one rate limit per action for all collectors.
        assert len({id(s.client) for s in sources}) == 1  # type: ignore[attr-defined]
        snapshot = await Refresher(sources, telemetry=telemetry).run_once()
    assert all(state.up for state in snapshot.sources.values())
    registry = registry_of(snapshot)
    key = image(1).key
    expected = {
        ("imagesec_image_baseline_risk_items", "severity", "high"): 2,
        ("imagesec_image_vulnerabilities_by_severity", "severity", "low"): 3,
        ("imagesec_image_in_use_findings", "finding", "vulnerability"): 6,
        ("imagesec_image_vulnerabilities", "", ""): 6,
    }
    for (metric, label, value), want in expected.items():
        labels = labels_of(key, **({label: value} if label else {}))
        assert registry.get_sample_value(metric, labels) == want, metric
    labels = labels_of(key, level="remind", status="verifying")
    assert registry.get_sample_value("imagesec_image_malicious_samples", labels) == 1
    # Declared from the start: the cache counters of both per-image collectors exist.
    for source in ("sas_baseline", "sas_vulnerabilities"):
        assert cache(telemetry, source, "miss") == 3


async def test_collectors_can_be_switched_off() -> None:
    telemetry = Telemetry()
    async with httpx.AsyncClient(transport=httpx.MockTransport(full_sas([]))) as http:
        config = aliyun_config(sas_malicious=False, sas_vulnerabilities=False)
        sources = build_sources(config, CREDS, telemetry, http, overrides={"sas_baseline": False})
    assert [s.key.source for s in sources] == ["sas_images", "sas_image_risk"]


async def test_one_failing_collector_is_down_alone(clock: FakeClock) -> None:
    denied = httpx.Response(
        403, json={"Code": "NoPermission", "Message": "caller has no permission"}
    )
    handler = full_sas([inventory_row(i) for i in range(3)], **{MALWARE: lambda p, r: denied})
    telemetry = Telemetry()
    client = make_client(handler, telemetry, clock)
    inv = SasImagesSource(INVENTORY, 300, client)
    sources: list[Source] = [
        inv,
        baseline_source(client, telemetry),
        vul_source(client, telemetry),
        SasMaliciousSource(skey("sas_malicious"), 900, client, depends_on=INVENTORY),
        SasImageRiskSource(skey("sas_image_risk"), 900, client),
    ]
    snapshot = await Refresher(sources, telemetry=telemetry, clock=clock).run_once()
    up = {key.source: state.up for key, state in snapshot.sources.items()}
    assert up == {
        "sas_images": True,
        "sas_baseline": True,
        "sas_vulnerabilities": True,
        "sas_malicious": False,
        "sas_image_risk": True,
    }
    health = CollectorRegistry()
    health.register(HealthCollector(lambda: snapshot, telemetry))
    labels = {"provider": "aliyun", "account": ACCOUNT, "region": REGION}
    assert health.get_sample_value("imagesec_up", labels | {"source": "sas_malicious"}) == 0
    assert health.get_sample_value("imagesec_up", labels | {"source": "sas_baseline"}) == 1
    failures = telemetry.value(
        "imagesec_refresh_failures", (*skey("sas_malicious").labels(), "NoPermission")
    )
    assert failures == 1
    assert snapshot.sources[skey("sas_malicious")].last_error is not None


async def test_per_image_collectors_without_inventory_data_fail_visibly(clock: FakeClock) -> None:
    handler = full_sas([], **{"DescribeImageInstances": lambda p, r: httpx.Response(500)})
    telemetry = Telemetry()
    client = make_client(handler, telemetry, clock)
    sources: list[Source] = [
        SasImagesSource(INVENTORY, 300, client),
        baseline_source(client, telemetry),
    ]
    snapshot = await Refresher(sources, telemetry=telemetry, clock=clock).run_once()
    state = snapshot.sources[skey("sas_baseline")]
    assert not state.up and api_requests(telemetry, BASELINE) == 0
    failures = telemetry.value(
        "imagesec_refresh_failures", (*skey("sas_baseline").labels(), "upstream_unavailable")
    )
    assert failures == 1


async def test_auth_errors_of_a_lookup_are_not_retried(clock: FakeClock) -> None:
    denied = httpx.Response(403, json={"Code": "NoPermission", "Message": "no"})
    handler = Sas(**{BASELINE: lambda p, r: denied})
    telemetry = Telemetry()
    client = make_client(handler, telemetry, clock, retry=RetryPolicy(max_attempts=4))
    source = baseline_source(client, telemetry, concurrency=1)
    with pytest.raises(AuthError):
        await source.refresh(inventory(image(1), image(2)))
    assert api_requests(telemetry, BASELINE) == 1
