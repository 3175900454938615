"""What the credential providers put on the wire, checked with MockTransport fakes: every
accepted setting reaches the request; IMDSv2 fallback; backoff on a broken key file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import httpx
import pytest

from exporter.clouds.aliyun.signing import signature_v1
from exporter.config import parse_config
from exporter.credentials import Credential, CredentialError, CredentialHolder, Fetch, Provider
from exporter.credentials.chain import resolve_provider
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

ALIYUN_DOC = {
    "AccessKeyId": "STS.NTtemp",
    "AccessKeySecret": "temp-secret",
    "SecurityToken": "temp-token",
    "Expiration": "2026-01-01T01:00:00Z",
}


class Recorder:
    """A fake endpoint: records requests, answers from ``answer(request)``."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def provider_of(provider: str, credentials: dict[str, object], **account: object) -> Provider:
    region = "cn-shanghai" if provider == "aliyun" else "ap-guangzhou"
    parsed = parse_config(
        {
            "accounts": [
                {
                    "name": "a",
                    "provider": provider,
                    "regions": [region],
                    "credentials": credentials,
                    **account,
                }
            ]
        }
    ).accounts[0]
    return resolve_provider(parsed, {}, home=Path("/nonexistent")).provider


async def fetch(
    provider: Provider, recorder: Recorder, clock: FakeClock | None = None
) -> Credential:
    """One fetch by the provider itself (the holder would wrap its errors)."""
    clock = clock or FakeClock(1_767_225_600.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as http:
        return await provider.fetch(Fetch(http, clock))


async def test_aliyun_assume_role_sends_every_setting_signed_by_the_base_key() -> None:
    recorder = Recorder(lambda r: httpx.Response(200, json={"Credentials": ALIYUN_DOC}))
    provider = provider_of(
        "aliyun",
        {
            "type": "ram_role_arn",
            "access_key_id": "LTAIbase",
            "access_key_secret": "base-secret-1",
            "security_token": "base-token",
            "role_arn": "acs:ram::1:role/r",
            "role_session_name": "sess",
            "duration_seconds": 1800,
            "external_id": "ext-1",
            "policy": '{"Version":"1"}',
            "sts_region": "cn-hangzhou",
            "vpc_endpoint_enabled": True,
        },
    )
    creds = await fetch(provider, recorder)
    assert creds.key_id == "STS.NTtemp" and creds.expiration == 1_767_229_200.0
    (request,) = recorder.requests
    assert str(request.url) == "https://sts-vpc.cn-hangzhou.aliyuncs.com/"
    assert request.method == "POST" and request.url.query == b""  # nothing secret in the URL
    params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
    assert params["Action"] == "AssumeRole" and params["Version"] == "2015-04-01"
    assert params["RoleArn"] == "acs:ram::1:role/r" and params["RoleSessionName"] == "sess"
    assert params["DurationSeconds"] == "1800" and params["ExternalId"] == "ext-1"
    assert params["Policy"] == '{"Version":"1"}' and params["SecurityToken"] == "base-token"
    assert params["Timestamp"] == "2026-01-01T00:00:00Z" and params["AccessKeyId"] == "LTAIbase"
    assert params["Signature"] == signature_v1("base-secret-1", "POST", params)


async def test_aliyun_oidc_is_unsigned_and_strips_the_token_files_newline(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("oidc.jwt.value\n")
    recorder = Recorder(lambda r: httpx.Response(200, json={"Credentials": ALIYUN_DOC}))
    provider = provider_of(
        "aliyun",
        {
            "type": "oidc_role_arn",
            "role_arn": "acs:ram::1:role/r",
            "oidc_provider_arn": "acs:ram::1:oidc-provider/p",
            "oidc_token_file": str(token),
            "policy": "{}",
        },
        sts_endpoint="http://127.0.0.1:9",
    )
    await fetch(provider, recorder)
    params = dict(parse_qsl(recorder.requests[0].content.decode()))
    assert params["OIDCToken"] == "oidc.jwt.value" and params["Policy"] == "{}"
    assert "Signature" not in params and "AccessKeyId" not in params
    assert params["RoleSessionName"] == "imagesec-exporter" and params["DurationSeconds"] == "3600"


async def test_tencent_assume_role_sends_external_id_and_url_encoded_policy() -> None:
    answer = {
        "Response": {
            "Credentials": {"TmpSecretId": "AKIDtmp", "TmpSecretKey": "k", "Token": "t"},
            "ExpiredTime": 1_767_232_800,
            "RequestId": "r",
        }
    }
    recorder = Recorder(lambda r: httpx.Response(200, json=answer))
    provider = provider_of(
        "tencent",
        {
            "type": "assume_role",
            "secret_id": "AKIDbase",
            "secret_key": "base-key-1",
            "role_arn": "qcs::cam::uin/1:roleName/r",
            "external_id": "ext-2",
            "policy": '{"version":"2.0"}',
            "region": "ap-singapore",
        },
    )
    creds = await fetch(provider, recorder)
    assert creds.key_id == "AKIDtmp" and creds.expiration == 1_767_232_800.0
    (request,) = recorder.requests
    assert str(request.url) == "https://sts.tencentcloudapi.com/"
    body = json.loads(request.content)
    assert body["ExternalId"] == "ext-2" and unquote(body["Policy"]) == '{"version":"2.0"}'
    assert body["DurationSeconds"] == 7200
    assert request.headers["X-TC-Region"] == "ap-singapore"
    assert request.headers["X-TC-Action"] == "AssumeRole"
    assert request.headers["Authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDbase/")
    assert "/sts/tc3_request" in request.headers["Authorization"]


async def test_tencent_sts_error_is_rejected_with_the_vendor_code_only() -> None:
    error = {"Code": "InvalidParameter.WebIdentityTokenError", "Message": "token abc.def bad"}
    recorder = Recorder(lambda r: httpx.Response(200, json={"Response": {"Error": error}}))
    provider = provider_of(
        "tencent",
        {"type": "assume_role", "secret_id": "AKIDb", "secret_key": "k-1", "role_arn": "r"},
    )
    with pytest.raises(CredentialError) as err:
        await fetch(provider, recorder)
    assert err.value.code == "rejected" and "WebIdentityTokenError" in str(err.value)
    assert "abc.def" not in str(err.value)  # the vendor message may echo what was sent


def _metadata(imds_token_status: int) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(imds_token_status, text="imds-token")
        if request.url.path.endswith("/security-credentials/"):
            return httpx.Response(200, text="node-role\n")
        return httpx.Response(200, json={**ALIYUN_DOC, "Code": "Success"})

    return answer


async def test_ecs_role_uses_the_imdsv2_token_and_falls_back_unless_disabled() -> None:
    account = {"metadata_endpoint": "http://127.0.0.1:9"}
    recorder = Recorder(_metadata(200))
    await fetch(provider_of("aliyun", {"type": "ecs_ram_role"}, **account), recorder)
    put, role, doc = recorder.requests
    assert put.headers["X-aliyun-ecs-metadata-token-ttl-seconds"] == "21600"
    assert role.headers["X-aliyun-ecs-metadata-token"] == "imds-token"
    assert doc.url.path == "/latest/meta-data/ram/security-credentials/node-role"
    recorder = Recorder(_metadata(403))
    await fetch(provider_of("aliyun", {"type": "ecs_ram_role"}, **account), recorder)
    assert "X-aliyun-ecs-metadata-token" not in recorder.requests[-1].headers  # IMDSv1
    strict = {"type": "ecs_ram_role", "imdsv1_disabled": True, "role_name": "r"}
    with pytest.raises(CredentialError) as err:
        await fetch(provider_of("aliyun", strict, **account), Recorder(_metadata(403)))
    assert err.value.code == "http_4xx"


async def test_a_broken_key_file_keeps_the_key_and_is_retried_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("first-secret-1\n")
    provider = provider_of("tencent", {"secret_id": "AKIDx", "secret_key_file": str(secret)})
    clock = FakeClock(1_767_225_600.0)
    telemetry = Telemetry()
    async with httpx.AsyncClient() as http:
        holder = CredentialHolder(
            provider, cloud="tencent", account="a", http=http, telemetry=telemetry, clock=clock
        )
        assert (await holder.get()).secret == "first-secret-1"
        secret.write_text("")  # mid-rotation: the file is briefly empty
        for _ in range(50):
            assert (await holder.get()).secret == "first-secret-1"
        failures = ("tencent", "a", "token_file")
        assert telemetry.value("imagesec_credential_refresh_failures", failures) == 1
        secret.write_text("second-secret-2\n")
        clock.advance(11)
        assert (await holder.get()).secret == "second-secret-2"
    assert "first-secret-1" not in caplog.text and "second-secret-2" not in caplog.text


async def test_shutdown_cancels_a_renewal_in_flight() -> None:
    import asyncio

    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()  # STS never answers
        raise AssertionError("unreachable")

    provider = provider_of(
        "tencent",
        {"type": "assume_role", "secret_id": "AKIDb", "secret_key": "k-1", "role_arn": "r"},
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
        holder = CredentialHolder(provider, cloud="tencent", account="a", http=http)
        waiter = asyncio.create_task(holder.get())
        await started.wait()
        await holder.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_credentials_that_come_back_expired_do_not_turn_each_request_into_a_fetch() -> None:
    stale = {**ALIYUN_DOC, "Code": "Success", "Expiration": "2025-12-31T00:00:00Z"}  # a day early
    recorder = Recorder(lambda r: httpx.Response(200, json=stale))
    provider = provider_of(
        "aliyun", {"type": "credentials_uri", "credentials_uri": "http://127.0.0.1:9/c"}
    )
    clock = FakeClock(1_767_225_600.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as http:
        holder = CredentialHolder(provider, cloud="aliyun", account="a", http=http, clock=clock)
        for _ in range(20):
            with pytest.raises(CredentialError) as err:
                await holder.get()
            assert err.value.code == "credentials_expired"
        assert len(recorder.requests) == 1
        clock.advance(11)
        with pytest.raises(CredentialError):
            await holder.get()
        assert len(recorder.requests) == 2


def test_credential_codes_are_in_the_shared_code_table() -> None:
    from exporter.credentials import CREDENTIAL_ERROR_CODES, SOURCE_DOWN_CODES
    from exporter.errors import CODES, fold_code

    for code in (*CREDENTIAL_ERROR_CODES, *SOURCE_DOWN_CODES):
        assert code in CODES and fold_code("aliyun", code) == code
