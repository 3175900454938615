"""TCSS client: request shape, 200-envelope errors, retries, pagination, bad answers, seed 003."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from exporter.clouds.http import RetryPolicy
from exporter.clouds.tencent.api import (
    PAGINATION,
    TcssClient,
    describe_asset_image_detail,
    describe_asset_image_list,
    vendor_error,
)
from exporter.clouds.tencent.endpoints import tcss_host
from exporter.clouds.tencent.signing import (
    TC3Auth,
    canonical_request_tc3,
    parse_authorization_tc3,
    signature_tc3,
)
from exporter.config import ResolvedCredentials, parse_config
from exporter.errors import (
    AuthError,
    PayloadError,
    RequestError,
    ThrottledError,
    UpstreamError,
)
from exporter.model import SourceKey
from exporter.refresh import Refresher
from exporter.sources import build_sources
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock, fixture_json

LIST = "DescribeAssetImageList"
DETAIL = "DescribeAssetImageDetail"
SECRET_ID = "AKIDtestSecretId"
SECRET_KEY = "testSecretKey"

Answer = Callable[[dict[str, Any], httpx.Request], httpx.Response]


def ok(payload: dict[str, Any], content_type: str = "application/json") -> httpx.Response:
    body = {"Response": {**payload, "RequestId": "req-ok"}}
    return httpx.Response(200, content=json.dumps(body), headers={"Content-Type": content_type})


def error(code: str, content_type: str = "application/json") -> httpx.Response:
    body = {"Response": {"Error": {"Code": code, "Message": "no"}, "RequestId": "req-err"}}
    return httpx.Response(200, content=json.dumps(body), headers={"Content-Type": content_type})


def info(i: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ImageID": f"sha256:{i:064x}",
        "ImageName": f"ccr.ccs.tencentyun.com/shop/app{i}:1.{i}",
        "VulCnt": i,
        "ScanStatus": "scanned",
        "ScanTime": "2024-10-25 16:13:39",
    }
    row.update(overrides)
    return row


class Tcss:
    """Fake TCSS: ``answer(params, request)`` per X-TC-Action; records every request."""

    def __init__(self, **answers: Answer) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = json.loads(request.content)
        return self.answers[request.headers["X-TC-Action"]](params, request)

    def actions(self) -> list[str]:
        return [r.headers["X-TC-Action"] for r in self.requests]


def fleet(rows: list[Any], *, with_total: bool = True) -> Answer:
    """DescribeAssetImageList answers sliced by Offset/Limit, as the vendor pages."""

    def answer(params: dict[str, Any], request: httpx.Request) -> httpx.Response:
        offset, limit = params["Offset"], params["Limit"]
        payload: dict[str, Any] = {"List": rows[offset : offset + limit]}
        if with_total:
            payload["TotalCount"] = len(rows)
        return ok(payload)

    return answer


def sequence(*responses: httpx.Response) -> Answer:
    """Answer with ``responses`` in order, the last one forever."""
    queue = list(responses)

    def answer(params: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return answer


def make_client(
    handler: Tcss,
    telemetry: Telemetry,
    clock: FakeClock,
    *,
    region: str = "ap-guangzhou",
    token: str | None = None,
    base_url: str = "https://tcss.tencentcloudapi.com",
    **kwargs: Any,
) -> TcssClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = TC3Auth(SECRET_ID, SECRET_KEY, token=token, clock=clock)
    return TcssClient(
        http,
        auth,
        base_url=base_url,
        account="prod",
        region=region,
        telemetry=telemetry,
        sleep=clock.sleep,
        clock=clock,
        retry=kwargs.pop("retry", RetryPolicy(max_attempts=3)),
        **kwargs,
    )


def requests(telemetry: Telemetry, action: str, region: str = "ap-guangzhou") -> float:
    return telemetry.value("imagesec_api_requests", ("tencent", "prod", region, action))


def errors(telemetry: Telemetry, action: str = LIST) -> dict[str, float]:
    return {
        labels[-1]: value
        for labels, value in telemetry.values("imagesec_api_request_errors").items()
        if labels[3] == action
    }


async def test_request_is_post_json_signed_tc3_with_tcss_headers(clock: FakeClock) -> None:
    handler = Tcss(DescribeAssetImageList=fleet([info(1)]))
    client = make_client(handler, Telemetry(), clock)
    await describe_asset_image_list(client)
    (request,) = handler.requests
    assert request.method == "POST"
    assert request.url == "https://tcss.tencentcloudapi.com/"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-TC-Action"] == LIST
    assert request.headers["X-TC-Version"] == "2020-11-01"
    assert request.headers["X-TC-Region"] == "ap-guangzhou"
    assert request.headers["X-TC-Language"] == "en-US"
    assert request.headers["X-TC-Timestamp"] == str(int(clock()))
    assert "X-TC-Token" not in request.headers
    assert json.loads(request.content) == {"Offset": 0, "Limit": 100}
    secret_id, _, service, signed, signature = parse_authorization_tc3(
        request.headers["Authorization"]
    )
    assert (secret_id, service, signed) == (SECRET_ID, "tcss", ["content-type", "host"])
    canonical = canonical_request_tc3(
        "POST", "", "application/json", "tcss.tencentcloudapi.com", request.content
    )
    assert signature == signature_tc3(SECRET_KEY, int(clock()), "tcss", canonical)


async def test_session_token_is_sent_as_x_tc_token(clock: FakeClock) -> None:
    handler = Tcss(DescribeAssetImageList=fleet([info(1)]))
    client = make_client(handler, Telemetry(), clock, token="sts-token")
    await describe_asset_image_list(client)
    assert handler.requests[0].headers["X-TC-Token"] == "sts-token"


async def test_each_region_is_sent_in_x_tc_region(clock: FakeClock) -> None:
    handler = Tcss(DescribeAssetImageList=fleet([info(1)]))
    telemetry = Telemetry()
    for region in ("ap-guangzhou", "ap-singapore"):
        await describe_asset_image_list(make_client(handler, telemetry, clock, region=region))
    assert [r.headers["X-TC-Region"] for r in handler.requests] == [
        "ap-guangzhou",
        "ap-singapore",
    ]
    assert requests(telemetry, LIST, "ap-singapore") == 1


def test_site_hosts() -> None:
    assert tcss_host("china") == "tcss.tencentcloudapi.com"
    assert tcss_host("international") == "tcss.intl.tencentcloudapi.com"
    with pytest.raises(ValueError):
        tcss_host("mars")


async def test_pages_with_offset_and_limit_100_until_total(clock: FakeClock) -> None:
    rows = [info(i) for i in range(250)]
    handler = Tcss(DescribeAssetImageList=fleet(rows))
    telemetry = Telemetry()
    images = await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert [json.loads(r.content) for r in handler.requests] == [
        {"Offset": 0, "Limit": 100},
        {"Offset": 100, "Limit": 100},
        {"Offset": 200, "Limit": 100},
    ]
    assert [i.image_id for i in images] == [r["ImageID"] for r in rows]
    assert requests(telemetry, LIST) == 3
    assert PAGINATION[LIST].page_size == 100


async def test_duplicate_rows_are_kept_once(clock: FakeClock) -> None:
    rows = [info(1), info(2), info(1), info(3), info(2)]
    handler = Tcss(DescribeAssetImageList=fleet(rows))
    images = await describe_asset_image_list(make_client(handler, Telemetry(), clock))
    assert [i.image_id for i in images] == [info(n)["ImageID"] for n in (1, 2, 3)]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "text/plain"]
)
async def test_auth_failure_in_200_envelope_is_auth_error_not_retried(
    clock: FakeClock, content_type: str
) -> None:
    handler = Tcss(
        DescribeAssetImageList=sequence(error("AuthFailure.SignatureFailure", content_type))
    )
    telemetry = Telemetry()
    with pytest.raises(AuthError) as caught:
        await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert caught.value.code == "AuthFailure.SignatureFailure"
    assert caught.value.request_id == "req-err"
    assert len(handler.requests) == 1
    assert clock.slept == []
    assert errors(telemetry) == {"AuthFailure.SignatureFailure": 1}


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "RequestLimitExceeded.UinLimitExceeded"])
async def test_request_limit_exceeded_is_retried_with_backoff(clock: FakeClock, code: str) -> None:
    handler = Tcss(
        DescribeAssetImageList=sequence(
            error(code), error(code), ok({"List": [info(1)], "TotalCount": 1})
        )
    )
    telemetry = Telemetry()
    images = await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert len(images) == 1
    assert len(handler.requests) == 3
    assert requests(telemetry, LIST) == 3
    assert errors(telemetry) == {code: 2}
    assert len(clock.slept) >= 2  # backoff waits, on the injected clock


async def test_throttling_that_never_ends_raises_throttled_error(clock: FakeClock) -> None:
    handler = Tcss(DescribeAssetImageList=sequence(error("RequestLimitExceeded")))
    telemetry = Telemetry()
    with pytest.raises(ThrottledError):
        await describe_asset_image_list(make_client(handler, telemetry, clock))
    # Throttling gets three times the attempts of other errors (the pace halves meanwhile).
    assert len(handler.requests) == 9
    assert errors(telemetry) == {"RequestLimitExceeded": 9}


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (error("InternalError.MainDBFail"), "InternalError.MainDBFail"),
        (error("ServiceUnavailable"), "ServiceUnavailable"),
        (httpx.Response(502, text="<html>bad gateway</html>"), "http_5xx"),
    ],
)
async def test_server_side_errors_are_retried_then_raised_as_upstream(
    clock: FakeClock, response: httpx.Response, code: str
) -> None:
    handler = Tcss(DescribeAssetImageList=sequence(response))
    telemetry = Telemetry()
    with pytest.raises(UpstreamError) as caught:
        await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert not isinstance(caught.value, RequestError)
    assert caught.value.code == code
    assert len(handler.requests) == 3
    assert errors(telemetry) == {code: 3}


async def test_server_error_then_success_recovers(clock: FakeClock) -> None:
    handler = Tcss(
        DescribeAssetImageList=sequence(
            httpx.Response(503, text="busy"), ok({"List": [info(1)], "TotalCount": 1})
        )
    )
    telemetry = Telemetry()
    assert len(await describe_asset_image_list(make_client(handler, telemetry, clock))) == 1
    assert errors(telemetry) == {"http_5xx": 1}


@pytest.mark.parametrize(
    "code", ["InvalidParameter.ParsingError", "MissingParameter", "UnsupportedRegion"]
)
async def test_request_errors_are_not_retried(clock: FakeClock, code: str) -> None:
    handler = Tcss(DescribeAssetImageList=sequence(error(code)))
    with pytest.raises(RequestError) as caught:
        await describe_asset_image_list(make_client(handler, Telemetry(), clock))
    assert caught.value.code == code
    assert len(handler.requests) == 1


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("AuthFailure.SecretIdNotFound", AuthError),
        ("AuthFailure.SignatureExpire", AuthError),
        ("UnauthorizedOperation", AuthError),
        ("RequestLimitExceeded.GlobalRegionUinLimitExceeded", ThrottledError),
        ("InternalError", UpstreamError),
        ("ResourceUnavailable", UpstreamError),
        ("ResourceNotFound", RequestError),
        ("InvalidParameterValue.DataNotFound", RequestError),
        ("RequestSizeLimitExceeded", RequestError),
        ("LimitExceeded", RequestError),
        ("FailedOperation.AgentOffline", RequestError),
    ],
)
def test_vendor_code_mapping(code: str, kind: type[Exception]) -> None:
    err = vendor_error(code, "message", "rid")
    assert type(err) is kind
    assert (err.provider, err.code, err.request_id) == ("tencent", code, "rid")


async def test_timeout_is_upstream_error_with_code_timeout(clock: FakeClock) -> None:
    def answer(params: dict[str, Any], request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    handler = Tcss(DescribeAssetImageList=answer)
    telemetry = Telemetry()
    with pytest.raises(UpstreamError) as caught:
        await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert caught.value.code == "timeout"
    assert errors(telemetry) == {"timeout": 3}


@pytest.mark.parametrize(
    ("response", "what"),
    [
        (ok({"TotalCount": 3}), "no List"),
        (ok({"List": None, "TotalCount": 0}), "null List"),
        (ok({"List": [info(1)], "TotalCount": "many"}), "string TotalCount"),
        (httpx.Response(200, json={"List": [], "TotalCount": 0}), "no Response"),
        (httpx.Response(200, json={"Response": []}), "Response not an object"),
        (httpx.Response(200, json={"Response": {"Error": "boom"}}), "malformed Error"),
    ],
)
async def test_bad_envelopes_are_payload_errors(
    clock: FakeClock, response: httpx.Response, what: str
) -> None:
    handler = Tcss(DescribeAssetImageList=sequence(response))
    telemetry = Telemetry()
    with pytest.raises(PayloadError) as caught:
        await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert caught.value.code == "bad_payload", what
    assert len(handler.requests) == 1, what
    assert errors(telemetry) == {"bad_payload": 1}, what


async def test_an_answer_that_is_not_json_is_retried_like_a_5xx(clock: FakeClock) -> None:
    handler = Tcss(DescribeAssetImageList=sequence(httpx.Response(200, text="<html>oops</html>")))
    telemetry = Telemetry()
    with pytest.raises(PayloadError) as caught:
        await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert caught.value.code == "bad_payload" and caught.value.retryable
    assert len(handler.requests) == 3
    assert errors(telemetry) == {"bad_payload": 3}


@pytest.mark.parametrize(
    "bad",
    [
        {"VulCnt": "many"},
        {"VulCnt": -1},
        {"HighLevelVulCnt": -3},
        {"Size": "big"},
        {"ScanTime": "yesterday"},
        {"ImageID": ""},
    ],
)
async def test_invalid_row_is_skipped_and_counted(clock: FakeClock, bad: dict[str, Any]) -> None:
    rows = [info(1), info(2, **bad), info(3), "not a row"]
    handler = Tcss(DescribeAssetImageList=fleet(rows))
    telemetry = Telemetry()
    images = await describe_asset_image_list(make_client(handler, telemetry, clock))
    assert [i.image_id for i in images] == [info(1)["ImageID"], info(3)["ImageID"]]
    assert telemetry.value("imagesec_invalid_rows", ("tencent", "prod", "ap-guangzhou", LIST)) == 2
    assert errors(telemetry) == {}


async def test_invalid_rows_do_not_look_like_a_short_page(clock: FakeClock) -> None:
    rows = [info(i, VulCnt="many") if i % 10 == 0 else info(i) for i in range(150)]
    handler = Tcss(DescribeAssetImageList=fleet(rows, with_total=False))
    images = await describe_asset_image_list(make_client(handler, Telemetry(), clock))
    assert len(handler.requests) == 2
    assert len(images) == 135


async def test_seed_003_detail_parses_with_beijing_times_converted(clock: FakeClock) -> None:
    sample = fixture_json("tencent", DETAIL)
    handler = Tcss(DescribeAssetImageDetail=lambda params, request: ok(sample["Response"]))
    image_id = sample["Response"]["ImageID"]
    detail = await describe_asset_image_detail(make_client(handler, Telemetry(), clock), image_id)
    assert json.loads(handler.requests[0].content) == {"ImageID": image_id}
    assert (detail.vul_cnt, detail.risk_cnt, detail.size) == (230, 211, 231268856)
    assert (detail.host_cnt, detail.container_cnt) == (24, 51)
    assert (detail.virus_cnt, detail.sensitive_info_cnt) == (0, 0)
    # "2024-10-25 16:13:39" and "2021-09-16 02:20:05" are Beijing time (UTC+8).
    assert detail.scan_time == 1729844019.0  # 2024-10-25T08:13:39Z
    assert detail.create_time == 1631730005.0  # 2021-09-15T18:20:05Z
    assert detail.image_digest.startswith("sha256:707540fd")
    assert (detail.os_name, detail.architecture) == ("centos:8.4.2105", "Metadata")
    assert (detail.scan_status, detail.scan_vul_error) == ("SCANNED", "timeout")


async def test_detail_that_does_not_fit_is_an_invalid_row(clock: FakeClock) -> None:
    sample = fixture_json("tencent", DETAIL)["Response"]
    handler = Tcss(
        DescribeAssetImageDetail=lambda params, request: ok({**sample, "RiskCnt": "lots"})
    )
    telemetry = Telemetry()
    with pytest.raises(PayloadError) as caught:
        await describe_asset_image_detail(make_client(handler, telemetry, clock), "sha256:x")
    assert caught.value.code == "bad_payload"
    labels = ("tencent", "prod", "ap-guangzhou", DETAIL)
    assert telemetry.value("imagesec_invalid_rows", labels) == 1


def tencent_config(**account: Any) -> Any:
    base = {"name": "prod", "provider": "tencent", "regions": ["ap-guangzhou"]}
    base.update(account)
    return parse_config({"accounts": [base]})


@pytest.mark.parametrize(
    ("account", "url"),
    [
        ({}, "https://tcss.tencentcloudapi.com/"),
        ({"site": "international"}, "https://tcss.intl.tencentcloudapi.com/"),
        ({"endpoint": "http://127.0.0.1:18081"}, "http://127.0.0.1:18081/"),
        ({"endpoint": "tcss.example.internal:8443"}, "https://tcss.example.internal:8443/"),
    ],
)
async def test_factories_build_both_collectors_with_site_host_and_token(
    account: dict[str, Any], url: str
) -> None:
    config = tencent_config(**account)
    handler = Tcss(
        DescribeAssetImageList=fleet([info(1)]),
        DescribeAssetImageDetail=lambda params, request: ok(
            {"ImageID": params["ImageID"], "VulCnt": 1}
        ),
    )
    creds = ResolvedCredentials(SECRET_ID, SecretStr(SECRET_KEY), SecretStr("sts"), "env")
    telemetry = Telemetry()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sources = build_sources(config, {("tencent", "prod"): creds}, telemetry, http)
        assert [s.key.source for s in sources] == ["tcss_images", "tcss_image_detail"]
        assert sources[1].depends_on == SourceKey("tencent", "prod", "ap-guangzhou", "tcss_images")
        snapshot = await Refresher(sources, telemetry=telemetry).run_once()
    assert all(state.up for state in snapshot.sources.values())
    assert handler.actions() == [LIST, DETAIL]
    assert {str(r.url) for r in handler.requests} == {url}
    assert {r.headers["X-TC-Token"] for r in handler.requests} == {"sts"}
    assert {r.headers["X-TC-Region"] for r in handler.requests} == {"ap-guangzhou"}
    # Both collectors share one client, hence one (account, region, action) rate limit.
    assert sources[0].client is sources[1].client  # type: ignore[attr-defined]


async def test_regions_of_one_account_share_one_rate_limiter(clock: FakeClock) -> None:
    config = tencent_config(regions=["ap-guangzhou", "ap-singapore"])
    creds = ResolvedCredentials(SECRET_ID, SecretStr(SECRET_KEY), None, "env")
    handler = Tcss(DescribeAssetImageList=fleet([info(1)]))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sources = build_sources(config, {("tencent", "prod"): creds}, Telemetry(), http)
    guangzhou, singapore = sources[0].client, sources[2].client  # type: ignore[attr-defined]
    assert (guangzhou.region, singapore.region) == ("ap-guangzhou", "ap-singapore")
    assert guangzhou is not singapore
    assert guangzhou._buckets is singapore._buckets


async def test_clients_sharing_buckets_wait_for_each_other(clock: FakeClock) -> None:
    handler = Tcss(DescribeAssetImageList=fleet([info(1)]))
    telemetry = Telemetry()
    buckets: dict[str, Any] = {}
    clients = [
        make_client(handler, telemetry, clock, region=region, buckets=buckets)
        for region in ("ap-guangzhou", "ap-singapore")
    ]
    await describe_asset_image_list(clients[0])
    (bucket,) = buckets.values()
    # One more call than a burst, spread over both regions: only a shared bucket must wait.
    for n in range(int(bucket.burst)):
        await describe_asset_image_list(clients[(n + 1) % 2])
    assert clock.slept


async def test_total_count_that_never_settles_fails_and_is_counted(clock: FakeClock) -> None:
    rows = [info(i) for i in range(2000)]

    def drifting(params: dict[str, Any], request: httpx.Request) -> httpx.Response:
        offset, limit = params["Offset"], params["Limit"]
        return ok({"List": rows[offset : offset + limit], "TotalCount": 2000 + offset})

    telemetry = Telemetry()
    client = make_client(Tcss(**{LIST: drifting}), telemetry, clock)
    with pytest.raises(PayloadError, match="TotalCount changed"):
        await describe_asset_image_list(client)
    assert errors(telemetry) == {"bad_payload": 1}


async def test_an_image_removed_mid_walk_is_not_lost(clock: FakeClock) -> None:
    fleet = [info(i) for i in range(250)]
    listed = {r["ImageID"] for r in fleet}
    calls = []

    def shrinking(params: dict[str, Any], request: httpx.Request) -> httpx.Response:
        offset, limit = params["Offset"], params["Limit"]
        calls.append(offset)
        if len(calls) == 2:  # image 3 is deleted after the first page was read
            del fleet[3]
        return ok({"List": fleet[offset : offset + limit], "TotalCount": len(fleet)})

    rows = await describe_asset_image_list(
        make_client(Tcss(**{LIST: shrinking}), Telemetry(), clock)
    )
    # Image 100 slid back onto page 1 and is found by re-reading it; image 3, seen before it
    # went, is kept for this pass.
    assert {r.image_id for r in rows} == listed and len(rows) == 250
    assert calls == [0, 100, 0, 200] and not rows.truncated


async def test_a_walk_folds_each_page_into_interned_row_tuples_as_it_arrives(
    clock: FakeClock,
) -> None:
    import gc

    from exporter.clouds.tencent.schemas import ImagesInfo, ImagesInfoRow

    rows = [info(i, OSName="ubuntu") for i in range(250)]
    pages = fleet(rows)
    models_alive: list[int] = []

    def models() -> int:
        gc.collect()
        return sum(isinstance(o, ImagesInfo) for o in gc.get_objects())

    before = models()  # any left by other tests

    def answer(params: dict[str, Any], request: httpx.Request) -> httpx.Response:
        models_alive.append(models() - before)  # what the walk holds of the earlier pages
        return pages(params, request)

    handler = Tcss(DescribeAssetImageList=answer)
    images = await describe_asset_image_list(make_client(handler, Telemetry(), clock))
    assert models_alive == [0, 0, 0]  # no page's pydantic models outlive the page
    assert all(type(row) is ImagesInfoRow for row in images)
    assert [row.image_id for row in images] == [r["ImageID"] for r in rows]
    # json.loads gives each row its own string; the fold interns them into one
    assert len({id(row.os_name) for row in images}) == 1
