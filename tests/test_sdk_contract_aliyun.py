"""Contract: the official Alibaba Cloud Sas SDK calls the simulator over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_sas20181203 import models as sas_models  # type: ignore[import-untyped]
from alibabacloud_sas20181203.client import Client  # type: ignore[import-untyped]
from alibabacloud_tea_openapi import exceptions as tea_exceptions  # type: ignore[import-untyped]
from alibabacloud_tea_openapi import models as open_api_models

from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    Fault,
    Simulator,
    SimulatorServer,
)
from tests.conftest import fleet_now


@pytest.fixture
def sim() -> Simulator:
    # The SDK signs with the real time, so signatures are verified on the real clock; the
    # fleet's scan state is pinned so what the tests see does not depend on the wall clock.
    # At FLEET_NOW some image has more than one page of 100 vulnerability records.
    return Simulator(images_per_region=24, fleet_clock=fleet_now)


@pytest.fixture
def endpoint(sim: Simulator) -> Iterator[str]:
    with SimulatorServer(sim, "aliyun") as server:
        yield server.address


def make_client(endpoint: str, **overrides: Any) -> Client:
    settings: dict[str, Any] = {
        "access_key_id": DEMO_ALIYUN_ACCESS_KEY_ID,
        "access_key_secret": DEMO_ALIYUN_ACCESS_KEY_SECRET,
        "endpoint": endpoint,
        "protocol": "http",
        "region_id": "cn-shanghai",
        **overrides,
    }
    return Client(open_api_models.Config(**settings))


def _walk_vuls(client: Client, uuid: str, page_size: int) -> tuple[list[Any], int]:
    records: list[Any] = []
    page = 1
    while True:
        request = sas_models.DescribeImageVulListRequest(
            type="cve", uuids=uuid, current_page=page, page_size=page_size
        )
        body = client.describe_image_vul_list(request).body
        assert body.current_page == page and body.page_size == page_size
        records += body.vul_records
        if not body.vul_records or page * page_size >= body.total_count:
            return records, body.total_count
        page += 1


def _walk_instances(client: Client) -> tuple[list[Any], int]:
    items: list[Any] = []
    page = 1
    while True:
        request = sas_models.DescribeImageInstancesRequest(current_page=page, page_size=10)
        body = client.describe_image_instances(request).body
        assert body.page_info.page_size == 10 and body.page_info.current_page == page
        items += body.image_instance_list
        if page * 10 >= body.page_info.total_count:
            return items, body.page_info.total_count
        page += 1


@pytest.mark.parametrize("signature_algorithm", [None, "v2"])
def test_sdk_walks_every_action(endpoint: str, signature_algorithm: str | None) -> None:
    overrides = {"signature_algorithm": signature_algorithm} if signature_algorithm else {}
    client = make_client(endpoint, **overrides)

    items, total = _walk_instances(client)
    assert total == 24 and len(items) == total
    assert len({i.uuid for i in items}) == total
    scanned = [i for i in items if i.sca_status == "SUCCESS"]
    image = max(scanned, key=lambda i: i.hc_count)
    assert isinstance(image.image_size, str) and isinstance(image.vul_count, int)

    baseline = client.describe_image_baseline_check_result(
        sas_models.DescribeImageBaselineCheckResultRequest(image_uuid=image.uuid, page_size=100)
    ).body
    assert (
        sum(
            r.high_risk_item_count + r.middle_risk_item_count + r.low_risk_item_count
            for r in baseline.baseline_result
        )
        == image.hc_count
    )

    risks = client.list_image_risk(sas_models.ListImageRiskRequest(page_size=100)).body
    assert risks.image_risk_list and {r.uuid for r in risks.image_risk_list} <= {
        i.uuid for i in items
    }

    malware = client.describe_affected_malicious_file_images(
        sas_models.DescribeAffectedMaliciousFileImagesRequest(current_page=1, page_size="100")
    ).body
    assert malware.page_info.page_size == 100
    assert len(malware.affected_malicious_file_images_response) == sum(i.alarm_count for i in items)

    # Every record, page by page, of the image with the most: more than one page of 100.
    busiest = max(scanned, key=lambda i: i.vul_count)
    assert busiest.vul_count > 100
    records, total = _walk_vuls(client, busiest.uuid, page_size=100)
    assert total == busiest.vul_count == len(records)
    assert len({r.primary_id for r in records}) == len(records)
    assert {r.uuid for r in records} == {busiest.uuid}
    assert {r.necessity for r in records} <= {"asap", "later", "nntf"}
    # Other page sizes return the same records in the same order.
    other, other_total = _walk_vuls(client, busiest.uuid, page_size=40)
    assert other_total == total
    assert [r.primary_id for r in other] == [r.primary_id for r in records]


def test_sdk_with_security_token(endpoint: str) -> None:
    client = make_client(endpoint, security_token="sts-demo-token")
    body = client.describe_image_instances(sas_models.DescribeImageInstancesRequest()).body
    assert body.page_info.total_count == 24


def test_sdk_international_site_by_region_id(endpoint: str) -> None:
    # tea-openapi sends no RegionId on V3 RPC calls; V1 with RegionId in the request does.
    client = make_client(endpoint, signature_algorithm="v2")
    china = client.describe_image_vul_list(sas_models.DescribeImageVulListRequest(type="cve")).body
    intl = client.describe_image_vul_list(
        sas_models.DescribeImageVulListRequest(type="cve", region_id="ap-southeast-1")
    ).body
    assert china.vul_records and intl.vul_records  # an empty answer must not pass
    assert china.total_count > 0 and intl.total_count > 0
    assert {r.uuid for r in china.vul_records}.isdisjoint(r.uuid for r in intl.vul_records)
    # Each site serves the images of its own registries (registry.<region>.aliyuncs.com/...).
    china_hosts = {r.image.split("/")[0] for r in china.vul_records}
    intl_hosts = {r.image.split("/")[0] for r in intl.vul_records}
    assert china_hosts <= {
        f"registry.{r}.aliyuncs.com"
        for r in ("cn-hangzhou", "cn-shanghai", "cn-beijing", "cn-shenzhen")
    }
    assert intl_hosts <= {
        f"registry.{r}.aliyuncs.com" for r in ("ap-southeast-1", "eu-central-1", "us-east-1")
    }


@pytest.mark.parametrize("signature_algorithm", [None, "v2"])
def test_sdk_wrong_secret_is_signature_does_not_match(
    endpoint: str, signature_algorithm: str | None
) -> None:
    overrides = {"signature_algorithm": signature_algorithm} if signature_algorithm else {}
    client = make_client(endpoint, access_key_secret="wrong-secret", **overrides)
    with pytest.raises(tea_exceptions.ClientException) as caught:
        client.describe_image_instances(sas_models.DescribeImageInstancesRequest())
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status_code == 400
    assert caught.value.request_id


def test_sdk_unknown_key(endpoint: str) -> None:
    client = make_client(endpoint, access_key_id="LTAI5tNobody")
    with pytest.raises(tea_exceptions.ClientException) as caught:
        client.list_image_risk(sas_models.ListImageRiskRequest())
    assert caught.value.code == "InvalidAccessKeyId.NotFound"


def test_sdk_throttling_with_retry_after(sim: Simulator, endpoint: str) -> None:
    sim.faults.add(Fault(kind="throttle", cloud="aliyun", retry_after_ms=1500))
    client = make_client(endpoint)
    with pytest.raises(tea_exceptions.ThrottlingException) as caught:
        client.describe_image_instances(sas_models.DescribeImageInstancesRequest())
    assert caught.value.code == "Throttling.User"
    assert caught.value.retry_after == 1500


def test_sdk_throttling_without_retry_after_is_client_exception(
    sim: Simulator, endpoint: str
) -> None:
    sim.faults.add(Fault(kind="throttle", cloud="aliyun"))
    with pytest.raises(tea_exceptions.ClientException) as caught:
        make_client(endpoint).describe_image_instances(sas_models.DescribeImageInstancesRequest())
    assert caught.value.code == "Throttling.User"
    assert not isinstance(caught.value, tea_exceptions.ThrottlingException)


def test_sdk_server_error(sim: Simulator, endpoint: str) -> None:
    sim.faults.add(Fault(kind="server_error", cloud="aliyun", status=503))
    with pytest.raises(tea_exceptions.ServerException) as caught:
        make_client(endpoint).describe_image_instances(sas_models.DescribeImageInstancesRequest())
    assert caught.value.code == "ServiceUnavailable"
