"""Simulator signature verification: Sas V3 and V1, TCSS TC3, with vendor error codes."""

from __future__ import annotations

import dataclasses

import pytest

from exporter.simulator import DEMO_ALIYUN_ACCESS_KEY_ID, DEMO_TENCENT_SECRET_ID, Simulator
from exporter.simulator.core import NonceCache, SimRequest
from exporter.simulator.signed import aliyun_v1, aliyun_v3, tencent_tc3

NOW = 1_700_000_000.0
ACTION = "DescribeImageInstances"


@pytest.fixture
def sim() -> Simulator:
    return Simulator(clock=lambda: NOW)


def _sas_error(sim: Simulator, request: SimRequest) -> tuple[int, str]:
    response = sim.handle("aliyun", request)
    assert response.headers["Content-Type"] == "application/json;charset=utf-8"
    body = response.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    return response.status, body["Code"]


def _tc_error(sim: Simulator, request: SimRequest) -> str:
    response = sim.handle("tencent", request)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()["Response"]
    assert set(body) == {"Error", "RequestId"}
    return str(body["Error"]["Code"])


def _with_query(request: SimRequest, query: str) -> SimRequest:
    return dataclasses.replace(request, query=query)


# -- Sas V3 ------------------------------------------------------------------------------------


def test_v3_signed_request_is_accepted(sim: Simulator) -> None:
    response = sim.handle("aliyun", aliyun_v3(ACTION, {"PageSize": "5"}, now=NOW))
    assert response.status == 200
    assert response.json()["PageInfo"]["PageSize"] == 5


def test_v3_security_token_is_accepted(sim: Simulator) -> None:
    response = sim.handle("aliyun", aliyun_v3(ACTION, now=NOW, token="sts-token"))
    assert response.status == 200


def test_v3_tampered_query_is_rejected(sim: Simulator) -> None:
    request = aliyun_v3(ACTION, {"PageSize": "5"}, now=NOW)
    tampered = _with_query(request, request.query.replace("PageSize=5", "PageSize=6"))
    assert _sas_error(sim, tampered) == (400, "SignatureDoesNotMatch")


def test_v3_tampered_signed_header_is_rejected(sim: Simulator) -> None:
    request = aliyun_v3(ACTION, now=NOW)
    headers = tuple((k, "other.host" if k == "host" else v) for k, v in request.headers)
    assert _sas_error(sim, dataclasses.replace(request, headers=headers)) == (
        400,
        "SignatureDoesNotMatch",
    )


def test_v3_body_not_matching_content_sha256_is_rejected(sim: Simulator) -> None:
    request = dataclasses.replace(aliyun_v3(ACTION, now=NOW), body=b"PageSize=1")
    assert _sas_error(sim, request) == (400, "SignatureDoesNotMatch")


def test_v3_wrong_secret_is_rejected(sim: Simulator) -> None:
    request = aliyun_v3(ACTION, now=NOW, secret="not-the-secret")
    assert _sas_error(sim, request) == (400, "SignatureDoesNotMatch")


def test_v3_unknown_key_is_rejected(sim: Simulator) -> None:
    request = aliyun_v3(ACTION, now=NOW, access_key_id="LTAI5tUnknownKey")
    assert _sas_error(sim, request) == (404, "InvalidAccessKeyId.NotFound")


@pytest.mark.parametrize("skew", [-16 * 60, 16 * 60])
def test_v3_stale_or_future_date_is_rejected(sim: Simulator, skew: int) -> None:
    request = aliyun_v3(ACTION, now=NOW + skew)
    assert _sas_error(sim, request) == (400, "InvalidTimeStamp.Expired")


def test_v3_date_within_fifteen_minutes_is_accepted(sim: Simulator) -> None:
    assert sim.handle("aliyun", aliyun_v3(ACTION, now=NOW - 14 * 60)).status == 200


def test_v3_replayed_nonce_is_rejected(sim: Simulator) -> None:
    request = aliyun_v3(ACTION, now=NOW, nonce="once")
    assert sim.handle("aliyun", request).status == 200
    assert _sas_error(sim, request) == (400, "SignatureNonceUsed")


def test_v3_malformed_authorization_is_incomplete(sim: Simulator) -> None:
    request = aliyun_v3(ACTION, now=NOW)
    headers = tuple(
        (k, "ACS3-HMAC-SHA256 garbage" if k == "Authorization" else v) for k, v in request.headers
    )
    assert _sas_error(sim, dataclasses.replace(request, headers=headers)) == (
        400,
        "IncompleteSignature",
    )


def test_missing_signature_is_missing_parameter(sim: Simulator) -> None:
    request = SimRequest.build("POST", "/", {"x-acs-action": ACTION})
    assert _sas_error(sim, request) == (400, "MissingParameter")


def test_unknown_action_is_not_found(sim: Simulator) -> None:
    assert _sas_error(sim, aliyun_v3("DescribeNothing", now=NOW)) == (
        404,
        "InvalidAction.NotFound",
    )


def test_rejected_requests_are_counted(sim: Simulator) -> None:
    sim.handle("aliyun", aliyun_v3(ACTION, now=NOW, secret="bad"))
    assert sim.request_counts[("aliyun", ACTION)] == 1


# -- Sas V1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v1_signed_request_is_accepted(sim: Simulator, method: str) -> None:
    request = aliyun_v1(ACTION, {"PageSize": "3"}, now=NOW, method=method)
    response = sim.handle("aliyun", request)
    assert response.status == 200
    assert len(response.json()["ImageInstanceList"]) == 3


def test_v1_signs_empty_params_and_tokens(sim: Simulator) -> None:
    # aliyunsdkcore sends and signs "SignatureType=" (empty): it must count.
    request = aliyun_v1(ACTION, {"SignatureType": ""}, now=NOW, token="sts")
    assert sim.handle("aliyun", request).status == 200
    dropped = _with_query(request, request.query.replace("SignatureType=&", ""))
    assert _sas_error(sim, dropped) == (400, "SignatureDoesNotMatch")


def test_v1_form_body_params_are_signed(sim: Simulator) -> None:
    request = aliyun_v1(ACTION, {"PageSize": "2"}, now=NOW)
    # Move PageSize from the query to a form body: the signature still covers it.
    query = "&".join(p for p in request.query.split("&") if not p.startswith("PageSize="))
    moved = dataclasses.replace(
        request,
        query=query,
        body=b"PageSize=2",
        headers=(*request.headers, ("Content-Type", "application/x-www-form-urlencoded")),
    )
    response = sim.handle("aliyun", moved)
    assert response.status == 200
    assert response.json()["PageInfo"]["PageSize"] == 2


def test_v1_tampered_query_is_rejected(sim: Simulator) -> None:
    request = aliyun_v1(ACTION, {"PageSize": "3"}, now=NOW)
    tampered = _with_query(request, request.query.replace("PageSize=3", "PageSize=4"))
    assert _sas_error(sim, tampered) == (400, "SignatureDoesNotMatch")


def test_v1_wrong_secret_stale_replay_unknown_key(sim: Simulator) -> None:
    assert _sas_error(sim, aliyun_v1(ACTION, now=NOW, secret="bad")) == (
        400,
        "SignatureDoesNotMatch",
    )
    assert _sas_error(sim, aliyun_v1(ACTION, now=NOW - 3600)) == (400, "InvalidTimeStamp.Expired")
    assert _sas_error(sim, aliyun_v1(ACTION, now=NOW, access_key_id="nobody")) == (
        404,
        "InvalidAccessKeyId.NotFound",
    )
    request = aliyun_v1(ACTION, now=NOW, nonce="n-1")
    assert sim.handle("aliyun", request).status == 200
    assert _sas_error(sim, request) == (400, "SignatureNonceUsed")


def test_v1_missing_timestamp_is_missing_parameter(sim: Simulator) -> None:
    request = aliyun_v1(ACTION, now=NOW)
    query = "&".join(p for p in request.query.split("&") if not p.startswith("Timestamp="))
    assert _sas_error(sim, _with_query(request, query)) == (400, "MissingParameter")


def test_demo_key_ids_are_the_documented_ones() -> None:
    assert DEMO_ALIYUN_ACCESS_KEY_ID.startswith("LTAI")
    assert DEMO_TENCENT_SECRET_ID.startswith("AKID")


# -- TCSS TC3 ----------------------------------------------------------------------------------

TC_ACTION = "DescribeAssetImageList"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_tc3_signed_request_is_accepted(sim: Simulator, method: str) -> None:
    request = tencent_tc3(TC_ACTION, {"Limit": 2}, now=NOW, method=method)
    response = sim.handle("tencent", request)
    assert response.headers["Content-Type"] == "application/json"
    assert len(response.json()["Response"]["List"]) == 2


def test_tc3_token_is_accepted(sim: Simulator) -> None:
    response = sim.handle("tencent", tencent_tc3(TC_ACTION, now=NOW, token="session"))
    assert "Error" not in response.json()["Response"]


def test_tc3_tampered_body_is_rejected(sim: Simulator) -> None:
    request = tencent_tc3(TC_ACTION, {"Limit": 2}, now=NOW)
    tampered = dataclasses.replace(request, body=request.body.replace(b"2", b"3"))
    assert _tc_error(sim, tampered) == "AuthFailure.SignatureFailure"


def test_tc3_tampered_get_query_is_rejected(sim: Simulator) -> None:
    request = tencent_tc3(TC_ACTION, {"Limit": 2}, now=NOW, method="GET")
    assert _tc_error(sim, _with_query(request, "Limit=3")) == "AuthFailure.SignatureFailure"


def test_tc3_content_type_is_signed_exactly(sim: Simulator) -> None:
    request = tencent_tc3(TC_ACTION, now=NOW)
    headers = tuple(
        (k, "application/json; charset=utf-8" if k == "Content-Type" else v)
        for k, v in request.headers
    )
    assert (
        _tc_error(sim, dataclasses.replace(request, headers=headers))
        == "AuthFailure.SignatureFailure"
    )


def test_tc3_wrong_key_unknown_id_stale_timestamp(sim: Simulator) -> None:
    assert _tc_error(sim, tencent_tc3(TC_ACTION, now=NOW, secret_key="bad")) == (
        "AuthFailure.SignatureFailure"
    )
    assert _tc_error(sim, tencent_tc3(TC_ACTION, now=NOW, secret_id="AKIDnobody")) == (
        "AuthFailure.SecretIdNotFound"
    )
    assert _tc_error(sim, tencent_tc3(TC_ACTION, now=NOW - 301)) == "AuthFailure.SignatureExpire"
    assert (
        "Error"
        not in sim.handle("tencent", tencent_tc3(TC_ACTION, now=NOW - 299)).json()["Response"]
    )


def test_tc3_wrong_service_in_scope_is_rejected(sim: Simulator) -> None:
    request = tencent_tc3(TC_ACTION, now=NOW, service="cvm")
    assert _tc_error(sim, request) == "AuthFailure.InvalidAuthorization"


def test_tc3_missing_authorization(sim: Simulator) -> None:
    request = SimRequest.build(
        "POST",
        "/",
        {
            "X-TC-Action": TC_ACTION,
            "X-TC-Version": "2020-11-01",
            "Content-Type": "application/json",
        },
        b"{}",
    )
    assert _tc_error(sim, request) == "AuthFailure.InvalidAuthorization"


def test_tc3_unknown_action_and_region(sim: Simulator) -> None:
    assert _tc_error(sim, tencent_tc3("DescribeNothing", now=NOW)) == "InvalidAction"
    assert _tc_error(sim, tencent_tc3(TC_ACTION, now=NOW, region="xx-nowhere")) == (
        "UnsupportedRegion"
    )


def test_the_nonce_cache_rejects_replays_within_its_ttl_and_forgets_expired_nonces() -> None:
    nonces = NonceCache(ttl=900)
    assert nonces.use(("ak", "n0"), 0.0)
    assert not nonces.use(("ak", "n0"), 899.0)  # a replay within the TTL
    for i in range(1, 200):
        assert nonces.use(("ak", f"n{i}"), 100.0 + i)
    assert len(nonces) == 200
    # Past the first TTLs: the expired nonces are forgotten oldest first, one use at a time,
    # not by rebuilding the table once it is big.
    assert nonces.use(("ak", "late"), 1050.0)
    assert len(nonces) == 1 + sum(1 for i in range(1, 200) if 1050.0 - (100.0 + i) < 900)
    assert nonces.use(("ak", "n0"), 1050.0)  # expired: usable again
    assert not nonces.use(("ak", "n150"), 1050.0)  # used at 250: still within the TTL
    assert nonces.use(("ak", "other"), 5000.0) and len(nonces) == 1
