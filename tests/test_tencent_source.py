"""TCSS collectors: seed 003 in /metrics, the detail cache, vanishing images, cross-provider labels."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.clouds.aliyun.schemas import ImageInstance
from exporter.clouds.aliyun.source import image_key as sas_image_key
from exporter.clouds.aliyun.source import instance_samples
from exporter.clouds.http import RetryPolicy
from exporter.clouds.tencent.api import TcssClient
from exporter.clouds.tencent.signing import TC3Auth
from exporter.clouds.tencent.source import TcssImageDetailSource, TcssImagesSource
from exporter.collector import ImageCollector, render_images
from exporter.errors import AuthError
from exporter.metrics import (
    CATALOGUE,
    IMAGE_LABELS,
    MALWARE_LEVELS,
    MALWARE_STATUSES,
    SCAN_STATUSES,
    SCANS,
    SEVERITIES,
)
from exporter.model import Snapshot, SourceData, SourceKey, SourceState
from exporter.refresh import Refresher
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock, fixture_json

LIST = "DescribeAssetImageList"
DETAIL = "DescribeAssetImageDetail"
REGION = "ap-guangzhou"
IMAGES = SourceKey("tencent", "prod", REGION, "tcss_images")
DETAILS = SourceKey("tencent", "prod", REGION, "tcss_image_detail")


def image(i: int, **overrides: Any) -> dict[str, Any]:
    """One image as TCSS knows it: the union of the list row and the detail answer."""
    row: dict[str, Any] = {
        "ImageID": f"sha256:{i:064x}",
        "ImageName": f"ccr.ccs.tencentyun.com/shop/app{i}:1.{i}",
        "ImageDigest": f"sha256:{i + 1000:064x}",
        "CreateTime": "2024-01-01 08:00:00",
        "Size": 1000 + i,
        "OsName": "debian:12",
        "Architecture": "amd64",
        "HostCnt": 2,
        "ContainerCnt": 3,
        "VulCnt": 10 + i,
        "CriticalLevelVulCnt": 1,
        "HighLevelVulCnt": 2,
        "MediumLevelVulCnt": 3,
        "LowLevelVulCnt": 4 + i,
        "RiskCnt": 5,
        "VirusCnt": 1,
        "SensitiveInfoCnt": 2,
        "ScanTime": "2024-10-25 16:13:39",
        "ScanStatus": "scanned",
        "AgentError": "",
        "ScanError": "",
        "ScanVulError": "",
        "ScanVirusError": "",
        "ScanRiskError": "",
        "ScanVulProgress": 100,
        "ScanVirusProgress": 100,
        "ScanRiskProgress": 100,
    }
    row.update(overrides)
    return row


def ok(payload: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"Response": {**payload, "RequestId": "req"}})


class Tcss:
    """Fake TCSS over a mutable fleet; ``detail_errors`` maps ImageID to a vendor error code.

    ``gone`` lists images that are still in the list answer but no longer have a detail (they
    were deleted between the two calls).
    """

    def __init__(self, images: list[dict[str, Any]]) -> None:
        self.images = images
        self.detail_errors: dict[str, str] = {}
        self.detail_override: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        action = request.headers["X-TC-Action"]
        params = json.loads(request.content)
        self.requests.append((action, params))
        if action == LIST:
            rows = self.images[params["Offset"] : params["Offset"] + params["Limit"]]
            return ok({"List": rows, "TotalCount": len(self.images)})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)  # yield to the loop so that concurrent calls overlap
        self.in_flight -= 1
        image_id = params["ImageID"]
        if image_id in self.detail_errors:
            code = self.detail_errors[image_id]
            return httpx.Response(
                200, json={"Response": {"Error": {"Code": code, "Message": "x"}, "RequestId": "r"}}
            )
        found = next(i for i in self.images if i["ImageID"] == image_id)
        detail = {**found, "ScanStatus": found["ScanStatus"].upper()}
        detail.update(self.detail_override.get(image_id, {}))
        return ok(detail)

    def detail_ids(self) -> list[str]:
        return [p["ImageID"] for a, p in self.requests if a == DETAIL]


class Timer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_sources(
    handler: Tcss,
    telemetry: Telemetry,
    clock: FakeClock,
    *,
    concurrency: int = 8,
    timer: Timer | None = None,
) -> tuple[TcssImagesSource, TcssImageDetailSource]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = TcssClient(
        http,
        TC3Auth("AKIDtest", "key", clock=clock),
        base_url="https://tcss.tencentcloudapi.com",
        account="prod",
        region=REGION,
        telemetry=telemetry,
        sleep=clock.sleep,
        clock=clock,
        retry=RetryPolicy(max_attempts=2),
    )
    images = TcssImagesSource(IMAGES, 300, client)
    details = TcssImageDetailSource(
        DETAILS,
        300,
        client,
        depends_on=IMAGES,
        telemetry=telemetry,
        concurrency=concurrency,
        cache_ttl=3600,
        timer=timer or Timer(),
    )
    return images, details


def detail_calls(telemetry: Telemetry) -> float:
    return telemetry.value("imagesec_api_requests", ("tencent", "prod", REGION, DETAIL))


def cache(telemetry: Telemetry, result: str) -> float:
    return telemetry.value("imagesec_detail_cache_requests", (*DETAILS.labels(), result))


def registry_of(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ImageCollector(lambda: snapshot))
    return registry


def labels_of(row: dict[str, Any], **extra: str) -> dict[str, str]:
    from exporter.normalise import split_image_name

    namespace, repo, tag = split_image_name(row["ImageName"])
    return {
        "provider": "tencent",
        "account": "prod",
        "region": REGION,
        "repo_namespace": namespace,
        "repo": repo,
        "tag": tag,
        "image_id": row["ImageID"],
        **extra,
    }


async def test_seed_003_numbers_appear_in_metrics(clock: FakeClock) -> None:
    seed = fixture_json("tencent", DETAIL)["Response"]
    # The list answer describes the same image with the same field names (3.6), so the seed
    # serves as the list row too; the detail answer is the seed verbatim.
    handler = Tcss([{**seed, "ScanStatus": "scanned"}])
    handler.detail_override[seed["ImageID"]] = seed
    telemetry = Telemetry()
    refresher = Refresher(list(make_sources(handler, telemetry, clock)), telemetry=telemetry)
    snapshot = await refresher.run_once()
    assert snapshot.sources[IMAGES].up and snapshot.sources[DETAILS].up

    registry = registry_of(snapshot)
    labels = {
        "provider": "tencent",
        "account": "prod",
        "region": REGION,
        "repo_namespace": "",
        "repo": "centos",
        "tag": "latest",
        "image_id": seed["ImageID"],
    }

    def value(metric: str, **extra: str) -> float | None:
        return registry.get_sample_value(metric, {**labels, **extra})

    assert value("imagesec_image_vulnerabilities") == 230
    assert value("imagesec_image_risks") == 211
    assert value("imagesec_image_size_bytes") == 231268856
    assert value("imagesec_image_hosts") == 24
    assert value("imagesec_image_containers") == 51
    assert value("imagesec_image_last_scan_timestamp_seconds") == 1729844019  # 16:13:39 +08
    assert value("imagesec_image_created_timestamp_seconds") == 1631730005  # 02:20:05 +08
    assert value("imagesec_image_sensitive_info_items") == 0
    assert value("imagesec_image_malicious_samples_all") == 0
    # No samples: no grid cell (the total above says 0, so absence is not ambiguous).
    assert value("imagesec_image_malicious_samples", level="unknown", status="unknown") is None
    assert value("imagesec_image_scan_status", status="succeeded") == 1
    assert value("imagesec_image_scan_status", status="failed") is None
    for scan in ("vulnerability", "malware", "risk"):
        assert value("imagesec_image_scan_progress_ratio", scan=scan) == 0
    assert value("imagesec_image_scan_progress_ratio", scan="overall") is None  # not reported
    for scan in SCANS:
        assert value("imagesec_image_scan_error", scan=scan) == 1  # "timeout" everywhere
    info = {
        "digest": seed["ImageDigest"],
        "registry_type": "",
        "repo_type": "",
        "os": "centos:8.4.2105",
        "architecture": "Metadata",
        "image_region": REGION,
    }
    assert value("imagesec_image_info", **info) == 1

    # The same numbers in the text exposition /metrics serves.
    text = render_images(snapshot).decode()
    rendered = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels["image_id"] == seed["ImageID"]
    }
    assert rendered["imagesec_image_vulnerabilities"] == 230
    assert rendered["imagesec_image_risks"] == 211
    assert rendered["imagesec_image_size_bytes"] == 231268856
    assert rendered["imagesec_image_last_scan_timestamp_seconds"] == 1729844019


async def test_list_feeds_severities_and_scan_status(clock: FakeClock) -> None:
    rows = [image(1), image(2, ScanStatus="scanErr"), image(3, ScanStatus="weird")]
    handler = Tcss(rows)
    telemetry = Telemetry()
    images, _ = make_sources(handler, telemetry, clock)
    data = await images.refresh(None)
    snapshot = Snapshot({IMAGES: SourceState(IMAGES, 300, data, up=True)})
    registry = registry_of(snapshot)
    by_severity = "imagesec_image_vulnerabilities_by_severity"
    expected = dict(zip(SEVERITIES, (1, 2, 3, 5), strict=True))
    for severity, count in expected.items():
        assert (
            registry.get_sample_value(by_severity, labels_of(rows[0], severity=severity)) == count
        )
    statuses = ["succeeded", "failed", "unknown"]
    for row, status in zip(rows, statuses, strict=True):
        for candidate in SCAN_STATUSES:
            got = registry.get_sample_value(
                "imagesec_image_scan_status", labels_of(row, status=candidate)
            )
            assert got == (1 if candidate == status else None)  # only the current state
    assert [ref.native_id for ref in data.images] == [r["ImageID"] for r in rows]
    assert data.images[0].key.repo_namespace == "shop"
    assert data.images[0].key.repo == "app1"
    assert data.images[0].key.tag == "1.1"
    assert data.images[0].vulnerabilities == 11
    # The list carries no info series: the detail collector emits the full one.
    assert not [s for s in data.samples if s.metric == "imagesec_image_info"]


async def test_duplicate_rows_are_exported_once(clock: FakeClock) -> None:
    rows = [image(1), image(2), image(1), image(2), image(3)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    refresher = Refresher(list(make_sources(handler, telemetry, clock)), telemetry=telemetry)
    snapshot = await refresher.run_once()
    text = render_images(snapshot).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    vulns = families["imagesec_image_vulnerabilities"].samples
    assert sorted(s.labels["image_id"] for s in vulns) == sorted(
        image(i)["ImageID"] for i in (1, 2, 3)
    )
    assert len(handler.detail_ids()) == 3
    info = families["imagesec_image_info"].samples
    assert len(info) == 3


async def test_unchanged_fleet_costs_no_detail_calls_and_changes_cost_one_each(
    clock: FakeClock,
) -> None:
    rows = [image(i) for i in range(12)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    timer = Timer()
    sources = make_sources(handler, telemetry, clock, timer=timer)
    refresher = Refresher(list(sources), telemetry=telemetry)

    await refresher.run_once()
    assert detail_calls(telemetry) == 12
    assert (cache(telemetry, "hit"), cache(telemetry, "miss")) == (0, 12)

    await refresher.run_once()
    assert detail_calls(telemetry) == 12  # nothing changed: no detail call at all
    assert (cache(telemetry, "hit"), cache(telemetry, "miss")) == (12, 12)

    timer.now = 300.0  # the stage floor has passed since the details were fetched
    rows[3]["ScanTime"] = "2024-10-26 09:00:00"
    rows[7]["VulCnt"] = 99
    rows[9]["ScanStatus"] = "scanErr"
    snapshot = await refresher.run_once()
    assert detail_calls(telemetry) == 15  # three images changed: three calls
    assert handler.detail_ids()[-3:] == [rows[i]["ImageID"] for i in (3, 7, 9)]
    assert (cache(telemetry, "hit"), cache(telemetry, "miss")) == (21, 15)
    assert snapshot.sources[DETAILS].up
    assert len(snapshot.sources[DETAILS].data.images) == 12  # type: ignore[union-attr]


async def test_a_running_scan_is_looked_up_once_per_stage_change_after_the_floor(
    clock: FakeClock,
) -> None:
    rows = [image(1), image(2)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    timer = Timer()
    refresher = Refresher(
        list(make_sources(handler, telemetry, clock, timer=timer)), telemetry=telemetry
    )
    first = rows[0]["ImageID"]
    await refresher.run_once()  # t=0: both fetched
    calls = [detail_calls(telemetry)]

    # A scan starts at t=100: a stage change, but within the floor of the last fetch.
    timer.now = 100.0
    rows[0]["ScanStatus"] = "scanning"
    handler.detail_override[first] = {"ScanVulProgress": 40}
    await refresher.run_once()
    calls.append(detail_calls(telemetry))

    # t=300: the floor has passed, the stage still differs from the cached one: one call.
    timer.now = 300.0
    snapshot = await refresher.run_once()
    calls.append(detail_calls(telemetry))
    progress = labels_of(rows[0], scan="vulnerability")
    assert (
        registry_of(snapshot).get_sample_value("imagesec_image_scan_progress_ratio", progress)
        == 0.4
    )

    # t=900: still scanning (same stage): no call, whatever the progress does meanwhile.
    timer.now = 900.0
    handler.detail_override[first] = {"ScanVulProgress": 80}
    await refresher.run_once()
    calls.append(detail_calls(telemetry))

    # t=950: the scan finishes (new ScanTime and counts): looked up at once, floor or not.
    timer.now = 950.0
    rows[0].update(ScanStatus="scanned", ScanTime="2024-10-26 09:00:00", VulCnt=3)
    handler.detail_override.pop(first)
    snapshot = await refresher.run_once()
    calls.append(detail_calls(telemetry))
    assert calls == [2, 2, 3, 3, 4]
    assert handler.detail_ids()[2:] == [first, first]
    assert (
        registry_of(snapshot).get_sample_value("imagesec_image_scan_progress_ratio", progress)
        == 1.0
    )


async def test_cached_details_expire_after_the_ttl(clock: FakeClock) -> None:
    rows = [image(1), image(2)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    timer = Timer()
    refresher = Refresher(
        list(make_sources(handler, telemetry, clock, timer=timer)), telemetry=telemetry
    )
    await refresher.run_once()
    timer.now = 3599
    await refresher.run_once()
    assert detail_calls(telemetry) == 2
    timer.now = 3601
    await refresher.run_once()
    assert detail_calls(telemetry) == 4


async def test_images_gone_from_the_list_leave_the_cache(clock: FakeClock) -> None:
    rows = [image(1), image(2)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    images, details = make_sources(handler, telemetry, clock)
    refresher = Refresher([images, details], telemetry=telemetry)
    await refresher.run_once()
    del rows[1]
    await refresher.run_once()
    assert [key[0] for key in details.details.cache] == [image(1)["ImageID"]]


async def test_image_vanishing_between_list_and_detail_is_skipped(clock: FakeClock) -> None:
    rows = [image(1), image(2), image(3)]
    handler = Tcss(rows)
    handler.detail_errors[rows[0]["ImageID"]] = "ResourceNotFound"
    handler.detail_errors[rows[2]["ImageID"]] = "InvalidParameterValue.DataNotFound"
    telemetry = Telemetry()
    refresher = Refresher(list(make_sources(handler, telemetry, clock)), telemetry=telemetry)
    snapshot = await refresher.run_once()
    state = snapshot.sources[DETAILS]
    assert state.up
    assert [ref.native_id for ref in state.data.images] == [rows[1]["ImageID"]]  # type: ignore[union-attr]
    errors = telemetry.values("imagesec_api_request_errors")
    assert errors[("tencent", "prod", REGION, DETAIL, "ResourceNotFound")] == 1
    assert errors[("tencent", "prod", REGION, DETAIL, "InvalidParameterValue.DataNotFound")] == 1
    registry = registry_of(snapshot)
    assert registry.get_sample_value("imagesec_image_risks", labels_of(rows[1])) == 5
    assert registry.get_sample_value("imagesec_image_risks", labels_of(rows[0])) is None
    # The list still exports what it knows about the vanished images.
    assert registry.get_sample_value("imagesec_image_vulnerabilities", labels_of(rows[0])) == 11


async def test_detail_that_does_not_fit_skips_only_that_image(clock: FakeClock) -> None:
    rows = [image(1), image(2)]
    handler = Tcss(rows)
    handler.detail_override[rows[0]["ImageID"]] = {"SensitiveInfoCnt": -1}
    telemetry = Telemetry()
    refresher = Refresher(list(make_sources(handler, telemetry, clock)), telemetry=telemetry)
    snapshot = await refresher.run_once()
    assert snapshot.sources[DETAILS].up
    assert [r.native_id for r in snapshot.sources[DETAILS].data.images] == [rows[1]["ImageID"]]  # type: ignore[union-attr]
    invalid = ("tencent", "prod", REGION, DETAIL)
    assert telemetry.value("imagesec_invalid_rows", invalid) == 1
    await refresher.run_once()
    assert handler.detail_ids().count(rows[0]["ImageID"]) == 2  # not cached: asked again


async def test_other_detail_errors_fail_the_source_but_keep_cached_results(
    clock: FakeClock,
) -> None:
    rows = [image(i) for i in range(4)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    images, details = make_sources(handler, telemetry, clock)
    refresher = Refresher([images, details], telemetry=telemetry)
    first = await refresher.run_once()
    assert first.sources[DETAILS].up

    rows[1]["ScanTime"] = "2024-11-01 00:00:00"
    rows.append(image(9))
    handler.detail_errors[rows[1]["ImageID"]] = "AuthFailure.UnauthorizedOperation"
    second = await refresher.run_once()
    state = second.sources[DETAILS]
    assert not state.up
    assert "AuthFailure.UnauthorizedOperation" in (state.last_error or "")
    assert state.data is first.sources[DETAILS].data  # last good data still served
    failures = telemetry.values("imagesec_refresh_failures")
    assert failures[(*DETAILS.labels(), "AuthFailure.UnauthorizedOperation")] == 1
    # Once in the first refresh, once (an auth error is never retried) in the second.
    assert handler.detail_ids().count(rows[1]["ImageID"]) == 2

    del handler.detail_errors[rows[1]["ImageID"]]
    calls = detail_calls(telemetry)
    third = await refresher.run_once()
    assert third.sources[DETAILS].up
    # Only the changed image and the new one (unless the failed refresh already cached it).
    assert detail_calls(telemetry) - calls <= 2
    assert len(third.sources[DETAILS].data.images) == 5  # type: ignore[union-attr]


async def test_detail_errors_raise_the_source_error_itself(clock: FakeClock) -> None:
    rows = [image(1)]
    handler = Tcss(rows)
    handler.detail_errors[rows[0]["ImageID"]] = "AuthFailure.SignatureFailure"
    telemetry = Telemetry()
    images, details = make_sources(handler, telemetry, clock)
    upstream = await images.refresh(None)
    try:
        await details.refresh(upstream)
    except AuthError as err:
        assert err.code == "AuthFailure.SignatureFailure"
    else:
        raise AssertionError("expected AuthError")


async def test_detail_calls_are_concurrent_but_bounded(clock: FakeClock) -> None:
    rows = [image(i) for i in range(20)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    images, details = make_sources(handler, telemetry, clock, concurrency=3)
    await details.refresh(await images.refresh(None))
    assert handler.max_in_flight == 3
    assert len(handler.detail_ids()) == 20


async def test_detail_without_upstream_fails_cleanly(clock: FakeClock) -> None:
    telemetry = Telemetry()
    _, details = make_sources(Tcss([]), telemetry, clock)
    try:
        await details.refresh(None)
    except Exception as err:
        assert getattr(err, "code", "") == "upstream_unavailable"
    else:
        raise AssertionError("expected a SourceError")


async def test_cache_and_request_series_exist_before_the_first_refresh(clock: FakeClock) -> None:
    telemetry = Telemetry()
    make_sources(Tcss([]), telemetry, clock)
    assert cache(telemetry, "hit") == 0
    assert (*DETAILS.labels(), "miss") in telemetry.values("imagesec_detail_cache_requests")
    for action in (LIST, DETAIL):
        assert ("tencent", "prod", REGION, action) in telemetry.values("imagesec_api_requests")


async def test_every_label_value_is_in_the_catalogue_vocabularies(clock: FakeClock) -> None:
    rows = [image(1), image(2, ScanStatus="notScan", ScanVulError="boom")]
    handler = Tcss(rows)
    telemetry = Telemetry()
    refresher = Refresher(list(make_sources(handler, telemetry, clock)), telemetry=telemetry)
    snapshot = await refresher.run_once()
    vocabularies = {
        "severity": SEVERITIES,
        "status": SCAN_STATUSES,
        "scan": SCANS,
    }
    seen: set[str] = set()
    for state in snapshot.sources.values():
        for sample in state.data.samples:  # type: ignore[union-attr]
            seen.add(sample.metric)
            spec = CATALOGUE[sample.metric]
            extra = dict(zip(spec.labels[len(IMAGE_LABELS) :], sample.extra, strict=True))
            if sample.metric == "imagesec_image_malicious_samples":
                assert extra["level"] in MALWARE_LEVELS
                assert extra["status"] in MALWARE_STATUSES
                assert extra == {"level": "unknown", "status": "unknown"}
                continue
            for name, value in extra.items():
                if name in vocabularies:
                    assert value in vocabularies[name], (sample.metric, name, value)
    by_source = {
        key.source: {s.metric for s in state.data.samples}  # type: ignore[union-attr]
        for key, state in snapshot.sources.items()
    }
    assert not by_source["tcss_images"] & by_source["tcss_image_detail"]  # one origin each
    assert "imagesec_image_info" in by_source["tcss_image_detail"]


async def test_grafana_query_by_repo_and_severity_spans_both_providers(clock: FakeClock) -> None:
    sas_row = ImageInstance.model_validate(
        {
            "Uuid": "sas-uuid-1",
            "RepoNamespace": "shop",
            "RepoName": "cart",
            "Tag": "1.4.2",
            "RegionId": "cn-hangzhou",
            "Digest": "sha256:abc",
            "VulCount": 7,
            "ScaStatus": "SUCCESS",
        }
    )
    sas_key = sas_image_key(sas_row, "prod", "cn-shanghai")
    sas_source = SourceKey("aliyun", "prod", "cn-shanghai", "sas_images")
    sas_data = SourceData(samples=tuple(instance_samples(sas_row, sas_key)))

    handler = Tcss([image(1, ImageName="ccr.ccs.tencentyun.com/shop/cart:2.0")])
    telemetry = Telemetry()
    images, _ = make_sources(handler, telemetry, clock)
    tcss_data = await images.refresh(None)

    snapshot = Snapshot(
        {
            sas_source: SourceState(sas_source, 300, sas_data, up=True),
            IMAGES: SourceState(IMAGES, 300, tcss_data, up=True),
        }
    )
    families = {f.name: f for f in text_string_to_metric_families(render_images(snapshot).decode())}
    # sum by (provider) (imagesec_image_vulnerabilities{repo_namespace="shop",repo="cart"})
    vulns = [
        s
        for s in families["imagesec_image_vulnerabilities"].samples
        if s.labels["repo_namespace"] == "shop" and s.labels["repo"] == "cart"
    ]
    assert {s.labels["provider"]: s.value for s in vulns} == {"aliyun": 7, "tencent": 11}
    assert len({frozenset(s.labels) for s in vulns}) == 1  # identical label names
    assert set(vulns[0].labels) == set(IMAGE_LABELS)
    # ... and by severity: the TCSS side answers the same selector.
    high = [
        s
        for s in families["imagesec_image_vulnerabilities_by_severity"].samples
        if s.labels["repo"] == "cart" and s.labels["severity"] == "high"
    ]
    assert [(s.labels["provider"], s.value) for s in high] == [("tencent", 2)]
    assert set(high[0].labels) == {*IMAGE_LABELS, "severity"}


async def test_detail_fan_out_is_paced_at_20_per_second(clock: FakeClock) -> None:
    rows = [image(i) for i in range(60)]
    handler = Tcss(rows)
    telemetry = Telemetry()
    images, details = make_sources(handler, telemetry, clock)
    upstream = await images.refresh(None)
    started = clock()
    await details.refresh(upstream)
    # At most a burst of 20, then 20/s: at least two seconds on the injected clock.
    assert clock() - started >= 40 / 20 - 1e-6
    assert len(handler.detail_ids()) == 60


async def test_the_detail_cache_holds_tuples_of_the_values_used(clock: FakeClock) -> None:
    from exporter.clouds.tencent.schemas import DetailRow

    handler = Tcss([image(1), image(2)])
    telemetry = Telemetry()
    images, details = make_sources(handler, telemetry, clock)
    refresher = Refresher([images, details], telemetry=telemetry)
    await refresher.run_once()
    cached = list(details.details.cache.values())
    assert len(cached) == 2
    assert all(type(value) is DetailRow for value in cached)  # not a pydantic model per image
    assert cached[0].os_name is cached[1].os_name  # interned: one string for the fleet


def test_detail_samples_are_folded_into_columns_as_made_not_listed(monkeypatch: Any) -> None:
    # A pass's data (built again for every progress report) took a list of every Sample of
    # the source, about ten per image, before folding them.
    from exporter.clouds.tencent import source as tencent_source
    from exporter.clouds.tencent.schemas import DetailRow
    from exporter.model import ImageKey, ImageRef

    given: list[object] = []

    class Recording(SourceData):
        def __init__(self, samples: Any = (), images: Any = (), **kwargs: Any) -> None:
            given.append(samples)
            super().__init__(samples, images, **kwargs)

    monkeypatch.setattr(tencent_source, "SourceData", Recording)
    detail = DetailRow("sha256:d", "centos", "amd64", 1, 0, 2, "", "", "", "", "", 0.5, 1.0, 1.0)
    found = [
        (ImageRef(ImageKey("tencent", "prod", REGION, "", "r", f"t{i}", f"id{i}"), f"id{i}", "m"),
         None if i == 1 else detail)
        for i in range(3)
    ]  # fmt: skip
    data = TcssImageDetailSource._data(found)
    assert not isinstance(given[0], (list, tuple))  # a generator, consumed once
    assert [ref.native_id for ref in data.images] == ["id0", "id2"]
    assert {s.image.image_id for s in data.samples} == {"id0", "id2"}
