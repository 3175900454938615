"""Alibaba Cloud credential providers: STS AssumeRole and AssumeRoleWithOIDC (RRSA), ECS RAM role
(instance metadata, IMDSv2), credentials URI, CLI profile.

The protocols as documented and as ``alibabacloud-credentials`` 1.0.12 speaks them, implemented
on httpx so they are asynchronous and every endpoint can be overridden:

- STS (API version 2015-04-01) ``AssumeRole``: RPC style, signed with HMAC-SHA1
  (``SignatureVersion=1.0``) by the base key, every parameter in a form body (the library
  uses the query string; a body keeps tokens out of URLs);
  ``AssumeRoleWithOIDC``: the same parameters unsigned (the OIDC token is the proof). Both
  answer ``{"Credentials": {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}}``.
- ECS metadata: ``PUT /latest/api/token`` (header ``X-aliyun-ecs-metadata-token-ttl-seconds``)
  for an IMDSv2 token, sent as ``X-aliyun-ecs-metadata-token``; the role name from
  ``/latest/meta-data/ram/security-credentials/``; the credentials document from that path plus
  the role name (``Code: Success``).
- Credentials URI: ``GET`` answering the same document as the metadata service.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from exporter.clouds.aliyun.signing import percent_encode, signature_v1
from exporter.credentials.base import (
    Credential,
    CredentialError,
    Fetch,
    Provider,
    WatchedFile,
    iso8601,
    parse_iso8601,
)
from exporter.credentials.remote import (
    METADATA_TIMEOUT,
    STS_TIMEOUT,
    json_object,
    rejected,
    role_name,
    send,
    status_error,
    text_field,
)

log = logging.getLogger(__name__)

STS_VERSION = "2015-04-01"
DEFAULT_STS = "https://sts.aliyuncs.com"
DEFAULT_METADATA = "http://100.100.100.200"
METADATA_TOKEN_TTL = 21600
_ROLE_PATH = "/latest/meta-data/ram/security-credentials/"


def sts_url(region: str | None, vpc: bool) -> str:
    """The STS endpoint of ``region`` (``sts-vpc.`` inside a VPC), else the central one."""
    if not region:
        return DEFAULT_STS
    return f"https://{'sts-vpc' if vpc else 'sts'}.{region}.aliyuncs.com"


def _credential(what: str, body: dict[str, Any]) -> Credential:
    """Parse a ``{AccessKeyId, AccessKeySecret, SecurityToken, Expiration}`` document."""
    try:
        expiration = parse_iso8601(body.get("Expiration"))
    except ValueError:
        raise CredentialError(
            f"{what}: answer has no valid Expiration", code="bad_payload"
        ) from None
    return Credential(
        text_field(what, body, "AccessKeyId"),
        text_field(what, body, "AccessKeySecret"),
        text_field(what, body, "SecurityToken"),
        expiration,
    )


async def _sts(ctx: Fetch, url: str, query: dict[str, str], what: str) -> Credential:
    # POST with a form body: the parameters (tokens among them) stay out of URLs and access logs.
    form = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in query.items())
    request = ctx.http.build_request(
        "POST",
        f"{url}/",
        content=form.encode("ascii"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=STS_TIMEOUT,
    )
    response = await send(ctx.http, request, what)
    if response.status_code >= 500:
        raise status_error(what, response)
    if response.status_code != 200:
        try:
            body = json_object(what, response)
        except CredentialError:
            raise status_error(what, response) from None
        if body.get("Code"):
            raise rejected(what, body["Code"], body.get("RequestId"))
        raise status_error(what, response)
    body = json_object(what, response)
    creds = body.get("Credentials")
    if not isinstance(creds, dict):
        raise CredentialError(f"{what}: answer has no Credentials", code="bad_payload")
    return _credential(what, creds)


class _RoleParams:
    def __init__(
        self,
        role_arn: str,
        session_name: str,
        duration: int,
        policy: str | None,
        sts_endpoint: str,
    ) -> None:
        self.role_arn = role_arn
        self.session_name = session_name
        self.duration = duration
        self.policy = policy
        self.sts_endpoint = sts_endpoint

    def query(self, action: str, now: float) -> dict[str, str]:
        query = {
            "Action": action,
            "Format": "JSON",
            "Version": STS_VERSION,
            "DurationSeconds": str(self.duration),
            "RoleArn": self.role_arn,
            "RoleSessionName": self.session_name,
            "Timestamp": iso8601(now),
        }
        if self.policy:
            query["Policy"] = self.policy
        return query


class RamRoleArnProvider:
    """``ram_role_arn``: STS AssumeRole signed by a base key (itself long-lived or STS)."""

    kind = "ram_role_arn"

    def __init__(
        self,
        base: Provider,
        role: _RoleParams,
        external_id: str | None = None,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._base = base
        self._role = role
        self._external_id = external_id
        self._nonce = nonce

    async def fetch(self, ctx: Fetch) -> Credential:
        base = await self._base.fetch(ctx)
        query = self._role.query("AssumeRole", ctx.clock())
        if self._external_id:
            query["ExternalId"] = self._external_id
        query |= {
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": self._nonce(),
            "AccessKeyId": base.key_id,
        }
        if base.token:
            query["SecurityToken"] = base.token
        query["Signature"] = signature_v1(base.secret, "POST", query)
        return await _sts(ctx, self._role.sts_endpoint, query, "STS AssumeRole")

    def changed(self) -> bool:
        return False  # a rotated base key is used at the next renewal

    def check(self) -> list[str]:
        return self._base.check()


class OidcRoleArnProvider:
    """``oidc_role_arn`` (ACK RRSA): STS AssumeRoleWithOIDC with the projected token file,
    re-read at every renewal (its trailing newline is not part of the token)."""

    kind = "oidc_role_arn"

    def __init__(self, role: _RoleParams, provider_arn: str, token_file: Path) -> None:
        self._role = role
        self._provider_arn = provider_arn
        self._token = WatchedFile(token_file, "oidc_token_file")

    async def fetch(self, ctx: Fetch) -> Credential:
        query = self._role.query("AssumeRoleWithOIDC", ctx.clock())
        query["OIDCProviderArn"] = self._provider_arn
        query["OIDCToken"] = self._token.read()
        return await _sts(ctx, self._role.sts_endpoint, query, "STS AssumeRoleWithOIDC")

    def changed(self) -> bool:
        return False

    def check(self) -> list[str]:
        return self._token.check()


async def _document(ctx: Fetch, url: str, headers: dict[str, str], what: str) -> Credential:
    request = ctx.http.build_request("GET", url, headers=headers, timeout=METADATA_TIMEOUT)
    response = await send(ctx.http, request, what)
    if response.status_code != 200:
        raise status_error(what, response)
    body = json_object(what, response)
    if body.get("Code") != "Success":
        raise rejected(what, body.get("Code") or "no Code", None)
    return _credential(what, body)


class EcsRamRoleProvider:
    """``ecs_ram_role``: the instance's RAM role from ECS metadata, IMDSv2 token first."""

    kind = "ecs_ram_role"

    def __init__(self, endpoint: str, role_name: str | None, imdsv1_disabled: bool) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._role_name = role_name
        self._imdsv1_disabled = imdsv1_disabled

    async def _token(self, ctx: Fetch) -> str | None:
        request = ctx.http.build_request(
            "PUT",
            f"{self._endpoint}/latest/api/token",
            headers={"X-aliyun-ecs-metadata-token-ttl-seconds": str(METADATA_TOKEN_TTL)},
            timeout=METADATA_TIMEOUT,
        )
        try:
            response = await send(ctx.http, request, "ECS metadata token")
            if response.status_code != 200 or not response.text.strip():
                raise status_error("ECS metadata token", response)
        except CredentialError:
            if self._imdsv1_disabled:
                raise
            log.info("ecs metadata token unavailable, using imdsv1")
            return None
        return response.text.strip()

    async def fetch(self, ctx: Fetch) -> Credential:
        token = await self._token(ctx)
        headers = {"X-aliyun-ecs-metadata-token": token} if token else {}
        role = self._role_name
        if not role:
            request = ctx.http.build_request(
                "GET", self._endpoint + _ROLE_PATH, headers=headers, timeout=METADATA_TIMEOUT
            )
            response = await send(ctx.http, request, "ECS metadata role name")
            role = role_name("ECS metadata role name", response)
        url = self._endpoint + _ROLE_PATH + quote(role, safe="")
        return await _document(ctx, url, headers, "ECS metadata credentials")

    def changed(self) -> bool:
        return False

    def check(self) -> list[str]:
        return []


class CredentialsUriProvider:
    """``credentials_uri``: a local credentials server (``ALIBABA_CLOUD_CREDENTIALS_URI``)."""

    kind = "credentials_uri"

    def __init__(self, uri: str) -> None:
        self._uri = uri

    async def fetch(self, ctx: Fetch) -> Credential:
        return await _document(ctx, self._uri, {}, "credentials URI")

    def changed(self) -> bool:
        return False

    def check(self) -> list[str]:
        return []


# CLI profile modes (~/.aliyun/config.json ``profiles[].mode``) this exporter understands.
CLI_MODES = ("AK", "StsToken", "RamRoleArn", "EcsRamRole", "OIDC", "CredentialsURI")


def read_cli_profile(path: Path, name: str | None) -> dict[str, Any]:
    """The profile ``name`` (else the file's ``current``) of an aliyun CLI config file.

    Raises:
        ValueError: unreadable file, bad JSON, no such profile, unsupported mode.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read CLI profile file {path}: {err.strerror}") from None
    except ValueError:
        raise ValueError(f"CLI profile file {path} is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"CLI profile file {path} is not a JSON object")
    wanted = name or data.get("current") or "default"
    for profile in data.get("profiles") or []:
        if isinstance(profile, dict) and profile.get("name") == wanted:
            mode = profile.get("mode")
            if mode not in CLI_MODES:
                raise ValueError(
                    f"CLI profile {wanted!r}: mode {mode!r} is not supported "
                    f"(supported: {', '.join(CLI_MODES)})"
                )
            return profile
    raise ValueError(f"CLI profile {wanted!r} not found in {path}")


def role_params(
    role_arn: str,
    session_name: str | None,
    duration: int | None,
    policy: str | None,
    sts_endpoint: str,
) -> _RoleParams:
    return _RoleParams(
        role_arn, session_name or "imagesec-exporter", duration or 3600, policy, sts_endpoint
    )
