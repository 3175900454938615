"""Alibaba Cloud signing: V3 and V1 golden vectors, the httpx Auth, the official SDK as oracle."""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from alibabacloud_tea_openapi.utils import Utils as TeaUtils  # type: ignore[import-untyped]

from exporter.clouds.aliyun.signing import (
    EMPTY_SHA256,
    ACS3Auth,
    authorization_v3,
    canonical_headers,
    canonical_query,
    canonical_request_v3,
    default_nonce,
    parse_authorization_v3,
    percent_encode,
    signature_v1,
    signature_v3,
    string_to_sign_v1,
    utc_now,
)

# Test vectors: /work/shared/cloud-api-facts.md section 1a (V1) and 1b (V3).

MINIMAL_SIGNED = [
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
]

V3_1_QUERY = [
    ("ImageId", "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"),
    ("RegionId", "cn-shanghai"),
]
V3_1_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-version": "2014-05-26",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-content-sha256": EMPTY_SHA256,
}
V3_1_CANONICAL = (
    "POST\n"
    "/\n"
    "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n"
    "host:ecs.cn-shanghai.aliyuncs.com\n"
    "x-acs-action:RunInstances\n"
    "x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    "x-acs-date:2023-10-26T10:22:32Z\n"
    "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n"
    "x-acs-version:2014-05-26\n"
    "\n"
    "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

CRITERIA = '[{"name":"riskStatus","value":"YES"}]'
V3_2_QUERY = {"Criteria": CRITERIA, "CurrentPage": "1", "LogicalExp": "OR", "PageSize": "20"}
V3_2_CANONICAL_QUERY = (
    "Criteria=%5B%7B%22name%22%3A%22riskStatus%22%2C%22value%22%3A%22YES%22%7D%5D"
    "&CurrentPage=1&LogicalExp=OR&PageSize=20"
)
V3_2_HEADERS = {
    "host": "tds.ap-southeast-1.aliyuncs.com",
    "x-acs-action": "DescribeImageInstances",
    "x-acs-version": "2018-12-03",
    "x-acs-date": "2024-01-02T03:04:05Z",
    "x-acs-signature-nonce": "0123456789abcdef0123456789abcdef",
    "x-acs-content-sha256": EMPTY_SHA256,
}
V3_2_AUTHORIZATION = (
    "ACS3-HMAC-SHA256 Credential=testid,"
    "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;"
    "x-acs-version,"
    "Signature=0f6916a79dfb19e7c9dc9398167c41d6198c9661b43b01c1bdd1ceb07647b227"
)
V3_2_STS_SIGNATURE = "9c07dd787e01b96e043ca9270ebb73832fcaa12ba2bd0c6eb2ce438d57e4aa3a"

V1_VECTOR_2 = {
    "AccessKeyId": "testid",
    "Action": "DescribeImageInstances",
    "CurrentPage": "1",
    "Criteria": CRITERIA,
    "Format": "json",
    "LogicalExp": "OR",
    "PageSize": "20",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "fixed-nonce-0001",
    "SignatureVersion": "1.0",
    "Timestamp": "2024-01-02T03:04:05Z",
    "Version": "2018-12-03",
}

FROZEN = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def frozen_clock() -> datetime.datetime:
    return FROZEN


def frozen_nonce() -> str:
    return "0123456789abcdef0123456789abcdef"


class Capture:
    """A MockTransport handler that records every request it receives."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"RequestId": "r-1"})


def make_auth(**overrides: object) -> ACS3Auth:
    kwargs: dict[str, object] = {
        "access_key_id": "testid",
        "access_key_secret": "testsecret",
        "clock": frozen_clock,
        "nonce": frozen_nonce,
    }
    kwargs.update(overrides)
    return ACS3Auth(**kwargs)  # type: ignore[arg-type]


SAS_URL = "https://tds.ap-southeast-1.aliyuncs.com/"
SAS_ACTION_HEADERS = {"x-acs-action": "DescribeImageInstances", "x-acs-version": "2018-12-03"}


# --- pure helpers -----------------------------------------------------------------------------


def test_empty_sha256() -> None:
    assert EMPTY_SHA256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("AZaz09-_.~", "AZaz09-_.~"),
        ("a b", "a%20b"),
        ("*", "%2A"),
        ("/", "%2F"),
        ("+", "%2B"),
        ("=&:", "%3D%26%3A"),
        ("é", "%C3%A9"),
        ("未命名", "%E6%9C%AA%E5%91%BD%E5%90%8D"),
        ("", ""),
    ],
)
def test_percent_encode(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded


def test_canonical_query_sorts_by_name_and_encodes_both_sides() -> None:
    pairs = [("b", "2"), ("a b", "x/y"), ("A", ""), ("a", "1")]
    assert canonical_query(pairs) == "A=&a=1&a%20b=x%2Fy&b=2"


def test_canonical_query_is_independent_of_arrival_order() -> None:
    pairs = [("k.2", "b"), ("k.1", "a"), ("k", "z"), ("k", "a")]
    assert canonical_query(pairs) == canonical_query(reversed(pairs)) == "k=a&k=z&k.1=a&k.2=b"


def test_canonical_headers_is_case_insensitive_trims_and_sorts() -> None:
    headers = {"Host": "example.com", "X-Acs-Date": "  2024-01-02T03:04:05Z ", "Accept": "x"}
    rendered = canonical_headers(headers, ["x-acs-date", "HOST"])
    assert rendered == "host:example.com\nx-acs-date:2024-01-02T03:04:05Z\n"


def test_canonical_headers_accepts_httpx_headers() -> None:
    headers = httpx.Headers({"HOST": "h", "x-acs-action": "A"})
    assert canonical_headers(headers, ["X-ACS-ACTION", "host"]) == "host:h\nx-acs-action:A\n"


def test_canonical_headers_rejects_a_missing_signed_header() -> None:
    with pytest.raises(ValueError, match="x-acs-date"):
        canonical_headers({"host": "h"}, ["host", "x-acs-date"])


# --- V3-1: the documented RunInstances example ------------------------------------------------


def test_v3_1_canonical_request() -> None:
    canonical = canonical_request_v3(
        "POST", "/", V3_1_QUERY, V3_1_HEADERS, list(V3_1_HEADERS), EMPTY_SHA256
    )
    assert canonical == V3_1_CANONICAL
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )


def test_v3_1_signature() -> None:
    signature = signature_v3("YourAccessKeySecret", V3_1_CANONICAL)
    assert signature == "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    assert authorization_v3("YourAccessKeyId", list(V3_1_HEADERS), signature) == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,"
        "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;"
        "x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


# --- V3-2: Sas DescribeImageInstances, minimal header set -------------------------------------


def test_v3_2_canonical_query() -> None:
    assert canonical_query(V3_2_QUERY.items()) == V3_2_CANONICAL_QUERY


def test_v3_2_hashed_canonical_request_and_authorization() -> None:
    canonical = canonical_request_v3(
        "POST", "/", V3_2_QUERY.items(), V3_2_HEADERS, MINIMAL_SIGNED, EMPTY_SHA256
    )
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == "19de4ab15690534664177d7115b06dd9d9e516b2e4eac384bf96188796eb5134"
    )
    signature = signature_v3("testsecret", canonical)
    assert authorization_v3("testid", MINIMAL_SIGNED, signature) == V3_2_AUTHORIZATION


def test_v3_2_with_sts_headers() -> None:
    headers = {
        **V3_2_HEADERS,
        "x-acs-accesskey-id": "testid",
        "x-acs-security-token": "sts-token-example",
    }
    canonical = canonical_request_v3(
        "POST", "/", V3_2_QUERY.items(), headers, list(headers), EMPTY_SHA256
    )
    assert signature_v3("testsecret", canonical) == V3_2_STS_SIGNATURE


# --- V3-3: exactly what the official SDK sent to a loopback server ----------------------------


def test_v3_3_reproduces_the_official_sdk_request() -> None:
    authorization = (
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=accept;host;user-agent;x-acs-action;"
        "x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;"
        "x-acs-version,"
        "Signature=51b327573569696f7e5bdf1b0fc684e3687897daa8287a1a54a33755685f23c6"
    )
    received = {
        "Accept-Encoding": "identity",
        "host": "127.0.0.1:18080",
        "x-acs-version": "2018-12-03",
        "x-acs-action": "DescribeImageInstances",
        "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
        "x-acs-date": "2024-01-02T03:04:05Z",
        "x-acs-signature-nonce": "0123456789abcdef0123456789abcdef",
        "accept": "application/json",
        "x-acs-content-sha256": EMPTY_SHA256,
        "x-acs-credentials-provider": "static_ak",
        "Authorization": authorization,
        "Content-Length": "0",
    }
    # A verifier rebuilds the canonical request from the received SignedHeaders list.
    access_key_id, signed, sent_signature = parse_authorization_v3(authorization)
    assert access_key_id == "testid"
    assert "accept-encoding" not in signed
    url = httpx.URL(f"http://127.0.0.1:18080/?{V3_2_CANONICAL_QUERY}")
    canonical = canonical_request_v3(
        "POST",
        url.path,
        url.params.multi_items(),
        received,
        signed,
        received["x-acs-content-sha256"],
    )
    assert signature_v3("testsecret", canonical) == sent_signature
    assert authorization_v3(access_key_id, signed, sent_signature) == authorization


# --- parse_authorization_v3 -------------------------------------------------------------------


def test_parse_authorization_v3_round_trips() -> None:
    assert parse_authorization_v3(V3_2_AUTHORIZATION) == (
        "testid",
        MINIMAL_SIGNED,
        "0f6916a79dfb19e7c9dc9398167c41d6198c9661b43b01c1bdd1ceb07647b227",
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ACS3-HMAC-SHA256",
        V3_2_AUTHORIZATION.replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3"),
        V3_2_AUTHORIZATION.replace("Credential=testid", "Credential="),
        V3_2_AUTHORIZATION.replace("SignedHeaders=host;", "SignedHeaders=;"),
        V3_2_AUTHORIZATION.replace(",Signature=", ",Sig="),
        V3_2_AUTHORIZATION[:-1],
        V3_2_AUTHORIZATION + "0",
        V3_2_AUTHORIZATION.replace("Signature=0f", "Signature=0F"),
        V3_2_AUTHORIZATION + ",Extra=1",
        "TC3-HMAC-SHA256 Credential=a/2019-02-25/tcss/tc3_request, SignedHeaders=host, "
        "Signature=" + "0" * 64,
    ],
)
def test_parse_authorization_v3_rejects_malformed(value: str) -> None:
    with pytest.raises(ValueError):
        parse_authorization_v3(value)


# --- V1 (HMAC-SHA1 query signing) -------------------------------------------------------------


def test_v1_vector_1_documented_example() -> None:
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert string_to_sign_v1("GET", params) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z"
        "%26Version%3D2014-05-26"
    )
    assert signature_v1("testsecret", "GET", params) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_v1_vector_2_string_to_sign() -> None:
    assert string_to_sign_v1("POST", V1_VECTOR_2) == (
        "POST&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeImageInstances%26Criteria%3D%255B%257B"
        "%2522name%2522%253A%2522riskStatus%2522%252C%2522value%2522%253A%2522YES%2522%257D%255D"
        "%26CurrentPage%3D1%26Format%3Djson%26LogicalExp%3DOR%26PageSize%3D20"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dfixed-nonce-0001"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2024-01-02T03%253A04%253A05Z"
        "%26Version%3D2018-12-03"
    )


@pytest.mark.parametrize(
    ("method", "extra", "expected"),
    [
        ("POST", {}, "ssSD2EGVZdwe0phQrzg/TVT+4nc="),
        ("GET", {}, "0PVKSxypjf53mfTCYDu8kJskif4="),
        ("POST", {"SecurityToken": "sts-token-example"}, "ZaD0SMhrHUK71uQWDaeu3DK3muY="),
        # Vector 4: aliyunsdkcore's get_signed_url sends Format=JSON and signs the empty
        # SignatureType.
        ("GET", {"Format": "JSON", "SignatureType": ""}, "WhvnYhRqr6qVWGHFzj45GyqGoUU="),
        ("POST", {"Format": "JSON", "SignatureType": ""}, "GXSA1ER+gn8EkMlSQde1+d/lf0M="),
    ],
)
def test_v1_sas_vectors(method: str, extra: dict[str, str], expected: str) -> None:
    assert signature_v1("testsecret", method, {**V1_VECTOR_2, **extra}) == expected


def test_v1_vector_3_encoding_edge_case() -> None:
    params = {"A": "a b*c~d/e+f", "Action": "X"}
    assert (
        string_to_sign_v1("GET", params) == "GET&%2F&A%3Da%2520b%252Ac~d%252Fe%252Bf%26Action%3DX"
    )
    assert signature_v1("k", "GET", params) == "bWiVUK6oTkU3GOQA9NuRNj7dP9c="


def test_v1_ignores_the_signature_parameter() -> None:
    signed = {**V1_VECTOR_2, "Signature": "ssSD2EGVZdwe0phQrzg/TVT+4nc="}
    assert signature_v1("testsecret", "POST", signed) == "ssSD2EGVZdwe0phQrzg/TVT+4nc="


def test_v1_signs_empty_values() -> None:
    with_empty = {**V1_VECTOR_2, "SignatureType": ""}
    assert signature_v1("testsecret", "POST", with_empty) != signature_v1(
        "testsecret", "POST", V1_VECTOR_2
    )


# --- ACS3Auth ---------------------------------------------------------------------------------


def test_auth_sync_signs_the_v3_2_vector() -> None:
    capture = Capture()
    with httpx.Client(transport=httpx.MockTransport(capture), auth=make_auth()) as client:
        client.post(SAS_URL, params=V3_2_QUERY, headers=SAS_ACTION_HEADERS)
    (sent,) = capture.requests
    assert sent.headers["Authorization"] == V3_2_AUTHORIZATION
    assert sent.headers["x-acs-date"] == "2024-01-02T03:04:05Z"
    assert sent.headers["x-acs-signature-nonce"] == "0123456789abcdef0123456789abcdef"
    assert sent.headers["x-acs-content-sha256"] == EMPTY_SHA256
    assert "x-acs-security-token" not in sent.headers


async def test_auth_async_signs_the_v3_2_vector() -> None:
    capture = Capture()
    async with httpx.AsyncClient(transport=httpx.MockTransport(capture), auth=make_auth()) as c:
        await c.post(SAS_URL, params=V3_2_QUERY, headers=SAS_ACTION_HEADERS)
    (sent,) = capture.requests
    assert sent.headers["Authorization"] == V3_2_AUTHORIZATION


def test_auth_converts_an_aware_clock_to_utc() -> None:
    shanghai = datetime.timezone(datetime.timedelta(hours=8))
    auth = make_auth(clock=lambda: datetime.datetime(2024, 1, 2, 11, 4, 5, tzinfo=shanghai))
    capture = Capture()
    with httpx.Client(transport=httpx.MockTransport(capture), auth=auth) as client:
        client.post(SAS_URL, params=V3_2_QUERY, headers=SAS_ACTION_HEADERS)
    assert capture.requests[0].headers["Authorization"] == V3_2_AUTHORIZATION


def test_auth_rejects_a_naive_clock() -> None:
    auth = make_auth(clock=lambda: datetime.datetime(2024, 1, 2, 3, 4, 5))
    with (
        httpx.Client(transport=httpx.MockTransport(Capture()), auth=auth) as client,
        pytest.raises(ValueError, match="timezone-aware"),
    ):
        client.post(SAS_URL, headers=SAS_ACTION_HEADERS)


def test_auth_sends_and_signs_the_security_token() -> None:
    # The caller may add x-acs-accesskey-id as tea-openapi does; every x-acs-* header is signed,
    # which reproduces the STS variant of vector V3-2.
    capture = Capture()
    auth = make_auth(security_token="sts-token-example")
    headers = {**SAS_ACTION_HEADERS, "x-acs-accesskey-id": "testid"}
    with httpx.Client(transport=httpx.MockTransport(capture), auth=auth) as client:
        client.post(SAS_URL, params=V3_2_QUERY, headers=headers)
    (sent,) = capture.requests
    assert sent.headers["x-acs-security-token"] == "sts-token-example"
    _, signed, signature = parse_authorization_v3(sent.headers["Authorization"])
    assert "x-acs-security-token" in signed
    assert signature == V3_2_STS_SIGNATURE


def test_auth_security_token_alone_is_signed() -> None:
    capture = Capture()
    auth = make_auth(security_token="sts-token-example")
    with httpx.Client(transport=httpx.MockTransport(capture), auth=auth) as client:
        client.post(SAS_URL, params=V3_2_QUERY, headers=SAS_ACTION_HEADERS)
    (sent,) = capture.requests
    _, signed, signature = parse_authorization_v3(sent.headers["Authorization"])
    assert signed == sorted([*MINIMAL_SIGNED, "x-acs-security-token"])
    canonical = canonical_request_v3(
        "POST", "/", V3_2_QUERY.items(), sent.headers, signed, EMPTY_SHA256
    )
    assert signature == signature_v3("testsecret", canonical)
    assert signature != parse_authorization_v3(V3_2_AUTHORIZATION)[2]


def test_auth_signs_the_loopback_host_with_its_port_and_not_other_headers() -> None:
    capture = Capture()
    with httpx.Client(transport=httpx.MockTransport(capture), auth=make_auth()) as client:
        client.post(
            "http://127.0.0.1:18080/",
            params=V3_2_QUERY,
            headers={**SAS_ACTION_HEADERS, "user-agent": "imagesec-exporter/0.1"},
        )
    (sent,) = capture.requests
    assert sent.headers["host"] == "127.0.0.1:18080"
    _, signed, signature = parse_authorization_v3(sent.headers["Authorization"])
    assert signed == MINIMAL_SIGNED
    headers = {**V3_2_HEADERS, "host": "127.0.0.1:18080"}
    canonical = canonical_request_v3(
        "POST", "/", V3_2_QUERY.items(), headers, MINIMAL_SIGNED, EMPTY_SHA256
    )
    assert signature == signature_v3("testsecret", canonical)


def test_auth_hashes_the_body() -> None:
    capture = Capture()
    with httpx.Client(transport=httpx.MockTransport(capture), auth=make_auth()) as client:
        client.post(SAS_URL, data={"PageSize": "20"}, headers=SAS_ACTION_HEADERS)
    (sent,) = capture.requests
    assert sent.headers["x-acs-content-sha256"] == hashlib.sha256(b"PageSize=20").hexdigest()


def test_auth_draws_a_fresh_nonce_per_request() -> None:
    nonces = iter(["n1", "n2"])
    capture = Capture()
    auth = make_auth(nonce=lambda: next(nonces))
    with httpx.Client(transport=httpx.MockTransport(capture), auth=auth) as client:
        client.post(SAS_URL, headers=SAS_ACTION_HEADERS)
        client.post(SAS_URL, headers=SAS_ACTION_HEADERS)
    assert [r.headers["x-acs-signature-nonce"] for r in capture.requests] == ["n1", "n2"]


def test_auth_repr_hides_secrets() -> None:
    auth = make_auth(access_key_secret="s3cr3t-value", security_token="t0ken-value")
    text = repr(auth)
    assert "testid" in text
    assert "s3cr3t-value" not in text
    assert "t0ken-value" not in text


def test_production_helpers() -> None:
    assert utc_now().utcoffset() == datetime.timedelta(0)
    first, second = default_nonce(), default_nonce()
    assert len(first) == 32
    assert first != second


# --- the official SDK (alibabacloud_tea_openapi) as a dev-only oracle --------------------------

ORACLE_CASES = [
    {"Criteria": CRITERIA, "PageSize": "20"},
    {"ImageName": "nginx:1.25 latest", "Namespace": "prod/web", "Tag": "a+b*c~d"},
    {"RepoName": "镜像仓库", "Remark": "héllo wörld & more=1", "Empty": ""},
    {"ScanRange.1": "image", "ScanRange.2": "container", "Uuid": "!'()*;:@$,%"},
]


@pytest.mark.parametrize("query", ORACLE_CASES)
def test_v3_matches_tea_openapi_get_authorization(query: dict[str, str]) -> None:
    headers = {
        "host": "tds.cn-shanghai.aliyuncs.com",
        "x-acs-action": "DescribeImageInstances",
        "x-acs-version": "2018-12-03",
        "x-acs-date": "2024-01-02T03:04:05Z",
        "x-acs-signature-nonce": "n-ü-1",
        "x-acs-content-sha256": EMPTY_SHA256,
        "user-agent": "  agent/1.0 (ß) ",
    }
    request = SimpleNamespace(method="POST", pathname="/", query=query, headers=headers)
    expected = TeaUtils.get_authorization(
        request, "ACS3-HMAC-SHA256", EMPTY_SHA256, "testid", "sécret/+="
    )
    canonical = canonical_request_v3(
        "POST", "/", query.items(), headers, list(headers), EMPTY_SHA256
    )
    actual = authorization_v3("testid", list(headers), signature_v3("sécret/+=", canonical))
    assert actual == expected


@pytest.mark.parametrize("query", ORACLE_CASES)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v1_matches_tea_openapi_get_rpcsignature(method: str, query: dict[str, str]) -> None:
    params = {**V1_VECTOR_2, **query}
    expected = TeaUtils.get_rpcsignature(params, method, "sécret/+=")
    assert signature_v1("sécret/+=", method, params) == expected


@pytest.mark.parametrize("query", ORACLE_CASES)
async def test_auth_output_verifies_with_tea_openapi(query: dict[str, str]) -> None:
    capture = Capture()
    auth = make_auth(security_token="tok")
    async with httpx.AsyncClient(transport=httpx.MockTransport(capture), auth=auth) as c:
        await c.post("http://127.0.0.1:18080/", params=query, headers=SAS_ACTION_HEADERS)
    (sent,) = capture.requests
    _, signed, _ = parse_authorization_v3(sent.headers["Authorization"])
    request = SimpleNamespace(
        method="POST",
        pathname="/",
        query=dict(sent.url.params.multi_items()),
        headers={name: sent.headers[name] for name in signed},
    )
    expected = TeaUtils.get_authorization(
        request, "ACS3-HMAC-SHA256", sent.headers["x-acs-content-sha256"], "testid", "testsecret"
    )
    assert sent.headers["Authorization"] == expected


@pytest.mark.parametrize(
    "path", ["/pop/2018-12-03/images", "/api/v1/repos/shop%2Fcart/tags/1.4.0", "/a%20b/%E9%95%9C"]
)
async def test_auth_signs_a_path_that_is_not_the_root(path: str) -> None:
    # ROA-style requests sign their URL-encoded path as the CanonicalURI, not "/".
    capture = Capture()
    async with httpx.AsyncClient(transport=httpx.MockTransport(capture), auth=make_auth()) as c:
        await c.post(f"https://tds.cn-shanghai.aliyuncs.com{path}", params={"PageSize": "20"})
    (sent,) = capture.requests
    assert sent.url.raw_path.decode().partition("?")[0] == path
    _, signed, _ = parse_authorization_v3(sent.headers["Authorization"])
    request = SimpleNamespace(
        method="POST",
        pathname=path,
        query=dict(sent.url.params.multi_items()),
        headers={name: sent.headers[name] for name in signed},
    )
    expected = TeaUtils.get_authorization(
        request, "ACS3-HMAC-SHA256", sent.headers["x-acs-content-sha256"], "testid", "testsecret"
    )
    assert sent.headers["Authorization"] == expected
    # The same request signed as if its path were "/" is a different signature.
    root = SimpleNamespace(**{**vars(request), "pathname": "/"})
    assert expected != TeaUtils.get_authorization(
        root, "ACS3-HMAC-SHA256", sent.headers["x-acs-content-sha256"], "testid", "testsecret"
    )


@pytest.fixture
def shanghai_time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process time zone at Asia/Shanghai (UTC+8), whatever the machine's."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    assert time.localtime(0).tm_hour == 8
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("shanghai_time_zone")
def test_x_acs_date_is_utc_whatever_the_machine_time_zone() -> None:
    shanghai = datetime.timezone(datetime.timedelta(hours=8))
    clocks = {
        "utc": frozen_clock,
        "offset": lambda: FROZEN.astimezone(shanghai),
        "local": lambda: FROZEN.astimezone(),  # aware, in the machine's zone
    }
    for name, clock in clocks.items():
        capture = Capture()
        auth = make_auth(clock=clock)
        with httpx.Client(transport=httpx.MockTransport(capture), auth=auth) as client:
            client.post(SAS_URL, params=V3_2_QUERY, headers=SAS_ACTION_HEADERS)
        (sent,) = capture.requests
        assert sent.headers["x-acs-date"] == "2024-01-02T03:04:05Z", name
        assert sent.headers["Authorization"] == V3_2_AUTHORIZATION, name
    # The production clock: the header is the current UTC time, not the local wall time.
    capture = Capture()
    auth = make_auth(clock=utc_now)
    with httpx.Client(transport=httpx.MockTransport(capture), auth=auth) as client:
        client.post(SAS_URL, headers=SAS_ACTION_HEADERS)
    stamp = datetime.datetime.strptime(
        capture.requests[0].headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ"
    )
    assert abs(stamp.replace(tzinfo=datetime.UTC).timestamp() - time.time()) < 5
