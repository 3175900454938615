"""Simulated fleet: determinism, movement over time, cross-action consistency, overrides."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from exporter.simulator import Fleet, Simulator
from exporter.simulator.signed import aliyun_v3, tencent_tc3

NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _sas(sim: Simulator, action: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    response = sim.handle("aliyun", aliyun_v3(action, params, now=sim.clock()))
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def _tc(sim: Simulator, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    response = sim.handle("tencent", tencent_tc3(action, params, now=sim.clock()))
    body: dict[str, Any] = response.json()["Response"]
    assert "Error" not in body, body
    return body


def _all_instances(sim: Simulator, region: str | None = None) -> list[dict[str, Any]]:
    params = {"PageSize": "100"} | ({"RegionId": region} if region else {})
    return list(_sas(sim, "DescribeImageInstances", params)["ImageInstanceList"])


def _all_tcss(sim: Simulator, region: str = "ap-guangzhou") -> list[dict[str, Any]]:
    response = sim.handle(
        "tencent",
        tencent_tc3("DescribeAssetImageList", {"Limit": 100}, now=sim.clock(), region=region),
    )
    return list(response.json()["Response"]["List"])


def test_same_seed_same_data() -> None:
    a, b = Simulator(seed=7, clock=lambda: NOW), Simulator(seed=7, clock=lambda: NOW)
    assert _all_instances(a) == _all_instances(b)
    assert _all_tcss(a) == _all_tcss(b)


def test_different_seed_different_data() -> None:
    a, b = Simulator(seed=1, clock=lambda: NOW), Simulator(seed=2, clock=lambda: NOW)
    assert {i["Uuid"] for i in _all_instances(a)}.isdisjoint(i["Uuid"] for i in _all_instances(b))


def test_images_per_region_and_sites() -> None:
    sim = Simulator(images_per_region=30, clock=lambda: NOW)
    china, intl = _all_instances(sim), _all_instances(sim, "ap-southeast-1")
    assert len(china) == len(intl) == 30
    assert {i["RegionId"] for i in china} <= {
        "cn-hangzhou",
        "cn-shanghai",
        "cn-beijing",
        "cn-shenzhen",
    }
    assert {i["RegionId"] for i in intl} <= {"ap-southeast-1", "eu-central-1", "us-east-1"}
    # cn-hangzhou and other mainland regions are served by the China site
    assert _all_instances(sim, "cn-hangzhou") == china
    assert len({(i["RepoNamespace"], i["RepoName"], i["Tag"]) for i in china}) == 30


def test_fleet_has_every_scan_state() -> None:
    sim = Simulator(clock=lambda: NOW)
    statuses = Counter(
        i["ScaStatus"] for i in _all_instances(sim) + _all_instances(sim, "ap-southeast-1")
    )
    assert statuses["INIT"] >= 2
    assert statuses["FAIL"] + statuses["TIMEOUT"] >= 2
    assert statuses["SUCCESS"] >= 30
    tcss = Counter(i["ScanStatus"] for i in _all_tcss(sim) + _all_tcss(sim, "ap-singapore"))
    assert set(tcss) <= {"notScan", "scanning", "scanned", "scanErr"}
    assert tcss["notScan"] >= 2 and tcss["scanErr"] >= 2


def test_some_images_are_mid_scan_and_progress_rises() -> None:
    clock = Clock()
    fleet = Fleet(clock=clock)
    specs = [s for site in ("cn-shanghai", "ap-southeast-1") for s in fleet.images("aliyun", site)]
    # Walk time until some image is mid-scan, then watch its progress rise to SUCCESS.
    for step in range(0, 3600, 30):
        running = [s for s in specs if fleet.state(s, NOW + step).phase == "scanning"]
        if running:
            break
    assert running, "no image was ever mid-scan"
    spec, t = running[0], NOW + step
    first = fleet.state(spec, t)
    assert first.sca_status not in ("SUCCESS", "INIT", "FAIL", "TIMEOUT")
    later = fleet.state(spec, t + 20)
    if later.phase == "scanning":
        assert later.progress >= first.progress
    final = next(
        fleet.state(spec, t + d)
        for d in range(0, 400, 10)
        if fleet.state(spec, t + d).phase != "scanning"
    )
    assert final.progress == 100 or final.phase == "failed"
    assert final.last_scan_ms > first.last_scan_ms


def test_counts_change_over_time() -> None:
    clock = Clock()
    sim = Simulator(clock=clock)
    before = {i["Uuid"]: (i["VulCount"], i["LastScanTime"]) for i in _all_instances(sim)}
    clock.now += 3 * 3600
    after = {i["Uuid"]: (i["VulCount"], i["LastScanTime"]) for i in _all_instances(sim)}
    assert before.keys() == after.keys()
    changed_scan = [u for u in before if before[u][1] != after[u][1]]
    changed_counts = [u for u in before if before[u][0] != after[u][0]]
    assert len(changed_scan) > 10 and changed_counts


def test_the_fleet_clock_is_separate_from_the_signing_clock() -> None:
    # Requests are signed and verified at the signing clock's time; the scan state served is
    # the fleet clock's, so a test can pin the fleet while a real SDK signs with real time.
    signing, fleet = Clock(NOW), Clock(NOW + 3 * 3600)
    sim = Simulator(clock=signing, fleet_clock=fleet)
    pinned = Simulator(clock=lambda: NOW + 3 * 3600)
    served = _all_instances(sim)
    assert served == _all_instances(pinned)
    assert served != _all_instances(Simulator(clock=lambda: NOW))
    assert _all_tcss(sim) == _all_tcss(pinned) != _all_tcss(Simulator(clock=lambda: NOW))
    signing.now += 600  # the signing clock moves on; the fleet's instant does not
    assert _all_instances(sim) == served
    fleet.now += 3 * 3600  # the fleet's instant moves; signatures still verify
    assert _all_instances(sim) != served
    # The control plane's rescans happen at the fleet's instant too.
    (key,) = sim.fleet.rescan("aliyun", 1, site="cn-shanghai")
    after = next(i for i in _all_instances(sim) if i["Uuid"] == key)
    assert after["LastScanTime"] == int(fleet.now * 1000)
    sim.reseed(2)
    assert sim.fleet.now() == fleet.now


def test_state_is_a_pure_function_of_time() -> None:
    clock = Clock()
    sim = Simulator(clock=clock)
    first = _all_instances(sim)
    clock.now += 5000
    _all_instances(sim)
    clock.now -= 5000
    assert _all_instances(sim) == first


# -- consistency across Sas actions -----------------------------------------------------------


def test_sas_counts_are_consistent_across_actions() -> None:
    sim = Simulator(clock=lambda: NOW, rate_limit=False)
    instances = _all_instances(sim)
    uuids = {i["Uuid"] for i in instances}
    vul_records = _walk(sim, "DescribeImageVulList", "VulRecords", {"Type": "cve"})
    vul_by_uuid = Counter(r["Uuid"] for r in vul_records)
    malware = _walk(
        sim, "DescribeAffectedMaliciousFileImages", "AffectedMaliciousFileImagesResponse", {}
    )
    malware_by_uuid = Counter(r["ImageUuid"] for r in malware)
    risks = _sas(sim, "ListImageRisk", {"PageSize": "100"})["ImageRiskList"]
    assert set(vul_by_uuid) <= uuids and set(malware_by_uuid) <= uuids
    assert {r["Uuid"] for r in risks} <= uuids
    assert any(malware_by_uuid.values())
    for image in instances:
        uuid = image["Uuid"]
        assert image["VulCount"] == vul_by_uuid[uuid]
        assert image["AlarmCount"] == malware_by_uuid[uuid]
        baseline = _sas(
            sim, "DescribeImageBaselineCheckResult", {"ImageUuid": uuid, "PageSize": "100"}
        )
        rows = baseline["BaselineResult"]
        total = sum(
            r["HighRiskItemCount"] + r["MiddleRiskItemCount"] + r["LowRiskItemCount"] for r in rows
        )
        assert image["HcCount"] == total
        assert image["HcStatus"] == ("YES" if total else "NO")
    for risk in risks:
        image = next(i for i in instances if i["Uuid"] == risk["Uuid"])
        stats = json.loads(risk["Statistics"])
        assert stats["vul"] == image["VulCount"] and stats["baselineNum"] == image["HcCount"]


def test_vul_list_filters_by_uuids_and_necessity() -> None:
    sim = Simulator(clock=lambda: NOW)
    image = max(_all_instances(sim), key=lambda i: i["VulCount"])
    records = _walk(
        sim, "DescribeImageVulList", "VulRecords", {"Type": "cve", "Uuids": image["Uuid"]}
    )
    assert len(records) == image["VulCount"] > 0
    by_necessity = Counter(r["Necessity"] for r in records)
    assert set(by_necessity) <= {"asap", "later", "nntf"}
    asap = _walk(
        sim,
        "DescribeImageVulList",
        "VulRecords",
        {"Type": "cve", "Uuids": image["Uuid"], "Necessity": "asap"},
    )
    assert len(asap) == by_necessity["asap"]


def test_tcss_list_and_detail_agree() -> None:
    sim = Simulator(clock=lambda: NOW, rate_limit=False)
    for item in _all_tcss(sim):
        detail = _tc(sim, "DescribeAssetImageDetail", {"ImageID": item["ImageID"]})
        assert (
            detail["VulCnt"]
            == item["VulCnt"]
            == sum(item[f"{s}LevelVulCnt"] for s in ("Critical", "High", "Medium", "Low"))
        )
        assert detail["ScanStatus"] == item["ScanStatus"].upper()
        assert (detail["ImageName"], detail["ScanTime"], detail["VirusCnt"]) == (
            item["ImageName"],
            item["ScanTime"],
            item["VirusCnt"],
        )
        assert item["ImageID"].startswith("sha256:") and len(item["ImageID"]) == 71


def _walk(sim: Simulator, action: str, field: str, params: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        body = _sas(sim, action, {**params, "CurrentPage": str(page), "PageSize": "50"})
        rows += body[field]
        total = body["TotalCount"] if "TotalCount" in body else body["PageInfo"]["TotalCount"]
        if len(rows) >= total:
            return rows
        page += 1


# -- overrides --------------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", ["aliyun", "tencent"])
def test_rescan_changes_exactly_n_images(cloud: str) -> None:
    clock = Clock()
    sim = Simulator(clock=clock)
    snapshot = _all_instances if cloud == "aliyun" else _all_tcss
    key, count, when = (
        ("Uuid", "VulCount", "LastScanTime")
        if cloud == "aliyun"
        else ("ImageID", "VulCnt", "ScanTime")
    )
    before = {i[key]: i for i in snapshot(sim)}
    keys = sim.fleet.rescan(cloud, 3, site="cn-shanghai" if cloud == "aliyun" else "ap-guangzhou")  # type: ignore[arg-type]
    after = {i[key]: i for i in snapshot(sim)}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == set(keys) and len(keys) == 3
    for k in keys:
        assert before[k][count] != after[k][count]
        assert before[k][when] != after[k][when]


def test_rescan_refuses_more_than_available() -> None:
    sim = Simulator(images_per_region=4, clock=lambda: NOW)
    with pytest.raises(ValueError):
        sim.fleet.rescan("aliyun", 100, site="cn-shanghai")


def test_removed_image_vanishes_from_list_and_detail() -> None:
    sim = Simulator(clock=lambda: NOW)
    item = _all_tcss(sim)[0]
    assert sim.fleet.remove("tencent", item["ImageID"])
    assert item["ImageID"] not in {i["ImageID"] for i in _all_tcss(sim)}
    response = sim.handle(
        "tencent", tencent_tc3("DescribeAssetImageDetail", {"ImageID": item["ImageID"]}, now=NOW)
    )
    assert response.json()["Response"]["Error"]["Code"] == "ResourceNotFound"
    image = _all_instances(sim)[5]
    assert sim.fleet.remove("aliyun", image["Uuid"])
    baseline = _sas(sim, "DescribeImageBaselineCheckResult", {"ImageUuid": image["Uuid"]})
    assert baseline["BaselineResult"] == [] and baseline["PageInfo"]["TotalCount"] == 0
    assert len(_all_instances(sim)) == 23


def test_cheap_mode_caches_states_per_cycle_and_sees_overrides() -> None:
    now = [1_700_000_000.0]
    fleet = Fleet(seed=3, images_per_region=50, clock=lambda: now[0], state_cache=60.0)
    exact = Fleet(seed=3, images_per_region=50, clock=lambda: now[0])
    site = "cn-shanghai"
    first = fleet.states("aliyun", site, now[0])
    assert fleet.states("aliyun", site, now[0] + 30) is first  # same cycle: no recompute
    start = now[0] - now[0] % 60
    assert first == exact.states("aliyun", site, start)  # evaluated at the cycle's start
    [key] = fleet.rescan("aliyun", 1, site=site)
    after = fleet.states("aliyun", site, now[0] + 30)
    assert after is not first
    assert next(s for s in after if s.spec.key == key).generation.startswith("m")
    assert fleet.remove("aliyun", key)
    assert key not in {s.spec.key for s in fleet.states("aliyun", site, now[0] + 30)}
