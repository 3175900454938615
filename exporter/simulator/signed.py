"""Build signed simulator requests by hand (for tests and experiments), one helper per scheme."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from exporter.clouds.aliyun.signing import (
    authorization_v3,
    canonical_request_v3,
    percent_encode,
    signature_v1,
    signature_v3,
)
from exporter.clouds.tencent.signing import (
    authorization_tc3,
    canonical_request_tc3,
    signature_tc3,
)
from exporter.simulator.core import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    SimRequest,
)


def _acs_time(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())


def aliyun_v3(
    action: str,
    params: Mapping[str, str] | None = None,
    *,
    now: float,
    access_key_id: str = DEMO_ALIYUN_ACCESS_KEY_ID,
    secret: str = DEMO_ALIYUN_ACCESS_KEY_SECRET,
    nonce: str | None = None,
    token: str | None = None,
    method: str = "POST",
    host: str = "tds.cn-shanghai.aliyuncs.com",
    version: str = "2018-12-03",
) -> SimRequest:
    """An ACS3-HMAC-SHA256 request, params in the query and an empty body (as the SDK sends)."""
    query = dict(params or {})
    sha = hashlib.sha256(b"").hexdigest()
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": _acs_time(now),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": sha,
    }
    if token is not None:
        headers["x-acs-security-token"] = token
    signed = sorted(headers)
    canonical = canonical_request_v3(method, "/", query.items(), headers, signed, sha)
    signature = signature_v3(secret, canonical)
    headers["Authorization"] = authorization_v3(access_key_id, signed, signature)
    return SimRequest.build(method, "/?" + _query(query), headers)


def aliyun_v1(
    action: str,
    params: Mapping[str, str] | None = None,
    *,
    now: float,
    access_key_id: str = DEMO_ALIYUN_ACCESS_KEY_ID,
    secret: str = DEMO_ALIYUN_ACCESS_KEY_SECRET,
    nonce: str | None = None,
    token: str | None = None,
    method: str = "POST",
) -> SimRequest:
    """An HMAC-SHA1 query-signed (``SignatureVersion=1.0``) request."""
    query = {
        "Action": action,
        "Version": "2018-12-03",
        "Format": "JSON",
        "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "Timestamp": _acs_time(now),
        **(params or {}),
    }
    if token is not None:
        query["SecurityToken"] = token
    query["Signature"] = signature_v1(secret, method, query)
    return SimRequest.build(method, "/?" + _query(query), {"host": "tds.aliyuncs.com"})


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested params as the Tencent SDK does for GET: ``Filters.0.Values.0``."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    out.update(flatten(item, f"{name}.{i}."))
                else:
                    out[f"{name}.{i}"] = str(item)
        else:
            out[name] = str(value)
    return out


def tencent_tc3(
    action: str,
    params: Mapping[str, Any] | None = None,
    *,
    now: float,
    secret_id: str = DEMO_TENCENT_SECRET_ID,
    secret_key: str = DEMO_TENCENT_SECRET_KEY,
    region: str | None = "ap-guangzhou",
    token: str | None = None,
    method: str = "POST",
    host: str = "tcss.tencentcloudapi.com",
    service: str = "tcss",
    body: bytes | None = None,
) -> SimRequest:
    """A TC3-HMAC-SHA256 request: a JSON body for POST, a flattened query for GET."""
    params = params or {}
    if method == "GET":
        content_type, query, payload = (
            "application/x-www-form-urlencoded",
            urlencode(flatten(params)),
            b"",
        )
    else:
        content_type, query = "application/json", ""
        payload = json.dumps(params).encode() if body is None else body
    timestamp = int(now)
    canonical = canonical_request_tc3(method, query, content_type, host, payload)
    signature = signature_tc3(secret_key, timestamp, service, canonical)
    headers = {
        "Host": host,
        "Content-Type": content_type,
        "X-TC-Action": action,
        "X-TC-Version": "2020-11-01",
        "X-TC-Timestamp": str(timestamp),
        "Authorization": authorization_tc3(secret_id, timestamp, service, signature),
    }
    if region is not None:
        headers["X-TC-Region"] = region
    if token is not None:
        headers["X-TC-Token"] = token
    return SimRequest.build(method, "/?" + query if query else "/", headers, payload)
