"""Tencent Cloud TC3 signing: golden vectors, the httpx Auth, and the official SDK as oracle."""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from tencentcloud.common.sign import Sign  # type: ignore[import-untyped]

from exporter.clouds.tencent.signing import (
    TC3Auth,
    authorization_tc3,
    canonical_request_tc3,
    credential_scope,
    parse_authorization_tc3,
    signature_tc3,
    string_to_sign_tc3,
    utc_now_seconds,
)

# Test vectors: /work/shared/cloud-api-facts.md section 2b.

DOC_SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
DOC_SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
DOC_TIMESTAMP = 1551113065
DOC_BODY = (
    b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
)
DOC_SIGNATURE_CHARSET = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
DOC_SIGNATURE_PLAIN = "683bd0b53659853c39699162253251192320a09b3937e27bf8e08a559b1465b8"

TCSS_SECRET_ID = "AKIDtestSecretId"
TCSS_SECRET_KEY = "testSecretKey"
TCSS_BODY = (
    b'{"Limit": 100, "Offset": 0, "Filters": [{"Name": "ScanStatus", "Values": ["scanned"]}], '
    b'"By": "CreateTime", "Order": "desc"}'
)
TCSS_AUTHORIZATION = (
    "TC3-HMAC-SHA256 Credential=AKIDtestSecretId/2019-02-25/tcss/tc3_request, "
    "SignedHeaders=content-type;host, "
    "Signature=fcc33799fb1d219f5310391dd4a59c239fcc8b21d2fb5b94df8e9d912fb4b8d0"
)

LOOPBACK_TIMESTAMP = 1704164645
LOOPBACK_BODY = b'{"Limit": 100, "Offset": 0}'
LOOPBACK_CANONICAL = (
    "POST\n/\n\ncontent-type:application/json\nhost:127.0.0.1:18081\n\ncontent-type;host\n"
    + hashlib.sha256(LOOPBACK_BODY).hexdigest()
)
LOOPBACK_AUTHORIZATION = (
    "TC3-HMAC-SHA256 Credential=AKIDtestSecretId/2024-01-02/tcss/tc3_request, "
    "SignedHeaders=content-type;host, "
    "Signature=026e52c394eb46e0b903833cd637a25958f985c1c4920a840cca2c45d6ebd3b7"
)

TCSS_HEADERS = {
    "Content-Type": "application/json",
    "X-TC-Action": "DescribeAssetImageList",
    "X-TC-Version": "2020-11-01",
    "X-TC-Region": "ap-guangzhou",
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Capture:
    """A MockTransport handler that records every request it receives."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"Response": {"RequestId": "r-1"}})


def make_auth(**overrides: object) -> TC3Auth:
    kwargs: dict[str, object] = {
        "secret_id": TCSS_SECRET_ID,
        "secret_key": TCSS_SECRET_KEY,
        "clock": lambda: float(DOC_TIMESTAMP),
    }
    kwargs.update(overrides)
    return TC3Auth(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def local_timezone_far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process timezone at UTC+14, where local dates differ from UTC dates."""
    monkeypatch.setenv("TZ", "Etc/GMT-14")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- pure helpers -----------------------------------------------------------------------------


def test_credential_scope() -> None:
    assert credential_scope(DOC_TIMESTAMP, "tcss") == "2019-02-25/tcss/tc3_request"


@pytest.mark.usefixtures("local_timezone_far_from_utc")
def test_credential_scope_uses_the_utc_date() -> None:
    # 2024-01-01T23:59:59Z is already 2024-01-02 in local time at UTC+14.
    assert datetime.datetime.fromtimestamp(1704153599).day == 2
    assert credential_scope(1704153599, "tcss") == "2024-01-01/tcss/tc3_request"
    assert credential_scope(1704153600, "tcss") == "2024-01-02/tcss/tc3_request"


def test_string_to_sign_layout() -> None:
    assert string_to_sign_tc3(LOOPBACK_TIMESTAMP, "tcss", LOOPBACK_CANONICAL) == (
        "TC3-HMAC-SHA256\n1704164645\n2024-01-02/tcss/tc3_request\n"
        + sha256_hex(LOOPBACK_CANONICAL.encode())
    )


# --- the documented vector, with and without a charset ----------------------------------------


def test_doc_vector_with_charset_content_type() -> None:
    assert sha256_hex(DOC_BODY) == (
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    canonical = canonical_request_tc3(
        "POST", "", "application/json; charset=utf-8", "cvm.tencentcloudapi.com", DOC_BODY
    )
    assert canonical == (
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n"
        "\ncontent-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    assert sha256_hex(canonical.encode()) == (
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    signature = signature_tc3(DOC_SECRET_KEY, DOC_TIMESTAMP, "cvm", canonical)
    assert signature == DOC_SIGNATURE_CHARSET
    assert authorization_tc3(DOC_SECRET_ID, DOC_TIMESTAMP, "cvm", signature) == (
        f"TC3-HMAC-SHA256 Credential={DOC_SECRET_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={DOC_SIGNATURE_CHARSET}"
    )


def test_doc_vector_as_the_sdk_sends_it_without_charset() -> None:
    canonical = canonical_request_tc3(
        "POST", "", "application/json", "cvm.tencentcloudapi.com", DOC_BODY
    )
    assert sha256_hex(canonical.encode()) == (
        "df142fa7176428137ac6a6b25b5efcb6b4c08a91fc30d75ecebe47877d3143d8"
    )
    assert signature_tc3(DOC_SECRET_KEY, DOC_TIMESTAMP, "cvm", canonical) == DOC_SIGNATURE_PLAIN


# --- TCSS vectors -----------------------------------------------------------------------------


def test_tcss_describe_asset_image_list_vector() -> None:
    assert sha256_hex(TCSS_BODY) == (
        "cef822e3820fec81bc9530e5f42eb3b748e1f1e410beabe58617e8c744ed5df3"
    )
    canonical = canonical_request_tc3(
        "POST", "", "application/json", "tcss.tencentcloudapi.com", TCSS_BODY
    )
    assert sha256_hex(canonical.encode()) == (
        "24f3aeb9fe74114e5b716e6478a68e7effe28569c00f834afcba549724bdde0d"
    )
    signature = signature_tc3(TCSS_SECRET_KEY, DOC_TIMESTAMP, "tcss", canonical)
    assert authorization_tc3(TCSS_SECRET_ID, DOC_TIMESTAMP, "tcss", signature) == (
        TCSS_AUTHORIZATION
    )


def test_tcss_loopback_capture_vector() -> None:
    canonical = canonical_request_tc3(
        "POST", "", "application/json", "127.0.0.1:18081", LOOPBACK_BODY
    )
    assert canonical == LOOPBACK_CANONICAL
    assert canonical.endswith("\na75c69a2fa3f0a2cd4ffb008977bc3ca0be18f71f2212fa4970c32d831af6e29")
    signature = signature_tc3(TCSS_SECRET_KEY, LOOPBACK_TIMESTAMP, "tcss", canonical)
    assert authorization_tc3(TCSS_SECRET_ID, LOOPBACK_TIMESTAMP, "tcss", signature) == (
        LOOPBACK_AUTHORIZATION
    )


# --- parse_authorization_tc3 ------------------------------------------------------------------


def test_parse_authorization_tc3_round_trips() -> None:
    assert parse_authorization_tc3(TCSS_AUTHORIZATION) == (
        "AKIDtestSecretId",
        "2019-02-25",
        "tcss",
        ["content-type", "host"],
        "fcc33799fb1d219f5310391dd4a59c239fcc8b21d2fb5b94df8e9d912fb4b8d0",
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "TC3-HMAC-SHA256",
        TCSS_AUTHORIZATION.replace("TC3-HMAC-SHA256", "TC3-HMAC-SHA1"),
        TCSS_AUTHORIZATION.replace("Credential=AKIDtestSecretId/", "Credential=/"),
        TCSS_AUTHORIZATION.replace("2019-02-25", "2019-02-30"),
        TCSS_AUTHORIZATION.replace("2019-02-25", "20190225"),
        TCSS_AUTHORIZATION.replace("/tcss/", "//"),
        TCSS_AUTHORIZATION.replace("tc3_request", "tc2_request"),
        TCSS_AUTHORIZATION.replace("SignedHeaders=content-type;host", "SignedHeaders="),
        TCSS_AUTHORIZATION.replace("SignedHeaders=content-type;host", "SignedHeaders=;host"),
        TCSS_AUTHORIZATION[:-1],
        TCSS_AUTHORIZATION + "0",
        TCSS_AUTHORIZATION.replace("Signature=fcc3", "Signature=FCC3"),
        TCSS_AUTHORIZATION + ", Extra=1",
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host,Signature=" + "0" * 64,
    ],
)
def test_parse_authorization_tc3_rejects_malformed(value: str) -> None:
    with pytest.raises(ValueError):
        parse_authorization_tc3(value)


# --- TC3Auth ----------------------------------------------------------------------------------


def test_auth_sync_signs_the_tcss_vector() -> None:
    capture = Capture()
    with httpx.Client(transport=httpx.MockTransport(capture), auth=make_auth()) as client:
        client.post("https://tcss.tencentcloudapi.com/", content=TCSS_BODY, headers=TCSS_HEADERS)
    (sent,) = capture.requests
    assert sent.headers["Authorization"] == TCSS_AUTHORIZATION
    assert sent.headers["X-TC-Timestamp"] == "1551113065"
    assert "X-TC-Token" not in sent.headers


async def test_auth_async_signs_the_loopback_vector() -> None:
    capture = Capture()
    auth = make_auth(clock=lambda: LOOPBACK_TIMESTAMP + 0.987)
    async with httpx.AsyncClient(transport=httpx.MockTransport(capture), auth=auth) as client:
        await client.post("http://127.0.0.1:18081/", content=LOOPBACK_BODY, headers=TCSS_HEADERS)
    (sent,) = capture.requests
    assert sent.headers["Host"] == "127.0.0.1:18081"
    assert sent.headers["X-TC-Timestamp"] == "1704164645"
    assert sent.headers["Authorization"] == LOOPBACK_AUTHORIZATION


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json; charset=utf-8", DOC_SIGNATURE_CHARSET),
        ("application/json", DOC_SIGNATURE_PLAIN),
    ],
)
async def test_auth_async_signs_the_content_type_exactly_as_sent(
    content_type: str, expected: str
) -> None:
    capture = Capture()
    auth = make_auth(secret_id=DOC_SECRET_ID, secret_key=DOC_SECRET_KEY, service="cvm")
    async with httpx.AsyncClient(transport=httpx.MockTransport(capture), auth=auth) as client:
        await client.post(
            "https://cvm.tencentcloudapi.com/",
            content=DOC_BODY,
            headers={"Content-Type": content_type, "X-TC-Action": "DescribeInstances"},
        )
    _, _, _, _, signature = parse_authorization_tc3(capture.requests[0].headers["Authorization"])
    assert signature == expected


def test_auth_sends_the_token_which_tc3_leaves_unsigned() -> None:
    # TC3 signs only content-type;host (as the SDK does), so the token travels in X-TC-Token and
    # the signature is the same as without it.
    capture = Capture()
    auth = make_auth(token="sts-token-example")
    with httpx.Client(transport=httpx.MockTransport(capture), auth=auth) as client:
        client.post("https://tcss.tencentcloudapi.com/", content=TCSS_BODY, headers=TCSS_HEADERS)
    (sent,) = capture.requests
    assert sent.headers["X-TC-Token"] == "sts-token-example"
    assert sent.headers["Authorization"] == TCSS_AUTHORIZATION


def test_auth_get_signs_the_raw_query_and_an_empty_payload() -> None:
    params = {
        "Limit": "100",
        "Offset": "0",
        "Filters.0.Name": "ImageName",
        "Filters.0.Values.0": "a b",
    }
    capture = Capture()
    with httpx.Client(transport=httpx.MockTransport(capture), auth=make_auth()) as client:
        client.get(
            "https://tcss.tencentcloudapi.com/",
            params=params,
            headers={**TCSS_HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
        )
    (sent,) = capture.requests
    raw_query = sent.url.query.decode()
    assert raw_query == urlencode(params)
    canonical = (
        f"GET\n/\n{raw_query}\ncontent-type:application/x-www-form-urlencoded\n"
        f"host:tcss.tencentcloudapi.com\n\ncontent-type;host\n{sha256_hex(b'')}"
    )
    string_to_sign = (
        f"TC3-HMAC-SHA256\n{DOC_TIMESTAMP}\n2019-02-25/tcss/tc3_request\n"
        f"{sha256_hex(canonical.encode())}"
    )
    expected = Sign.sign_tc3(TCSS_SECRET_KEY, "2019-02-25", "tcss", string_to_sign)
    assert parse_authorization_tc3(sent.headers["Authorization"])[4] == expected


def test_auth_rejects_methods_tc3_does_not_sign() -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(Capture()), auth=make_auth()) as client,
        pytest.raises(ValueError, match="PUT"),
    ):
        client.put("https://tcss.tencentcloudapi.com/", content=b"{}", headers=TCSS_HEADERS)


def test_auth_repr_hides_secrets() -> None:
    auth = make_auth(secret_key="s3cr3t-value", token="t0ken-value")
    text = repr(auth)
    assert TCSS_SECRET_ID in text
    assert "s3cr3t-value" not in text
    assert "t0ken-value" not in text


def test_utc_now_seconds() -> None:
    assert abs(utc_now_seconds() - time.time()) < 5


# --- the official SDK (tencentcloud-sdk-python-common) as a dev-only oracle --------------------


@pytest.mark.parametrize(
    ("secret_key", "timestamp", "service", "content_type", "host", "payload"),
    [
        ("testSecretKey", 1704164645, "tcss", "application/json", "tcss.tencentcloudapi.com", b""),
        (
            "Ké/+=&秘密",
            1704153599,
            "tcss",
            "application/json; charset=utf-8",
            "tcss.intl.tencentcloudapi.com",
            '{"Filters": [{"Name": "ImageName", "Values": ["镜像 a+b*c~d/é"]}]}'.encode(),
        ),
        (
            "x" * 64,
            946684800,
            "cvm",
            "application/json",
            "127.0.0.1:18081",
            b'{"Limit": 1, "Odd": "\\u0000\\n\\t\\"quoted\\""}',
        ),
        ("🔑", 4102444799, "tcss", "application/json", "h", "😀 ünïcödé".encode()),
    ],
)
def test_signature_matches_tencentcloud_sign_tc3(
    secret_key: str, timestamp: int, service: str, content_type: str, host: str, payload: bytes
) -> None:
    # The request and string to sign are laid out here as the SDK's _get_tc3_signature does.
    date = datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")
    sdk_canonical = "%s\n%s\n%s\n%s\n%s\n%s" % (  # noqa: UP031 - mirrors the SDK source
        "POST",
        "/",
        "",
        f"content-type:{content_type}\nhost:{host}\n",
        "content-type;host",
        sha256_hex(payload),
    )
    sdk_string_to_sign = "%s\n%s\n%s\n%s" % (  # noqa: UP031 - mirrors the SDK source
        "TC3-HMAC-SHA256",
        timestamp,
        f"{date}/{service}/tc3_request",
        sha256_hex(sdk_canonical.encode("utf8")),
    )
    expected = Sign.sign_tc3(secret_key, date, service, sdk_string_to_sign)

    canonical = canonical_request_tc3("POST", "", content_type, host, payload)
    assert canonical == sdk_canonical
    assert string_to_sign_tc3(timestamp, service, canonical) == sdk_string_to_sign
    assert signature_tc3(secret_key, timestamp, service, canonical) == expected
