"""Simulated STS: Alibaba (2015-04-01) AssumeRole and AssumeRoleWithOIDC; Tencent (2018-08-13)
AssumeRole and AssumeRoleWithWebIdentity.

Served on the same listeners as Sas and TCSS (STS requests are told apart by their action), so
an account's ``sts_endpoint`` can point at the simulator. Signatures are verified as the
vendors do: Alibaba AssumeRole by ACS3-HMAC-SHA256 or HMAC-SHA1 query signing (form body
parameters included), Tencent AssumeRole by TC3-HMAC-SHA256 with the credential scope service
``sts``; the OIDC variants are unsigned and check the role, the provider and the token (which
must be one of ``IdentityStore.oidc_tokens``, byte for byte). Faults of the simulator's plan
apply with the action names (``AssumeRole``...).
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from exporter.credentials.base import iso8601
from exporter.simulator.core import SimRequest, SimResponse
from exporter.simulator.identity import Cloud

if TYPE_CHECKING:
    from exporter.simulator.core import Simulator

ALIYUN_STS_VERSION = "2015-04-01"
TENCENT_STS_VERSION = "2018-08-13"
ALIYUN_ACTIONS = frozenset({"AssumeRole", "AssumeRoleWithOIDC"})
TENCENT_ACTIONS = frozenset({"AssumeRole", "AssumeRoleWithWebIdentity"})
_ALIYUN_CT = "application/json;charset=utf-8"
_TENCENT_CT = "application/json"


class StsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message


def _params(request: SimRequest) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in [*request.query_pairs(), *request.form_pairs()]:
        params.setdefault(name, value)
    return params


def aliyun_action(request: SimRequest) -> str | None:
    """The STS action of a request to the Alibaba listener, or None if it is not one."""
    action = request.header("x-acs-action") or _params(request).get("Action")
    return action if action in ALIYUN_ACTIONS else None


def tencent_action(request: SimRequest) -> str | None:
    """The STS action of a request to the Tencent listener, or None if it is not one."""
    action = request.header("X-TC-Action")
    return action if action in TENCENT_ACTIONS else None


def _duration(raw: object, default: int) -> int:
    try:
        value = int(str(raw)) if raw not in (None, "") else default
    except ValueError:
        value = -1
    if not 900 <= value <= 43200:
        raise StsError(400, "InvalidParameter.DurationSeconds", "DurationSeconds is out of range.")
    return value


class AliyunSts:
    """Alibaba Cloud STS."""

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator

    def handle(self, request: SimRequest, action: str) -> SimResponse:
        request_id = str(uuid.uuid4()).upper()
        self.sim.count("aliyun", action)
        fired = self.sim.faults.draw("aliyun", action)
        failing = next((f for f in fired if f.kind == "server_error"), None)
        try:
            if failing is not None:
                raise StsError(
                    failing.status, "InternalError", "The request processing has failed."
                )
            payload = self._process(request, action)
        except StsError as err:
            body = {
                "RequestId": request_id,
                "HostId": "sts.aliyuncs.com",
                "Code": err.code,
                "Message": err.message,
                "Recommend": f"https://api.aliyun.com/troubleshoot?q={err.code}&product=Sts",
            }
            return SimResponse.of_json(err.status, body, _ALIYUN_CT)
        return SimResponse.of_json(200, {"RequestId": request_id, **payload}, _ALIYUN_CT)

    def _process(self, request: SimRequest, action: str) -> dict[str, Any]:
        from exporter.simulator.aliyun import SasError

        params = _params(request)
        now = self.sim.clock()
        if action == "AssumeRole":
            authorization = request.header("authorization")
            try:
                if authorization is not None and authorization.startswith("ACS3-"):
                    self.sim.aliyun._verify_v3(request, authorization, now, ALIYUN_STS_VERSION)
                elif "Signature" in params:
                    self.sim.aliyun._verify_v1(request, params, now, ALIYUN_STS_VERSION)
                else:
                    raise StsError(400, "MissingParameter", "AccessKeyId is mandatory.")
            except SasError as err:
                raise StsError(err.status, err.code, err.message) from None
        elif params.get("Version", request.header("x-acs-version")) != ALIYUN_STS_VERSION:
            raise StsError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        role = params.get("RoleArn", "")
        if not role:
            raise StsError(400, "MissingRoleArn", "RoleArn is mandatory for this action.")
        if not params.get("RoleSessionName"):
            raise StsError(
                400, "MissingRoleSessionName", "RoleSessionName is mandatory for this action."
            )
        duration = _duration(params.get("DurationSeconds"), 3600)
        if role not in self.sim.identity.roles["aliyun"]:
            raise StsError(404, "EntityNotExist.Role", "The role not exists.")
        result: dict[str, Any] = {}
        if action == "AssumeRoleWithOIDC":
            provider = params.get("OIDCProviderArn", "")
            if provider not in self.sim.identity.oidc_providers["aliyun"]:
                raise StsError(
                    404, "EntityNotExist.OIDCProvider", "The OIDC provider does not exist."
                )
            token = params.get("OIDCToken", "")
            self.sim.identity.saw_oidc_token(token)
            if token not in self.sim.identity.oidc_tokens:
                raise StsError(
                    400, "AuthenticationFail.OIDCToken.Invalid", "The OIDC token is invalid."
                )
            result["OIDCTokenInfo"] = {"Subject": "system:serviceaccount:monitoring:imagesec"}
        issued = self.sim.identity.issue("aliyun", role, duration)
        session = params["RoleSessionName"]
        return {
            **result,
            "AssumedRoleUser": {
                "AssumedRoleId": f"300000000000000001:{session}",
                "Arn": f"{role}/{session}",
            },
            "Credentials": {
                "AccessKeyId": issued.key_id,
                "AccessKeySecret": issued.secret,
                "SecurityToken": issued.token,
                "Expiration": iso8601(issued.expiration),
            },
        }


class TencentSts:
    """Tencent Cloud STS."""

    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator

    def handle(self, request: SimRequest, action: str) -> SimResponse:
        request_id = str(uuid.uuid4())
        self.sim.count("tencent", action)
        fired = self.sim.faults.draw("tencent", action)
        failing = next((f for f in fired if f.kind == "server_error"), None)
        try:
            if failing is not None:
                raise StsError(failing.status, "InternalError", "An internal error occurred.")
            inner = self._process(request, action)
        except StsError as err:
            inner = {"Error": {"Code": err.code, "Message": err.message}}
            body = {"Response": {**inner, "RequestId": request_id}}
            status = err.status if err.status >= 500 else 200
            return SimResponse.of_json(status, body, _TENCENT_CT)
        return SimResponse.of_json(
            200, {"Response": {**inner, "RequestId": request_id}}, _TENCENT_CT
        )

    def _process(self, request: SimRequest, action: str) -> dict[str, Any]:
        from exporter.simulator.tencent import TcError

        if request.header("X-TC-Version") != TENCENT_STS_VERSION:
            raise StsError(200, "NoSuchVersion", "The requested version does not exist.")
        now = self.sim.clock()
        if action == "AssumeRole":
            try:
                self.sim.tencent._verify(request, now, "sts")
            except TcError as err:
                raise StsError(200, err.code, err.message) from None
        try:
            params = json.loads(request.body or b"{}")
        except ValueError:
            raise StsError(200, "InvalidParameter.ParamError", "The body is not JSON.") from None
        if not isinstance(params, dict):
            raise StsError(200, "InvalidParameter.ParamError", "The body is not an object.")
        role = str(params.get("RoleArn") or "")
        if not role or not params.get("RoleSessionName"):
            raise StsError(200, "MissingParameter", "RoleArn and RoleSessionName are required.")
        try:
            duration = _duration(params.get("DurationSeconds"), 7200)
        except StsError:
            raise StsError(
                200, "InvalidParameter.ParamError", "DurationSeconds is out of range."
            ) from None
        if role not in self.sim.identity.roles["tencent"]:
            raise StsError(200, "InvalidParameter.ResouceError", "The role does not exist.")
        if action == "AssumeRoleWithWebIdentity":
            if params.get("ProviderId") not in self.sim.identity.oidc_providers["tencent"]:
                raise StsError(
                    200, "InvalidParameter.ParamError", "The identity provider does not exist."
                )
            token = str(params.get("WebIdentityToken") or "")
            self.sim.identity.saw_oidc_token(token)
            if token not in self.sim.identity.oidc_tokens:
                raise StsError(
                    200,
                    "InvalidParameter.WebIdentityTokenError",
                    "The web identity token is invalid.",
                )
        issued = self.sim.identity.issue("tencent", role, duration)
        return {
            "Credentials": {
                "Token": issued.token,
                "TmpSecretId": issued.key_id,
                "TmpSecretKey": issued.secret,
            },
            "ExpiredTime": int(issued.expiration),
            "Expiration": iso8601(issued.expiration),
        }


def route(sim: Simulator, cloud: Cloud, request: SimRequest) -> SimResponse | None:
    """Answer ``request`` if it is for STS or instance metadata; None for Sas/TCSS."""
    from exporter.simulator.metadata import serve_metadata

    if request.path.startswith("/latest/"):
        return serve_metadata(sim, cloud, request)
    if cloud == "aliyun":
        action = aliyun_action(request)
        return sim.aliyun_sts.handle(request, action) if action else None
    action = tencent_action(request)
    return sim.tencent_sts.handle(request, action) if action else None
