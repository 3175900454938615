"""Contract: the official Tencent Cloud TCSS SDK calls the simulator over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tencentcloud.common import credential  # type: ignore[import-untyped]
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException  # type: ignore[import-untyped]
from tencentcloud.common.profile.client_profile import ClientProfile  # type: ignore[import-untyped]
from tencentcloud.common.profile.http_profile import HttpProfile  # type: ignore[import-untyped]
from tencentcloud.tcss.v20201101 import models, tcss_client  # type: ignore[import-untyped]

from exporter.simulator import (
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Fault,
    Simulator,
    SimulatorServer,
)
from tests.conftest import fleet_now


@pytest.fixture
def sim() -> Simulator:
    # The SDK signs with the real time, so signatures are verified on the real clock; the
    # fleet's scan state is pinned so what the tests see does not depend on the wall clock.
    return Simulator(fleet_clock=fleet_now)


@pytest.fixture
def endpoint(sim: Simulator) -> Iterator[str]:
    with SimulatorServer(sim, "tencent") as server:
        yield server.address


def make_client(
    endpoint: str,
    *,
    secret_key: str = DEMO_TENCENT_SECRET_KEY,
    token: str | None = None,
    method: str = "POST",
    region: str = "ap-guangzhou",
) -> tcss_client.TcssClient:
    cred = credential.Credential(DEMO_TENCENT_SECRET_ID, secret_key, token)
    http = HttpProfile(endpoint=endpoint, protocol="http", reqMethod=method)
    return tcss_client.TcssClient(cred, region, ClientProfile(httpProfile=http, language="en-US"))


def _list(
    client: tcss_client.TcssClient, limit: int, offset: int, status: str | None = None
) -> models.DescribeAssetImageListResponse:
    request = models.DescribeAssetImageListRequest()
    request.Limit, request.Offset = limit, offset
    if status is not None:
        flt = models.AssetFilters()
        flt.Name, flt.Values = "ScanStatus", [status]
        request.Filters = [flt]
    return client.DescribeAssetImageList(request)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_sdk_pages_the_image_list(endpoint: str, method: str) -> None:
    client = make_client(endpoint, method=method)
    ids: list[str] = []
    offset, total = 0, None
    while total is None or offset < total:
        response = _list(client, 10, offset)
        total = response.TotalCount
        ids += [image.ImageID for image in response.List]
        offset += 10
    assert total == 24 and len(set(ids)) == 24
    scanned = _list(client, 100, 0, "scanned")
    assert scanned.TotalCount == len(scanned.List) > 0
    assert {i.ScanStatus for i in scanned.List} == {"scanned"}


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_sdk_reads_image_detail(endpoint: str, method: str) -> None:
    client = make_client(endpoint, method=method)
    listed = next(i for i in _list(client, 100, 0).List if i.ScanStatus == "scanned")
    request = models.DescribeAssetImageDetailRequest()
    request.ImageID = listed.ImageID
    detail = client.DescribeAssetImageDetail(request)
    assert detail.ImageID == listed.ImageID and detail.ImageName == listed.ImageName
    assert detail.VulCnt == listed.VulCnt
    assert detail.ScanStatus == "SCANNED"
    assert detail.ScanVulProgress == 100
    assert detail.RequestId


def test_sdk_token_is_accepted(endpoint: str) -> None:
    response = _list(make_client(endpoint, token="session-token"), 5, 0)
    assert response.TotalCount == 24


def test_sdk_regions_hold_different_images(endpoint: str) -> None:
    gz = {i.ImageID for i in _list(make_client(endpoint), 100, 0).List}
    sg = {i.ImageID for i in _list(make_client(endpoint, region="ap-singapore"), 100, 0).List}
    assert gz and sg and gz.isdisjoint(sg)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_sdk_wrong_key_is_signature_failure(endpoint: str, method: str) -> None:
    client = make_client(endpoint, secret_key="wrong", method=method)
    with pytest.raises(TencentCloudSDKException) as caught:
        _list(client, 10, 0)
    assert caught.value.get_code() == "AuthFailure.SignatureFailure"
    assert caught.value.get_request_id()


def test_sdk_unknown_image_is_resource_not_found(endpoint: str) -> None:
    request = models.DescribeAssetImageDetailRequest()
    request.ImageID = "sha256:" + "0" * 64
    with pytest.raises(TencentCloudSDKException) as caught:
        make_client(endpoint).DescribeAssetImageDetail(request)
    assert caught.value.get_code() == "ResourceNotFound"


def test_sdk_limit_over_100(endpoint: str) -> None:
    with pytest.raises(TencentCloudSDKException) as caught:
        _list(make_client(endpoint), 101, 0)
    assert caught.value.get_code() == "InvalidParameterValue.DataRange"


def test_sdk_throttled(sim: Simulator, endpoint: str) -> None:
    sim.faults.add(Fault(kind="throttle", cloud="tencent"))
    with pytest.raises(TencentCloudSDKException) as caught:
        _list(make_client(endpoint), 10, 0)
    assert caught.value.get_code() == "RequestLimitExceeded"
