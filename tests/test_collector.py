"""Rendering: the fast text renderer agrees with prometheus_client, duplicates are dropped."""

from __future__ import annotations

import sys
from array import array

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import HealthCollector, ImageCollector, render_images
from exporter.model import ImageKey, Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry


def key(source: str, region: str = "cn-shanghai") -> SourceKey:
    return SourceKey("aliyun", "prod", region, source)


def nasty_snapshot() -> Snapshot:
    odd = ImageKey("aliyun", "prod", "cn-hangzhou", 'ns"quote', "repo\\back", "tag\nline", "ü-1")
    plain = ImageKey("aliyun", "prod", "cn-hangzhou", "shop", "cart", "1.0", "u2")
    inventory = SourceData(
        samples=(
            Sample("imagesec_image_vulnerabilities", odd, 3.0),
            Sample("imagesec_image_vulnerabilities", plain, 1604487690.0),
            Sample("imagesec_image_scan_progress_ratio", plain, 0.35, ("overall",)),
        )
    )
    findings = SourceData(
        samples=(
            Sample("imagesec_image_baseline_risk_items", odd, 2.0, ("high",)),
            Sample("imagesec_image_vulnerabilities", plain, 99.0),  # a duplicate label set
        )
    )
    return Snapshot(
        {
            key("sas_images"): SourceState(key("sas_images"), 300, inventory, True, True),
            key("sas_baseline"): SourceState(key("sas_baseline"), 900, findings, True, True),
            key("sas_malicious"): SourceState(key("sas_malicious"), 900, None, False, True),
        }
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_fast_renderer_agrees_with_prometheus_client() -> None:
    snapshot = nasty_snapshot()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ImageCollector(lambda: snapshot))
    reference = generate_latest(registry).decode()
    fast = render_images(snapshot).decode()
    assert samples(fast) == samples(reference)
    helps = lambda text: sorted(x for x in text.splitlines() if x.startswith("#"))  # noqa: E731
    assert helps(fast) == helps(reference)


def test_first_source_wins_a_duplicate_and_help_names_the_intervals() -> None:
    snapshot = nasty_snapshot()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ImageCollector(lambda: snapshot))
    labels = {
        "provider": "aliyun",
        "account": "prod",
        "region": "cn-hangzhou",
        "repo_namespace": "shop",
        "repo": "cart",
        "tag": "1.0",
        "image_id": "u2",
    }
    # sas_baseline sorts before sas_images, so its (wrong) duplicate would win: the value
    # proves which one was kept, and that exactly one was.
    assert registry.get_sample_value("imagesec_image_vulnerabilities", labels) == 99.0
    text = render_images(snapshot).decode()
    assert (
        text.count(
            'imagesec_image_vulnerabilities{provider="aliyun",account="prod",region="cn-hangzhou",repo_namespace="shop",repo="cart",tag="1.0",image_id="u2"}'
        )
        == 1
    )
    assert "(cached, refreshed every 300s to 900s)." in text
    assert "(cached, refreshed every 900s)." in text


def test_health_collector_preinitialises_every_source() -> None:
    snapshot = nasty_snapshot()
    telemetry = Telemetry()
    telemetry.declare("imagesec_api_requests", ("aliyun", "prod", "cn-shanghai", "X"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(lambda: snapshot, telemetry))
    source = {"provider": "aliyun", "account": "prod", "region": "cn-shanghai"}
    assert registry.get_sample_value("imagesec_up", {**source, "source": "sas_malicious"}) == 0
    assert registry.get_sample_value("imagesec_up", {**source, "source": "sas_images"}) == 1
    assert (
        registry.get_sample_value(
            "imagesec_last_refresh_success_timestamp_seconds", {**source, "source": "sas_malicious"}
        )
        == 0
    )
    assert registry.get_sample_value("imagesec_api_requests_total", {**source, "action": "X"}) == 0
    text = generate_latest(registry).decode()
    assert "_created" not in text  # no created series for our counters


def test_a_repeated_label_set_keeps_its_first_value_in_any_order() -> None:
    from exporter.model import ImageKey, Sample, SourceData

    def key(i: int) -> ImageKey:
        return ImageKey("aliyun", "a", "r", "ns", "repo", f"t{i}", f"id{i}")

    metric = "imagesec_image_vulnerabilities_by_severity"
    given = [
        (key(0), "high", 1.0),
        (key(0), "low", 2.0),
        (key(0), "high", 9.0),  # a repeat within the image
        (key(1), "high", 3.0),
        (key(2), "low", 4.0),
        (key(0), "low", 9.0),  # image 0 comes back after others: still a repeat
        (key(0), "medium", 5.0),  # ... but a new label set of it is kept
        (key(1), "high", 9.0),
        (key(3), "high", 6.0),
    ]
    data = SourceData(samples=[Sample(metric, k, v, (sev,)) for k, sev, v in given])
    kept = {(s.image.tag, s.extra[0]): s.value for s in data.samples}
    assert kept == {
        ("t0", "high"): 1.0,
        ("t0", "low"): 2.0,
        ("t1", "high"): 3.0,
        ("t2", "low"): 4.0,
        ("t0", "medium"): 5.0,
        ("t3", "high"): 6.0,
    }
    assert data.series == 6


def test_columns_are_exact_size_and_the_extra_index_is_as_narrow_as_it_can_be() -> None:
    from exporter.model import ImageKey, Sample, SourceData

    keys = [ImageKey("aliyun", "a", "r", "ns", "repo", f"t{i}", f"id{i}") for i in range(300)]
    info = [("sha256:" + f"{i:064x}", "acr", "private", "", "", "r") for i in range(300)]
    data = SourceData(
        [Sample("imagesec_image_info", k, 1.0, extra) for k, extra in zip(keys, info, strict=True)]
        + [Sample("imagesec_image_vulnerabilities_by_severity", k, 1.0, ("high",)) for k in keys]
    )
    by_severity = data.families["imagesec_image_vulnerabilities_by_severity"]
    assert by_severity.extra.typecode == "B"  # one label set: a byte per series
    assert data.families["imagesec_image_info"].extra.typecode == "H"  # 300 label sets
    for family in data.families.values():
        for column in (family.image, family.extra, family.values):
            assert column.buffer_info()[1] == len(column) == 300
            # exact size: no room ahead left over from appending
            assert sys.getsizeof(column) - sys.getsizeof(array(column.typecode)) == (
                len(column) * column.itemsize
            )
