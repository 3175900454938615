"""Simulator protocol behaviour: pagination, parameters, vendor errors, flow control."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from exporter.simulator import Simulator
from exporter.simulator.core import SimResponse
from exporter.simulator.signed import aliyun_v3, tencent_tc3
from tests.conftest import fixture_json

NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim() -> Simulator:
    return Simulator(clock=lambda: NOW, rate_limit=False)


def sas(sim: Simulator, action: str, params: dict[str, str] | None = None) -> SimResponse:
    return sim.handle("aliyun", aliyun_v3(action, params, now=sim.clock()))


def tc(
    sim: Simulator, action: str, params: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    body = sim.handle("tencent", tencent_tc3(action, params, now=sim.clock(), **kw)).json()
    inner: dict[str, Any] = body["Response"]
    return inner


# -- Sas pagination ---------------------------------------------------------------------------


def test_sas_default_page_size_and_page_info(sim: Simulator) -> None:
    response = sas(sim, "DescribeImageInstances")
    body = response.json()
    assert response.headers["x-acs-request-id"] == body["RequestId"]
    assert body["PageInfo"] == {"CurrentPage": 1, "PageSize": 20, "TotalCount": 24, "Count": 20}
    assert len(body["ImageInstanceList"]) == 20


def test_sas_last_page_is_short_and_beyond_is_empty(sim: Simulator) -> None:
    last = sas(sim, "DescribeImageInstances", {"CurrentPage": "3", "PageSize": "10"}).json()
    assert last["PageInfo"] == {"CurrentPage": 3, "PageSize": 10, "TotalCount": 24, "Count": 4}
    beyond = sas(sim, "DescribeImageInstances", {"CurrentPage": "4", "PageSize": "10"}).json()
    assert beyond["ImageInstanceList"] == [] and beyond["PageInfo"]["TotalCount"] == 24


def test_sas_pages_cover_every_image_once(sim: Simulator) -> None:
    seen = []
    for page in (1, 2, 3):
        body = sas(
            sim, "DescribeImageInstances", {"CurrentPage": str(page), "PageSize": "10"}
        ).json()
        seen += [i["Uuid"] for i in body["ImageInstanceList"]]
    assert len(seen) == len(set(seen)) == 24


@pytest.mark.parametrize("size", ["101", "0", "ten"])
def test_sas_bad_page_size_is_invalid_parameter(sim: Simulator, size: str) -> None:
    response = sas(sim, "DescribeImageInstances", {"PageSize": size})
    assert (response.status, response.json()["Code"]) == (400, "InvalidParameter")


def test_sas_page_size_100_is_allowed(sim: Simulator) -> None:
    assert sas(sim, "DescribeImageInstances", {"PageSize": "100"}).status == 200


def test_sas_instance_fields_have_vendor_types(sim: Simulator) -> None:
    item = sas(sim, "DescribeImageInstances", {"PageSize": "100"}).json()["ImageInstanceList"][-1]
    for name in ("ImageSize", "ImageCreate", "ImageUpdate", "Endpoints", "Uuid", "ScaStatus"):
        assert isinstance(item[name], str), name
    for name in ("VulCount", "HcCount", "AlarmCount", "ScaProgress", "Deployed", "LastScanTime"):
        assert isinstance(item[name], int), name
    assert int(item["ImageSize"]) > 1_000_000  # bytes, not MB


def test_sas_vul_list_is_flat_with_default_page_size_10(sim: Simulator) -> None:
    body = sas(sim, "DescribeImageVulList", {"Type": "cve"}).json()
    assert "PageInfo" not in body
    assert (body["CurrentPage"], body["PageSize"]) == (1, 10)
    assert body["TotalCount"] > 10 and len(body["VulRecords"]) == 10


def test_sas_vul_list_requires_type(sim: Simulator) -> None:
    response = sas(sim, "DescribeImageVulList")
    assert (response.status, response.json()["Code"]) == (400, "MissingParameter")
    assert "Type" in response.json()["Message"]


def test_sas_baseline_requires_image_uuid(sim: Simulator) -> None:
    response = sas(sim, "DescribeImageBaselineCheckResult")
    assert (response.status, response.json()["Code"]) == (400, "MissingParameter")
    assert "ImageUuid" in response.json()["Message"]


def test_sas_baseline_of_unknown_uuid_is_empty(sim: Simulator) -> None:
    body = sas(sim, "DescribeImageBaselineCheckResult", {"ImageUuid": "nope"}).json()
    assert body["BaselineResult"] == [] and body["PageInfo"]["TotalCount"] == 0


def test_sas_malicious_page_size_is_a_string_in_and_int_out(sim: Simulator) -> None:
    body = sas(
        sim, "DescribeAffectedMaliciousFileImages", {"CurrentPage": "1", "PageSize": "5"}
    ).json()
    assert body["PageInfo"]["PageSize"] == 5
    for row in body["AffectedMaliciousFileImagesResponse"]:
        assert row["Level"] in ("serious", "suspicious", "remind")
        assert row["Status"] in (0, 1, 2, 3)


def test_sas_malicious_filters_by_image_uuid(sim: Simulator) -> None:
    rows = sas(
        sim, "DescribeAffectedMaliciousFileImages", {"CurrentPage": "1", "PageSize": "100"}
    ).json()["AffectedMaliciousFileImagesResponse"]
    uuid = rows[0]["ImageUuid"]
    only = sas(
        sim,
        "DescribeAffectedMaliciousFileImages",
        {"CurrentPage": "1", "PageSize": "100", "ImageUuid": uuid},
    ).json()["AffectedMaliciousFileImagesResponse"]
    assert only and {r["ImageUuid"] for r in only} == {uuid}
    assert len(only) == sum(1 for r in rows if r["ImageUuid"] == uuid)


def test_sas_list_image_risk_statistics_is_a_json_string(sim: Simulator) -> None:
    rows = sas(sim, "ListImageRisk").json()["ImageRiskList"]
    assert rows
    for row in rows:
        assert isinstance(row["Statistics"], str)
        assert row["ImageAccessType"] in ("IN_SAS", "NOT_IN_SAS")


def test_sas_criteria_filter(sim: Simulator) -> None:
    criteria = '[{"name":"vulStatus","value":"YES"}]'
    items = sas(sim, "DescribeImageInstances", {"Criteria": criteria, "PageSize": "100"}).json()[
        "ImageInstanceList"
    ]
    assert items and all(i["VulCount"] > 0 for i in items)
    bad = sas(sim, "DescribeImageInstances", {"Criteria": "not json"})
    assert bad.json()["Code"] == "InvalidParameter"


# -- TCSS pagination --------------------------------------------------------------------------


def test_tcss_default_limit_is_10(sim: Simulator) -> None:
    body = tc(sim, "DescribeAssetImageList")
    assert len(body["List"]) == 10 and body["TotalCount"] == 24


def test_tcss_offset_walk_covers_everything(sim: Simulator) -> None:
    ids: list[str] = []
    offset = 0
    while True:
        body = tc(sim, "DescribeAssetImageList", {"Limit": 7, "Offset": offset})
        ids += [i["ImageID"] for i in body["List"]]
        offset += 7
        if offset >= body["TotalCount"]:
            break
    assert len(ids) == len(set(ids)) == 24


def test_tcss_limit_cap(sim: Simulator) -> None:
    assert tc(sim, "DescribeAssetImageList", {"Limit": 100})["TotalCount"] == 24
    body = tc(sim, "DescribeAssetImageList", {"Limit": 101})
    assert body["Error"]["Code"] == "InvalidParameterValue.DataRange"


def test_tcss_limit_must_be_a_number_in_json(sim: Simulator) -> None:
    assert tc(sim, "DescribeAssetImageList", {"Limit": "10"})["Error"]["Code"] == "InvalidParameter"


def test_tcss_filters_post_and_get(sim: Simulator) -> None:
    params = {"Limit": 100, "Filters": [{"Name": "ScanStatus", "Values": ["notScan", "scanErr"]}]}
    post = tc(sim, "DescribeAssetImageList", params)
    get = tc(sim, "DescribeAssetImageList", params, method="GET")
    assert post["List"] == get["List"]
    assert post["TotalCount"] >= 2
    assert {i["ScanStatus"] for i in post["List"]} <= {"notScan", "scanErr"}


def test_tcss_image_id_filter_and_times_in_beijing(sim: Simulator) -> None:
    first = tc(sim, "DescribeAssetImageList", {"Limit": 100})["List"]
    scanned = next(i for i in first if i["ScanStatus"] == "scanned")
    body = tc(
        sim,
        "DescribeAssetImageList",
        {"Filters": [{"Name": "ImageID", "Values": [scanned["ImageID"]]}]},
    )
    assert body["TotalCount"] == 1
    parsed = datetime.datetime.strptime(scanned["ScanTime"], "%Y-%m-%d %H:%M:%S")
    utc = parsed.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=8))).timestamp()
    assert utc <= NOW and NOW - utc < 3 * 3600


def test_tcss_detail_requires_image_id_and_knows_region(sim: Simulator) -> None:
    assert tc(sim, "DescribeAssetImageDetail")["Error"]["Code"] == "MissingParameter"
    assert (
        tc(sim, "DescribeAssetImageDetail", {"ImageID": "sha256:00"})["Error"]["Code"]
        == "ResourceNotFound"
    )
    image_id = tc(sim, "DescribeAssetImageList")["List"][0]["ImageID"]
    other_region = tc(sim, "DescribeAssetImageDetail", {"ImageID": image_id}, region="ap-singapore")
    assert other_region["Error"]["Code"] == "ResourceNotFound"


def test_tcss_detail_has_every_field_of_the_vendor_sample(sim: Simulator) -> None:
    sample = fixture_json("tencent", "DescribeAssetImageDetail")["Response"]
    image_id = tc(sim, "DescribeAssetImageList")["List"][0]["ImageID"]
    detail = tc(sim, "DescribeAssetImageDetail", {"ImageID": image_id})
    assert set(sample) <= set(detail)
    for name, value in sample.items():
        assert type(detail[name]) is type(value), name


@pytest.mark.parametrize(
    "action",
    [
        "DescribeImageInstances",
        "DescribeImageBaselineCheckResult",
        "ListImageRisk",
        "DescribeAffectedMaliciousFileImages",
    ],
)
def test_sas_answers_have_every_field_of_the_vendor_sample(sim: Simulator, action: str) -> None:
    sample = fixture_json("aliyun", action)
    list_field = next(k for k, v in sample.items() if isinstance(v, list))
    instances = sas(sim, "DescribeImageInstances", {"PageSize": "100"}).json()["ImageInstanceList"]
    busiest = "AlarmCount" if action == "DescribeAffectedMaliciousFileImages" else "HcCount"
    uuid = max(instances, key=lambda i: i[busiest])["Uuid"]
    params = {"ImageUuid": uuid, "CurrentPage": "1", "PageSize": "20"}
    body = sas(sim, action, params).json()
    assert set(sample) == set(body)
    assert set(sample["PageInfo"]) == set(body["PageInfo"])
    assert body[list_field]
    ours = body[list_field][0]
    for name, value in sample[list_field][0].items():
        assert name in ours, name
        if name != "Statistics":  # the sample shows an object; the field is documented a string
            assert type(ours[name]) is type(value), name


# -- flow control -----------------------------------------------------------------------------


def test_sas_eleventh_request_in_a_second_is_throttled() -> None:
    clock = Clock()
    sim = Simulator(clock=clock)
    statuses = [sas(sim, "DescribeImageInstances").status for _ in range(11)]
    assert statuses == [200] * 10 + [400]
    throttled = sas(sim, "DescribeImageInstances").json()
    assert throttled["Code"] == "Throttling.User"
    # another action has its own bucket; a second later the bucket has refilled
    assert sas(sim, "ListImageRisk").status == 200
    clock.now += 1.0
    assert [sas(sim, "DescribeImageInstances").status for _ in range(10)] == [200] * 10


def test_sas_sites_have_separate_buckets() -> None:
    sim = Simulator(clock=lambda: NOW)
    china = [sas(sim, "DescribeImageInstances").status for _ in range(10)]
    intl = [
        sas(sim, "DescribeImageInstances", {"RegionId": "ap-southeast-1"}).status for _ in range(10)
    ]
    assert china == intl == [200] * 10
    assert sas(sim, "DescribeImageInstances", {"RegionId": "cn-hangzhou"}).status == 400


def test_sas_site_from_host_without_region_id(sim: Simulator) -> None:
    china = sas(sim, "DescribeImageInstances").json()["ImageInstanceList"]
    request = aliyun_v3("DescribeImageInstances", now=NOW, host="tds.ap-southeast-1.aliyuncs.com")
    intl = sim.handle("aliyun", request).json()["ImageInstanceList"]
    assert {i["Uuid"] for i in china}.isdisjoint(i["Uuid"] for i in intl)
    assert {i["RegionId"] for i in intl} <= {"ap-southeast-1", "eu-central-1", "us-east-1"}


def test_tcss_twenty_first_request_in_a_second_is_limited() -> None:
    clock = Clock()
    sim = Simulator(clock=clock)
    codes = [tc(sim, "DescribeAssetImageList").get("Error", {}).get("Code") for _ in range(21)]
    assert codes == [None] * 20 + ["RequestLimitExceeded"]
    clock.now += 0.5  # half a second refills ten requests
    codes = [tc(sim, "DescribeAssetImageList").get("Error", {}).get("Code") for _ in range(11)]
    assert codes == [None] * 10 + ["RequestLimitExceeded"]
