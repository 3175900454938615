"""Tencent Cloud credential providers: STS AssumeRole, AssumeRoleWithWebIdentity (TKE OIDC), CVM
role (instance metadata), profile file.

The protocols as documented and as ``tencentcloud-sdk-python-common`` 3.1.195 speaks them,
implemented on httpx (asynchronous, endpoints overridable):

- STS (service ``sts``, version 2018-08-13): API 3.0 ``POST /`` with a JSON body.
  ``AssumeRole`` is TC3-HMAC-SHA256 signed by the base key; ``AssumeRoleWithWebIdentity`` is
  sent with ``Authorization: SKIP`` (the web identity token is the proof). Both answer
  ``{"Response": {"Credentials": {"TmpSecretId", "TmpSecretKey", "Token"}, "ExpiredTime"}}``,
  errors in ``Response.Error``.
- CVM metadata: the role name from ``/latest/meta-data/cam/security-credentials/``, the document
  ``{"TmpSecretId", "TmpSecretKey", "Token", "ExpiredTime", "Code": "Success"}`` from that path
  plus the role name.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from exporter.clouds.tencent.signing import TC3Auth
from exporter.credentials.base import Credential, CredentialError, Fetch, Provider, WatchedFile
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

STS_VERSION = "2018-08-13"
DEFAULT_STS = "https://sts.tencentcloudapi.com"
DEFAULT_METADATA = "http://metadata.tencentyun.com"
DEFAULT_STS_REGION = "ap-guangzhou"
_ROLE_PATH = "/latest/meta-data/cam/security-credentials/"


def _expiring(what: str, creds: dict[str, Any], expired_time: object) -> Credential:
    if not isinstance(expired_time, int | float) or isinstance(expired_time, bool):
        raise CredentialError(f"{what}: answer has no ExpiredTime", code="bad_payload")
    return Credential(
        text_field(what, creds, "TmpSecretId"),
        text_field(what, creds, "TmpSecretKey"),
        text_field(what, creds, "Token"),
        float(expired_time),
    )


class _Role:
    def __init__(
        self,
        role_arn: str,
        session_name: str | None,
        duration: int | None,
        region: str | None,
        sts_endpoint: str,
    ) -> None:
        self.role_arn = role_arn
        self.session_name = session_name or "imagesec-exporter"
        self.duration = duration or 7200
        self.region = region or DEFAULT_STS_REGION
        self.sts_endpoint = sts_endpoint

    def request(self, ctx: Fetch, action: str, params: dict[str, Any]) -> httpx.Request:
        body = json.dumps(
            {
                "RoleArn": self.role_arn,
                "RoleSessionName": self.session_name,
                "DurationSeconds": self.duration,
                **params,
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-TC-Action": action,
            "X-TC-Version": STS_VERSION,
            "X-TC-Region": self.region,
            "X-TC-Timestamp": str(int(ctx.clock())),
        }
        return ctx.http.build_request(
            "POST", f"{self.sts_endpoint}/", content=body, headers=headers, timeout=STS_TIMEOUT
        )


async def _sts(ctx: Fetch, request: httpx.Request, what: str) -> Credential:
    response = await send(ctx.http, request, what)
    if response.status_code != 200:
        raise status_error(what, response)
    body = json_object(what, response).get("Response")
    if not isinstance(body, dict):
        raise CredentialError(f"{what}: answer has no Response", code="bad_payload")
    error = body.get("Error")
    if isinstance(error, dict):
        raise rejected(what, error.get("Code") or "no Code", body.get("RequestId"))
    creds = body.get("Credentials")
    if not isinstance(creds, dict):
        raise CredentialError(f"{what}: answer has no Credentials", code="bad_payload")
    return _expiring(what, creds, body.get("ExpiredTime"))


class AssumeRoleProvider:
    """``assume_role``: STS AssumeRole signed (TC3, service ``sts``) by a base key."""

    kind = "assume_role"

    def __init__(
        self,
        base: Provider,
        role: _Role,
        external_id: str | None = None,
        policy: str | None = None,
    ) -> None:
        self._base = base
        self._role = role
        self._external_id = external_id
        self._policy = policy

    async def fetch(self, ctx: Fetch) -> Credential:
        base = await self._base.fetch(ctx)
        params = {"ExternalId": self._external_id} if self._external_id else {}
        if self._policy:
            # Tencent STS AssumeRole doc, "Policy": the policy JSON, URL-encoded.
            params["Policy"] = quote(self._policy, safe="")
        request = self._role.request(ctx, "AssumeRole", params)
        auth = TC3Auth(base.key_id, base.secret, service="sts", token=base.token, clock=ctx.clock)
        # Sign here, not in the client: the request is complete and auth_flow does no I/O.
        flow = auth.sync_auth_flow(request)
        signed = next(flow)
        return await _sts(ctx, signed, "STS AssumeRole")

    def changed(self) -> bool:
        return False

    def check(self) -> list[str]:
        return self._base.check()


class OidcRoleProvider:
    """``oidc_role`` (TKE OIDC): STS AssumeRoleWithWebIdentity with the projected token file,
    re-read (and stripped) at every renewal."""

    kind = "oidc_role"

    def __init__(self, role: _Role, provider_id: str, token_file: Path) -> None:
        self._role = role
        self._provider_id = provider_id
        self._token = WatchedFile(token_file, "oidc_token_file")

    async def fetch(self, ctx: Fetch) -> Credential:
        params = {"ProviderId": self._provider_id, "WebIdentityToken": self._token.read()}
        request = self._role.request(ctx, "AssumeRoleWithWebIdentity", params)
        request.headers["Authorization"] = "SKIP"
        return await _sts(ctx, request, "STS AssumeRoleWithWebIdentity")

    def changed(self) -> bool:
        return False

    def check(self) -> list[str]:
        return self._token.check()


class CvmRoleProvider:
    """``cvm_role``: the instance's CAM role from CVM metadata."""

    kind = "cvm_role"

    def __init__(self, endpoint: str, role_name: str | None) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._role_name = role_name

    async def fetch(self, ctx: Fetch) -> Credential:
        role = self._role_name
        if not role:
            request = ctx.http.build_request(
                "GET", self._endpoint + _ROLE_PATH, timeout=METADATA_TIMEOUT
            )
            response = await send(ctx.http, request, "CVM metadata role name")
            role = role_name("CVM metadata role name", response)
        request = ctx.http.build_request(
            "GET", self._endpoint + _ROLE_PATH + quote(role, safe=""), timeout=METADATA_TIMEOUT
        )
        what = "CVM metadata credentials"
        response = await send(ctx.http, request, what)
        if response.status_code != 200:
            raise status_error(what, response)
        body = json_object(what, response)
        if body.get("Code") != "Success":
            raise rejected(what, body.get("Code") or "no Code", None)
        return _expiring(what, body, body.get("ExpiredTime"))

    def changed(self) -> bool:
        return False

    def check(self) -> list[str]:
        return []


def read_profile(path: Path, name: str | None) -> dict[str, str]:
    """Section ``name`` (default ``default``) of a ``~/.tencentcloud/credentials`` INI file.

    Raises:
        ValueError: unreadable file, bad INI, no such section.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        text = path.read_text(encoding="utf-8")
        parser.read_string(text, source=str(path))
    except OSError as err:
        raise ValueError(f"cannot read profile file {path}: {err.strerror}") from None
    except configparser.Error:
        raise ValueError(f"profile file {path} is not a valid INI file") from None
    section = name or "default"
    if not parser.has_section(section):
        raise ValueError(f"profile [{section}] not found in {path}")
    return {k: v.strip().strip('"') for k, v in parser.items(section)}


def role(
    role_arn: str,
    session_name: str | None,
    duration: int | None,
    region: str | None,
    sts_endpoint: str,
) -> _Role:
    return _Role(role_arn, session_name, duration, region, sts_endpoint)
