"""Simulated instance metadata: Alibaba ECS (IMDSv2 token, RAM role) and Tencent CVM (CAM role).

Paths under ``/latest/`` of the simulator's listeners:

- ECS: ``PUT /latest/api/token`` with ``X-aliyun-ecs-metadata-token-ttl-seconds`` (1-21600)
  answers a token; ``GET /latest/meta-data/ram/security-credentials/`` the role name and
  ``.../<role>`` the credentials document, with ``X-aliyun-ecs-metadata-token`` (required when
  ``IdentityStore.imdsv1_disabled``; a wrong or expired token is 401).
- CVM: ``GET /latest/meta-data/cam/security-credentials/`` and ``.../<role>``.

Every credentials document is a fresh temporary key valid ``instance_duration`` seconds (the
real services hand out the same key for a while and rotate it before expiry).
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING
from urllib.parse import unquote

from exporter.credentials.base import iso8601
from exporter.simulator.core import SimRequest, SimResponse
from exporter.simulator.identity import Cloud

if TYPE_CHECKING:
    from exporter.simulator.core import Simulator

_ECS_ROLE_PATH = "/latest/meta-data/ram/security-credentials/"
_CVM_ROLE_PATH = "/latest/meta-data/cam/security-credentials/"
_TOKENS_LOCK = threading.Lock()


def _text(status: int, text: str) -> SimResponse:
    return SimResponse(status, {"Content-Type": "text/plain"}, text.encode())


def _json(payload: object) -> SimResponse:
    body = json.dumps(payload).encode()
    return SimResponse(200, {"Content-Type": "text/plain"}, body)  # as the services send it


def _ecs(sim: Simulator, request: SimRequest) -> SimResponse:
    now = sim.clock()
    tokens = sim.metadata_tokens
    if request.method == "PUT" and request.path == "/latest/api/token":
        raw = request.header("X-aliyun-ecs-metadata-token-ttl-seconds") or ""
        if not raw.isdigit() or not 1 <= int(raw) <= 21600:
            return _text(400, "invalid ttl")
        token = hashlib.sha256(f"imds/{now}/{len(tokens)}".encode()).hexdigest()
        with _TOKENS_LOCK:
            if len(tokens) >= 1000:  # bounded: expired tokens are forgotten
                for stale in [t for t, until in tokens.items() if until <= now]:
                    del tokens[stale]
            tokens[token] = now + int(raw)
        return _text(200, token)
    if request.method != "GET" or not request.path.startswith(_ECS_ROLE_PATH):
        return _text(404, "not found")
    presented = request.header("X-aliyun-ecs-metadata-token")
    if presented is not None:
        if tokens.get(presented, 0.0) <= now:
            return _text(401, "invalid or expired metadata token")
    elif sim.identity.imdsv1_disabled:
        return _text(401, "metadata token required")
    return _role_document(sim, "aliyun", request.path[len(_ECS_ROLE_PATH) :])


def _role_document(sim: Simulator, cloud: Cloud, rest: str) -> SimResponse:
    role = sim.identity.instance_role
    if role is None:
        return _text(404, "not found")
    if not rest:
        return _text(200, role)
    if unquote(rest) != role:
        return _text(404, "not found")
    issued = sim.identity.issue(cloud, role, sim.identity.instance_duration)
    now = sim.clock()
    if cloud == "aliyun":
        return _json(
            {
                "AccessKeyId": issued.key_id,
                "AccessKeySecret": issued.secret,
                "Expiration": iso8601(issued.expiration),
                "SecurityToken": issued.token,
                "LastUpdated": iso8601(now),
                "Code": "Success",
            }
        )
    return _json(
        {
            "TmpSecretId": issued.key_id,
            "TmpSecretKey": issued.secret,
            "ExpiredTime": int(issued.expiration),
            "Expiration": iso8601(issued.expiration),
            "Token": issued.token,
            "Code": "Success",
        }
    )


def serve_metadata(sim: Simulator, cloud: Cloud, request: SimRequest) -> SimResponse:
    """Answer one instance-metadata request to ``cloud``'s listener."""
    sim.count(cloud, "metadata")
    if any(f.kind == "server_error" for f in sim.faults.draw(cloud, "metadata")):
        return _text(500, "internal error")
    if cloud == "aliyun":
        return _ecs(sim, request)
    if request.method != "GET" or not request.path.startswith(_CVM_ROLE_PATH):
        return _text(404, "not found")
    return _role_document(sim, "tencent", request.path[len(_CVM_ROLE_PATH) :])
