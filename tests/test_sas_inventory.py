"""Sas image inventory: the seed 000 sample, pagination and every kind of bad answer."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.clouds.aliyun.api import SasClient, describe_image_instances
from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.aliyun.source import SasImagesSource
from exporter.clouds.http import RetryPolicy
from exporter.collector import HealthCollector, ImageCollector, render_images
from exporter.errors import AuthError, PayloadError, UpstreamError
from exporter.model import SourceKey
from exporter.refresh import Refresher
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock, fixture_json

KEY = SourceKey("aliyun", "prod", "cn-shanghai", "sas_images")
ACTION = "DescribeImageInstances"
LABELS = ("aliyun", "prod", "cn-shanghai", ACTION)


def row(i: int, **overrides: Any) -> dict[str, Any]:
    base = {
        "Uuid": f"uuid-{i}",
        "RepoName": f"repo{i % 3}",
        "RepoNamespace": "shop",
        "Tag": f"1.{i}",
        "RegionId": "cn-hangzhou",
        "Digest": f"digest{i}",
        "VulCount": i,
        "ScaStatus": "SUCCESS",
        "ScaProgress": 100,
        "ImageSize": "1000",
    }
    base.update(overrides)
    return base


def page(rows: list[dict[str, Any]], total: int, current: int = 1) -> dict[str, Any]:
    return {
        "RequestId": f"req-{current}",
        "PageInfo": {
            "CurrentPage": current,
            "PageSize": 20,
            "TotalCount": total,
            "Count": len(rows),
        },
        "ImageInstanceList": rows,
    }


class Sas:
    """Fake Sas: answers DescribeImageInstances pages from ``answer(page_number, request)``."""

    def __init__(self, answer: Callable[[int, httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(int(request.url.params.get("CurrentPage", "1")), request)


def fleet(n: int) -> Callable[[int, httpx.Request], httpx.Response]:
    rows = [row(i) for i in range(n)]

    def answer(current: int, request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["PageSize"])
        chunk = rows[(current - 1) * size : current * size]
        return httpx.Response(200, json=page(chunk, n, current))

    return answer


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
        account="prod",
        region="cn-shanghai",
        telemetry=telemetry,
        sleep=clock.sleep,
        retry=kwargs.pop("retry", RetryPolicy(max_attempts=3)),
        **kwargs,
    )


async def test_seed_sample_parses_and_appears_in_metrics(clock: FakeClock) -> None:
    sample = fixture_json("aliyun", ACTION)
    handler = Sas(lambda current, request: httpx.Response(200, json=sample))
    telemetry = Telemetry()
    source = SasImagesSource(KEY, 300, make_client(handler, telemetry, clock))
    refresher = Refresher([source], telemetry=telemetry, clock=clock)
    snapshot = await refresher.run_once()
    assert snapshot.sources[KEY].up
    registry = CollectorRegistry()
    registry.register(ImageCollector(lambda: snapshot))
    item = sample["ImageInstanceList"][0]
    labels = {
        "provider": "aliyun",
        "account": "prod",
        # The configured source region, not the image's own: that is image_region on info.
        "region": "cn-shanghai",
        "repo_namespace": "N/A",
        "repo": "sas-script-test",
        "tag": "mysql_5.7",
        "image_id": item["Uuid"],
    }
    get = registry.get_sample_value
    assert get("imagesec_image_vulnerabilities", labels) == 0
    assert get("imagesec_image_alerts", labels) == 0
    assert get("imagesec_image_deployed", labels) == 1
    assert get("imagesec_image_size_bytes", labels) == 1604487690  # bytes, despite "MB" in the doc
    assert get("imagesec_image_created_timestamp_seconds", labels) == 1600069948.849
    assert get("imagesec_image_scan_progress_ratio", {**labels, "scan": "overall"}) == 1.0
    assert get("imagesec_image_scan_status", {**labels, "status": "succeeded"}) == 1
    assert get("imagesec_image_scan_status", {**labels, "status": "failed"}) is None
    info = {
        **labels,
        "digest": item["Digest"],
        "registry_type": "acr",
        "repo_type": "private",
        "os": "",
        "architecture": "",
        "image_region": "cn-hangzhou",
    }
    assert get("imagesec_image_info", info) == 1


async def test_signed_post_with_query_params_and_empty_body(clock: FakeClock) -> None:
    handler = Sas(fleet(3))
    await describe_image_instances(make_client(handler, Telemetry(), clock))
    request = handler.requests[0]
    assert request.method == "POST"
    assert request.content == b""
    assert request.headers["x-acs-action"] == ACTION
    assert request.headers["x-acs-version"] == "2018-12-03"
    assert request.headers["authorization"].startswith("ACS3-HMAC-SHA256 Credential=testid,")
    assert request.url.params["PageSize"] == "100"  # the largest page the API accepts
    # The endpoint selects the site; RegionId would filter some actions by the image's region.
    assert "RegionId" not in request.url.params


async def test_pages_until_total_and_counts_requests(clock: FakeClock) -> None:
    handler = Sas(fleet(245))
    telemetry = Telemetry()
    rows = await describe_image_instances(make_client(handler, telemetry, clock))
    assert [r.uuid for r in rows] == [f"uuid-{i}" for i in range(245)]
    assert [int(r.url.params["CurrentPage"]) for r in handler.requests] == [1, 2, 3]
    assert telemetry.value("imagesec_api_requests", LABELS) == 3


async def test_rows_repeated_across_pages_are_counted_once(clock: FakeClock) -> None:
    pages = {1: [row(0), row(1)], 2: [row(1), row(2)]}
    handler = Sas(
        lambda current, request: httpx.Response(200, json=page(pages[current], 4, current))
    )
    client = make_client(handler, Telemetry(), clock)
    from exporter.clouds.aliyun import api

    spec = api.PAGINATION[ACTION]
    api.PAGINATION[ACTION] = type(spec)(page_size=2)
    try:
        rows = await describe_image_instances(client)
    finally:
        api.PAGINATION[ACTION] = spec
    assert [r.uuid for r in rows] == ["uuid-0", "uuid-1", "uuid-2"]


async def test_throttling_is_retried_honouring_retry_after(clock: FakeClock) -> None:
    calls = {"n": 0}
    ok = fleet(2)

    def answer(current: int, request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            body = {"RequestId": "r1", "Code": "Throttling.User", "Message": "flow control"}
            return httpx.Response(400, json=body, headers={"x-acs-retry-after": "1500"})
        return ok(current, request)

    telemetry = Telemetry()
    rows = await describe_image_instances(make_client(Sas(answer), telemetry, clock))
    assert len(rows) == 2
    assert 1.5 in clock.slept  # the server's hint, in seconds, wins over a shorter backoff
    assert telemetry.value("imagesec_api_request_errors", (*LABELS, "Throttling.User")) == 1
    assert telemetry.value("imagesec_api_requests", LABELS) == 2


async def test_auth_errors_are_not_retried(clock: FakeClock) -> None:
    body = {"RequestId": "r9", "Code": "SignatureDoesNotMatch", "Message": "no match"}
    handler = Sas(lambda current, request: httpx.Response(400, json=body))
    with pytest.raises(AuthError) as err:
        await describe_image_instances(make_client(handler, Telemetry(), clock))
    assert err.value.code == "SignatureDoesNotMatch"
    assert err.value.request_id == "r9"
    assert len(handler.requests) == 1


def _html(current: int, request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        502, text="<html><body>Bad Gateway</body></html>", headers={"content-type": "text/html"}
    )


def _timeout(current: int, request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def _total_changes(current: int, request: httpx.Request) -> httpx.Response:
    # A total that never settles: every page claims a different one.
    rows = [row(i + (current - 1) * 100) for i in range(100)]
    return httpx.Response(200, json=page(rows, 1050 + current, current))


BAD_ANSWERS: dict[
    str, tuple[Callable[[int, httpx.Request], httpx.Response], type[Exception], str]
] = {
    "malformed json": (
        lambda c, r: httpx.Response(
            200, text='{"PageInfo": {', headers={"content-type": "application/json"}
        ),
        PayloadError,
        "bad_payload",
    ),
    "missing field": (
        lambda c, r: httpx.Response(200, json={"RequestId": "x", "PageInfo": {"TotalCount": 1}}),
        PayloadError,
        "bad_payload",
    ),
    "wrong type": (
        lambda c, r: httpx.Response(
            200, json={"PageInfo": {"TotalCount": "many"}, "ImageInstanceList": []}
        ),
        PayloadError,
        "bad_payload",
    ),
    "html error page": (_html, UpstreamError, "http_5xx"),
    "500": (
        lambda c, r: httpx.Response(500, json={"Code": "ServerError", "RequestId": "r5"}),
        UpstreamError,
        "ServerError",
    ),
    "timeout": (_timeout, UpstreamError, "timeout"),
    "total changes mid-walk": (_total_changes, PayloadError, "bad_payload"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
async def test_bad_answer_marks_only_that_source_down(case: str, clock: FakeClock) -> None:
    answer, error, code = BAD_ANSWERS[case]
    telemetry = Telemetry()
    good_handler = Sas(fleet(3))
    bad = {"on": False}

    def flaky(current: int, request: httpx.Request) -> httpx.Response:
        return answer(current, request) if bad["on"] else fleet(3)(current, request)

    broken = SasImagesSource(KEY, 300, make_client(Sas(flaky), telemetry, clock))
    other_key = SourceKey("aliyun", "other", "ap-southeast-1", "sas_images")
    other = SasImagesSource(other_key, 300, make_client(good_handler, telemetry, clock))
    refresher = Refresher([broken, other], telemetry=telemetry, clock=clock)
    first = await refresher.run_once()
    assert first.sources[KEY].up

    bad["on"] = True
    clock.advance(300)
    snapshot = await refresher.run_once()
    state = snapshot.sources[KEY]
    assert not state.up
    assert state.last_success == first.sources[KEY].last_success
    assert state.data == first.sources[KEY].data  # last good data kept
    assert snapshot.sources[other_key].up
    assert telemetry.value("imagesec_refresh_failures", (*KEY.labels(), code)) == 1
    assert telemetry.value("imagesec_api_request_errors", (*LABELS, code)) >= 1
    # The exposition still renders, with the old images and up=0.
    text = render_images(snapshot).decode()
    assert 'image_id="uuid-2"' in text
    health = CollectorRegistry()
    health.register(HealthCollector(lambda: snapshot, telemetry))
    assert (
        health.get_sample_value(
            "imagesec_up",
            dict(zip(("provider", "account", "region", "source"), KEY.labels(), strict=True)),
        )
        == 0
    )
    with pytest.raises(error):  # and the client raised the documented error class
        bad["on"] = True
        await describe_image_instances(make_client(Sas(flaky), Telemetry(), clock))


async def test_invalid_rows_are_skipped_and_counted(clock: FakeClock) -> None:
    rows = [row(0), row(1, VulCount=-3), row(2, Uuid=None), "junk", row(3, ScaProgress=250)]
    handler = Sas(lambda current, request: httpx.Response(200, json=page(rows, 5)))
    telemetry = Telemetry()
    result = await describe_image_instances(make_client(handler, telemetry, clock))
    assert [r.uuid for r in result] == ["uuid-0"]
    assert telemetry.value("imagesec_invalid_rows", LABELS) == 4


async def test_unknown_scan_status_is_unknown_not_a_guess(clock: FakeClock) -> None:
    handler = Sas(
        lambda current, request: httpx.Response(200, json=page([row(0, ScaStatus="NEW_THING")], 1))
    )
    source = SasImagesSource(KEY, 300, make_client(handler, Telemetry(), clock))
    data = await source.refresh(None)
    states = {s.extra[0]: s.value for s in data.samples if s.metric == "imagesec_image_scan_status"}
    assert states["unknown"] == 1
    assert sum(states.values()) == 1
    assert json.dumps(states)  # every state present, exactly one set
