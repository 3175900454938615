"""Fault injection: every fault kind produces the documented vendor-shaped misbehaviour."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.simulator import Fault, FaultPlan, Simulator
from exporter.simulator.core import SimResponse
from exporter.simulator.signed import aliyun_v3, tencent_tc3

NOW = 1_700_000_000.0
SAS = "DescribeImageInstances"
TC = "DescribeAssetImageList"


def make(*faults: Fault) -> Simulator:
    return Simulator(clock=lambda: NOW, faults=FaultPlan(faults), rate_limit=False)


def sas(sim: Simulator, action: str = SAS, params: dict[str, str] | None = None) -> SimResponse:
    return sim.handle("aliyun", aliyun_v3(action, params, now=NOW))


def tc(sim: Simulator, action: str = TC, params: dict[str, Any] | None = None) -> SimResponse:
    return sim.handle("tencent", tencent_tc3(action, params, now=NOW))


def test_sas_throttle_with_retry_after_for_n_requests() -> None:
    sim = make(Fault(kind="throttle", cloud="aliyun", action=SAS, times=2, retry_after_ms=200))
    first, second, third = sas(sim), sas(sim), sas(sim)
    for response in (first, second):
        assert response.status == 400
        assert response.json()["Code"] == "Throttling.User"
        assert response.headers["x-acs-retry-after"] == "200"
    assert third.status == 200
    assert sim.request_counts[("aliyun", SAS)] == 3


def test_fault_scoped_to_action_leaves_others_alone() -> None:
    sim = make(Fault(kind="throttle", cloud="aliyun", action="ListImageRisk"))
    assert sas(sim).status == 200
    assert sas(sim, "ListImageRisk").status == 400


def test_tcss_throttle_is_in_the_200_envelope() -> None:
    sim = make(Fault(kind="throttle", cloud="tencent"))
    response = tc(sim)
    assert response.status == 200 and response.headers["Content-Type"] == "application/json"
    assert response.json()["Response"]["Error"]["Code"] == "RequestLimitExceeded"
    assert "Error" not in tc(sim).json()["Response"]


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "ServiceUnavailable")])
def test_sas_server_errors(status: int, code: str) -> None:
    response = sas(make(Fault(kind="server_error", cloud="aliyun", status=status)))
    assert response.status == status
    assert response.json()["Code"] == code
    assert set(response.json()) == {"RequestId", "HostId", "Code", "Message", "Recommend"}


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "InternalError"), (503, "ServiceUnavailable"), (200, "InternalError")],
)
def test_tcss_server_errors(status: int, code: str) -> None:
    response = tc(make(Fault(kind="server_error", cloud="tencent", status=status)))
    assert response.status == status
    assert response.json()["Response"]["Error"]["Code"] == code


@pytest.mark.parametrize("cloud", ["aliyun", "tencent"])
def test_html_error_page(cloud: str) -> None:
    sim = make(Fault(kind="html_error"))
    response = sas(sim) if cloud == "aliyun" else tc(sim)
    assert response.status == 502
    assert response.headers["Content-Type"] == "text/html"
    assert response.body.startswith(b"<html>")


@pytest.mark.parametrize("cloud", ["aliyun", "tencent"])
def test_malformed_json(cloud: str) -> None:
    sim = make(Fault(kind="malformed_json", cloud=cloud))  # type: ignore[arg-type]
    response = sas(sim) if cloud == "aliyun" else tc(sim)
    assert response.status == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_missing_list_field() -> None:
    sim = make(Fault(kind="missing_list", times=2))
    assert "ImageInstanceList" not in sas(sim).json()
    body = tc(sim).json()["Response"]
    assert "List" not in body and body["TotalCount"] == 24
    assert "List" in tc(sim).json()["Response"]  # used up


def test_wrong_type_total_count() -> None:
    sim = make(Fault(kind="wrong_type", times=3))
    assert sas(sim).json()["PageInfo"]["TotalCount"] == "many"
    assert tc(sim).json()["Response"]["TotalCount"] == "many"
    body = sas(sim, "DescribeImageVulList", {"Type": "cve"}).json()
    assert body["TotalCount"] == "many"  # top-level for this action


def test_wrong_type_any_field() -> None:
    sim = make(Fault(kind="wrong_type", cloud="tencent", field="List", value={"not": "a list"}))
    assert tc(sim).json()["Response"]["List"] == {"not": "a list"}


def test_total_count_changes_mid_walk() -> None:
    sim = make(Fault(kind="total_count_drift", cloud="aliyun", after=1, delta=3))
    pages = [sas(sim, params={"CurrentPage": str(p), "PageSize": "10"}).json() for p in (1, 2, 3)]
    assert [p["PageInfo"]["TotalCount"] for p in pages] == [24, 27, 24]


def test_short_page() -> None:
    sim = make(
        Fault(kind="short_page", cloud="aliyun", keep=3), Fault(kind="short_page", cloud="tencent")
    )
    body = sas(sim, params={"PageSize": "10"}).json()
    assert len(body["ImageInstanceList"]) == 3
    assert body["PageInfo"]["Count"] == 3 and body["PageInfo"]["TotalCount"] == 24
    assert len(tc(sim, params={"Limit": 10}).json()["Response"]["List"]) == 5


def test_auth_failure() -> None:
    sim = make(Fault(kind="auth_failure", times=2))
    response = sas(sim)
    assert (response.status, response.json()["Code"]) == (400, "SignatureDoesNotMatch")
    assert tc(sim).json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


def test_auth_failure_with_code() -> None:
    sim = make(Fault(kind="auth_failure", cloud="tencent", code="AuthFailure.SecretIdNotFound"))
    assert tc(sim).json()["Response"]["Error"]["Code"] == "AuthFailure.SecretIdNotFound"


def test_latency_is_reported_not_slept() -> None:
    sim = make(Fault(kind="latency", delay_seconds=2.5, times=None))
    response = sas(sim)
    assert response.status == 200 and response.delay == 2.5
    assert tc(sim).delay == 2.5


def test_latency_combines_with_other_faults() -> None:
    sim = make(Fault(kind="latency", delay_seconds=1.0), Fault(kind="server_error", status=503))
    response = sas(sim)
    assert (response.status, response.delay) == (503, 1.0)


def test_probability_uses_a_seeded_rng() -> None:
    def outcomes() -> list[int]:
        sim = Simulator(
            clock=lambda: NOW,
            rate_limit=False,
            faults=FaultPlan([Fault(kind="server_error", times=None, probability=0.5)], seed=42),
        )
        return [sas(sim).status for _ in range(20)]

    first = outcomes()
    assert first == outcomes()
    assert 200 in first and 500 in first


def test_fault_from_dict_rejects_unknown_fields_and_kinds() -> None:
    assert Fault.from_dict({"kind": "throttle", "times": 2}).times == 2
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "throttle", "bogus": 1})
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "meteor"})
