"""Documented mappings held value by value: scan states, image names, Sas sites.

The expected values are copied from the README (metric label values) and cloud-api-facts.md
(endpoints), not computed from the tables under test, so changing one entry of those tables
fails here.
"""

from __future__ import annotations

import pytest

from exporter.clouds.aliyun.endpoints import sas_endpoint
from exporter.normalise import sas_scan_status, split_image_name, tcss_scan_status

# README, label values of imagesec_image_scan_status: Sas ScaStatus.
SAS_DOCUMENTED = {
    "INIT": "pending",
    "START": "scanning",
    "MESSAGE_SEND": "scanning",
    "START_RUN": "scanning",
    "DOWNLOAD": "scanning",
    "PRE_ANALYZER": "scanning",
    "PRE_ANALYZER_SUCCESS": "scanning",
    "WEB_SHELL_ANALYZER": "scanning",
    "CVE_ANALYZER": "scanning",
    "BIN_ANALYZER": "scanning",
    "OTHER_ANALYZER": "scanning",
    "SUCCESS": "succeeded",
    "FAIL": "failed",
    "TIMEOUT": "timeout",
}
# README: TCSS ScanStatus (any case).
TCSS_DOCUMENTED = {
    "notScan": "not_scanned",
    "scanning": "scanning",
    "scanned": "succeeded",
    "scanErr": "failed",
}


@pytest.mark.parametrize(("value", "state"), sorted(SAS_DOCUMENTED.items()))
def test_every_sas_sca_status_maps_to_its_documented_state(value: str, state: str) -> None:
    assert sas_scan_status(value) == state
    assert sas_scan_status(value.lower()) == state


@pytest.mark.parametrize(("value", "state"), sorted(TCSS_DOCUMENTED.items()))
def test_every_tcss_scan_status_in_any_case_maps_to_its_documented_state(
    value: str, state: str
) -> None:
    # The list API sends lower camel case (notScan), seed 003's sample upper case (NOTSCAN).
    for spelling in (value, value.upper(), value.lower(), value.swapcase()):
        assert tcss_scan_status(spelling) == state, spelling


@pytest.mark.parametrize("value", [None, "", "RUNNING", "not_scan", "SCAN_ERR", "succeeded"])
def test_undocumented_scan_statuses_are_unknown(value: str | None) -> None:
    assert sas_scan_status(value) == "unknown"
    assert tcss_scan_status(value) == "unknown"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ns/repo:1.0", ("ns", "repo", "1.0")),
        ("registry.example.com:5000/ns/repo:1.0", ("ns", "repo", "1.0")),
        ("registry:5000/ns/repo:1.0", ("ns", "repo", "1.0")),  # a port marks a registry host
        ("registry:5000/ns/repo", ("ns", "repo", "latest")),  # the port is not a tag
        ("ccr.ccs.tencentyun.com/team/sub/repo:v2", ("team/sub", "repo", "v2")),
        ("docker.io/library/nginx:1.25", ("library", "nginx", "1.25")),
        ("ns/repo", ("ns", "repo", "latest")),  # no tag: latest, as docker resolves it
        ("repo", ("", "repo", "latest")),
        ("ns/repo:", ("ns", "repo", "latest")),  # an empty tag is no tag
        ("registry:5000/ns/repo:", ("ns", "repo", "latest")),
        ("ns/repo@sha256:" + "ab" * 32, ("ns", "repo", "latest")),  # digest only
        ("ns/repo:1.0@sha256:" + "ab" * 32, ("ns", "repo", "1.0")),
        ("host.io:443/ns/repo:2@sha256:" + "cd" * 32, ("ns", "repo", "2")),
        ("localhost/ns/repo:dev", ("ns", "repo", "dev")),  # localhost is a registry
        ("localhost:5000/repo", ("", "repo", "latest")),
        ("localhost/repo", ("", "repo", "latest")),
        ("team/sub/repo:tag", ("team/sub", "repo", "tag")),  # no dot, colon or localhost
    ],
)
def test_image_names_split_into_namespace_repo_and_tag(
    name: str, expected: tuple[str, str, str]
) -> None:
    assert split_image_name(name) == expected


CHINA = "tds.cn-shanghai.aliyuncs.com"
INTERNATIONAL = "tds.ap-southeast-1.aliyuncs.com"


@pytest.mark.parametrize(
    "region",
    [
        "cn-hangzhou",
        "cn-shanghai",
        "cn-beijing",
        "cn-shenzhen",
        "cn-zhangjiakou",
        "cn-chengdu",
        "cn-shanghai-finance-1",
        "cn-hongkong",  # Hong Kong is served by the China site
    ],
)
def test_mainland_regions_and_hong_kong_use_the_china_site(region: str) -> None:
    assert sas_endpoint(region) == CHINA


@pytest.mark.parametrize(
    "region",
    [
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-south-1",
        "us-east-1",
        "us-west-1",
        "eu-central-1",
        "eu-west-1",
        "me-east-1",
        "me-central-1",
    ],
)
def test_international_regions_use_the_singapore_site(region: str) -> None:
    assert sas_endpoint(region) == INTERNATIONAL
