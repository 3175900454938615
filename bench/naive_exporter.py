"""Baseline (a) of bench/fleet_bench.py: the straightforward exporter.

The official Alibaba and Tencent SDKs called one request after another, every value set on a
prometheus_client Gauge per label set, the registry rendered on every scrape by
prometheus_client's own HTTP server. Same families and the full statesets and malware grid
(the shape before the cardinality review). No per-image cache: every pass fetches everything.

Two modes, because a pass of it at 10k images takes most of an hour (the SDK calls take about
50 ms each against the simulator, one after another):

- ``--aliyun URL --tencent URL --seconds S``: walk the fleet as above for S seconds, then
  print {"calls": c, "seconds": s}: the call rate, from which the benchmark extrapolates the
  first pass.
- ``--fill FILE --port P``: set a Gauge per label set for every sample of the exposition in
  FILE (the exporter's own series) and serve the registry, rendered per scrape.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from alibabacloud_sas20181203 import models as sas  # type: ignore[import-untyped]
from alibabacloud_sas20181203.client import Client as SasClient  # type: ignore[import-untyped]
from alibabacloud_tea_openapi import models as openapi  # type: ignore[import-untyped]
from prometheus_client import Gauge, start_http_server
from tencentcloud.common import credential  # type: ignore[import-untyped]
from tencentcloud.common.profile.client_profile import ClientProfile  # type: ignore[import-untyped]
from tencentcloud.common.profile.http_profile import HttpProfile  # type: ignore[import-untyped]
from tencentcloud.tcss.v20201101 import models as tc  # type: ignore[import-untyped]
from tencentcloud.tcss.v20201101 import tcss_client  # type: ignore[import-untyped]

from exporter.metrics import CATALOGUE, MALWARE_LEVELS, MALWARE_STATUSES, SCAN_STATUSES
from exporter.normalise import SAS_MALWARE_STATUS, sas_scan_status, tcss_scan_status
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
)

ID = ["provider", "account", "region", "repo_namespace", "repo", "tag", "image_id"]
GAUGES = {
    name: Gauge(name, spec.help, list(spec.labels))
    for name, spec in CATALOGUE.items()
    if spec.per_image and name != "imagesec_image_malicious_samples_all"
}
CALLS = [0]
CHECK: list[Callable[[], None]] = []


def call(fn: Callable[[], Any]) -> Any:
    """One SDK call, retried while throttled (the simulator enforces the quota)."""
    while True:
        for check in CHECK:
            check()
        CALLS[0] += 1
        try:
            return fn()
        except Exception as err:  # SDK errors: throttled is retried, anything else raised
            if "Throttling" in str(err) or "RequestLimitExceeded" in str(err):
                time.sleep(0.05)
                continue
            raise


def aliyun_pass(client: SasClient) -> None:
    images: list[Any] = []
    page = 1
    while True:
        request = sas.DescribeImageInstancesRequest(current_page=page, page_size=20)
        body = call(lambda: client.describe_image_instances(request)).body  # noqa: B023
        images += body.image_instance_list
        if page * 20 >= body.page_info.total_count:
            break
        page += 1
    for image in images:
        ident = [
            "aliyun",
            "bench",
            image.region_id,
            image.repo_namespace,
            image.repo_name,
            image.tag,
            image.uuid,
        ]
        GAUGES["imagesec_image_info"].labels(
            *ident, image.digest, image.registry_type.lower(), image.repo_type.lower(), "", ""
        ).set(1)
        GAUGES["imagesec_image_vulnerabilities"].labels(*ident).set(image.vul_count or 0)
        GAUGES["imagesec_image_alerts"].labels(*ident).set(image.alarm_count or 0)
        GAUGES["imagesec_image_deployed"].labels(*ident).set(1 if image.deployed else 0)
        GAUGES["imagesec_image_scan_progress_ratio"].labels(*ident, "overall").set(
            (image.sca_progress or 0) / 100
        )
        status = sas_scan_status(image.sca_status)
        for s in SCAN_STATUSES:
            GAUGES["imagesec_image_scan_status"].labels(*ident, s).set(1 if s == status else 0)
        GAUGES["imagesec_image_last_scan_timestamp_seconds"].labels(*ident).set(
            (image.last_scan_time or 0) / 1000
        )
        GAUGES["imagesec_image_size_bytes"].labels(*ident).set(float(image.image_size or 0))
        GAUGES["imagesec_image_created_timestamp_seconds"].labels(*ident).set(
            float(image.image_create or 0) / 1000
        )
        request = sas.DescribeImageBaselineCheckResultRequest(
            image_uuid=image.uuid, current_page=1, page_size=20
        )
        body = call(lambda: client.describe_image_baseline_check_result(request)).body  # noqa: B023
        totals = {"high": 0, "medium": 0, "low": 0}
        for row in body.baseline_result or []:
            totals["high"] += row.high_risk_item_count or 0
            totals["medium"] += row.middle_risk_item_count or 0
            totals["low"] += row.low_risk_item_count or 0
        for severity, value in totals.items():
            GAUGES["imagesec_image_baseline_risk_items"].labels(*ident, severity).set(value)
        for necessity, severity in (("asap", "high"), ("later", "medium"), ("nntf", "low")):
            request = sas.DescribeImageVulListRequest(
                type="cve",
                uuids=image.uuid,
                necessity=necessity,
                status_list="1,4",
                current_page=1,
                page_size=1,
            )
            body = call(lambda: client.describe_image_vul_list(request)).body  # noqa: B023
            GAUGES["imagesec_image_vulnerabilities_by_severity"].labels(*ident, severity).set(
                body.total_count or 0
            )
        for level in MALWARE_LEVELS[:3]:
            for st in MALWARE_STATUSES[:4]:
                GAUGES["imagesec_image_malicious_samples"].labels(*ident, level, st).set(0)
    page = 1
    by_image = {i.uuid: i for i in images}
    while True:
        request = sas.DescribeAffectedMaliciousFileImagesRequest(current_page=page, page_size="20")
        body = call(lambda: client.describe_affected_malicious_file_images(request)).body  # noqa: B023
        for row in body.affected_malicious_file_images_response or []:
            image = by_image.get(row.image_uuid)
            if image is None:
                continue
            ident = [
                "aliyun",
                "bench",
                image.region_id,
                image.repo_namespace,
                image.repo_name,
                image.tag,
                image.uuid,
            ]
            gauge = GAUGES["imagesec_image_malicious_samples"].labels(
                *ident, row.level, SAS_MALWARE_STATUS.get(int(row.status or 0), "unknown")
            )
            gauge.inc()
        if page * 20 >= body.page_info.total_count:
            break
        page += 1


def tencent_pass(client: tcss_client.TcssClient) -> None:
    offset, total = 0, None
    images: list[Any] = []
    while total is None or offset < total:
        request = tc.DescribeAssetImageListRequest()
        request.Limit, request.Offset = 100, offset
        response = call(lambda: client.DescribeAssetImageList(request))  # noqa: B023
        total = response.TotalCount
        images += response.List
        offset += 100
    for image in images:
        namespace, _, rest = image.ImageName.partition("/")
        repo, _, tag = rest.rpartition(":")
        ident = ["tencent", "bench", "ap-guangzhou", namespace, repo, tag, image.ImageID]
        GAUGES["imagesec_image_vulnerabilities"].labels(*ident).set(image.VulCnt or 0)
        for severity, value in (
            ("critical", image.CriticalLevelVulCnt),
            ("high", image.HighLevelVulCnt),
            ("medium", image.MediumLevelVulCnt),
            ("low", image.LowLevelVulCnt),
        ):
            GAUGES["imagesec_image_vulnerabilities_by_severity"].labels(*ident, severity).set(
                value or 0
            )
        status = tcss_scan_status(image.ScanStatus)
        for s in SCAN_STATUSES:
            GAUGES["imagesec_image_scan_status"].labels(*ident, s).set(1 if s == status else 0)
        GAUGES["imagesec_image_size_bytes"].labels(*ident).set(image.Size or 0)
        GAUGES["imagesec_image_hosts"].labels(*ident).set(image.HostCnt or 0)
        GAUGES["imagesec_image_containers"].labels(*ident).set(image.ContainerCnt or 0)
        request = tc.DescribeAssetImageDetailRequest()
        request.ImageID = image.ImageID
        detail = call(lambda: client.DescribeAssetImageDetail(request))  # noqa: B023
        GAUGES["imagesec_image_info"].labels(
            *ident, detail.ImageDigest or "", "", "", detail.OsName or "", detail.Architecture or ""
        ).set(1)
        GAUGES["imagesec_image_risks"].labels(*ident).set(detail.RiskCnt or 0)
        GAUGES["imagesec_image_sensitive_info_items"].labels(*ident).set(
            detail.SensitiveInfoCnt or 0
        )
        GAUGES["imagesec_image_malicious_samples"].labels(*ident, "unknown", "unknown").set(
            detail.VirusCnt or 0
        )
        for scan, value in (
            ("vulnerability", detail.ScanVulProgress),
            ("malware", detail.ScanVirusProgress),
            ("risk", detail.ScanRiskProgress),
        ):
            GAUGES["imagesec_image_scan_progress_ratio"].labels(*ident, scan).set(
                (value or 0) / 100
            )
        for scan, error in (
            ("overall", detail.ScanError),
            ("vulnerability", detail.ScanVulError),
            ("malware", detail.ScanVirusError),
            ("risk", detail.ScanRiskError),
        ):
            GAUGES["imagesec_image_scan_error"].labels(*ident, scan).set(1 if error else 0)


def fill(path: str) -> int:
    """A Gauge per family and a child per label set of the exposition's samples."""
    from prometheus_client.parser import text_string_to_metric_families

    GAUGES.clear()
    series = 0
    gauges: dict[str, Gauge] = {}
    with open(path, encoding="utf-8") as file:
        for family in text_string_to_metric_families(file.read()):
            if not family.name.startswith("imagesec_image_"):
                continue
            for sample in family.samples:
                names = sorted(sample.labels)
                gauge = gauges.get(family.name)
                if gauge is None:
                    gauge = gauges[family.name] = Gauge(
                        f"naive_{family.name.removeprefix('imagesec_')}",
                        family.documentation,
                        names,
                    )
                gauge.labels(*(sample.labels[n] for n in names)).set(sample.value)
                series += 1
    return series


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aliyun")
    parser.add_argument("--tencent")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fill")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.fill:
        series = fill(args.fill)
        start_http_server(args.port, addr="127.0.0.1")
        print(json.dumps({"series": series}))
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    sas_client = SasClient(
        openapi.Config(
            access_key_id=DEMO_ALIYUN_ACCESS_KEY_ID,
            access_key_secret=DEMO_ALIYUN_ACCESS_KEY_SECRET,
            endpoint=args.aliyun.removeprefix("http://"),
            protocol="http",
            region_id="cn-shanghai",
        )
    )
    cred = credential.Credential(DEMO_TENCENT_SECRET_ID, DEMO_TENCENT_SECRET_KEY)
    http = HttpProfile(endpoint=args.tencent.removeprefix("http://"), protocol="http")
    tcss = tcss_client.TcssClient(cred, "ap-guangzhou", ClientProfile(httpProfile=http))
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()

    def tick() -> None:
        if time.monotonic() > deadline:
            raise TimeoutError

    CHECK.append(tick)
    try:
        while True:
            aliyun_pass(sas_client)
            tencent_pass(tcss)
    except TimeoutError:
        pass
    print(json.dumps({"calls": CALLS[0], "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
