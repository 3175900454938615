"""The metric catalogue: naming rules, vocabularies, and the README kept true to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter import metrics, normalise
from exporter.metrics import CATALOGUE, IMAGE_LABELS, Kind

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_names_follow_prometheus_conventions(name: str) -> None:
    spec = CATALOGUE[name]
    assert re.fullmatch(r"imagesec_[a-z][a-z0-9_]*", name)
    assert not name.endswith(("_total", "_count", "_sum", "_bucket"))  # counters get _total added
    assert "type" not in spec.labels
    assert len(set(spec.labels)) == len(spec.labels)
    if "timestamp" in name:
        assert name.endswith("_timestamp_seconds")
    if spec.per_image:
        assert spec.labels[: len(IMAGE_LABELS)] == IMAGE_LABELS
        assert spec.kind is Kind.GAUGE


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_readme_documents_every_metric(name: str) -> None:
    exposed = CATALOGUE[name].sample_name
    assert f"`{exposed}`" in README or f"`{exposed}` (" in README, exposed


def test_readme_documents_no_metric_outside_the_catalogue() -> None:
    documented = set(re.findall(r"`(imagesec_[a-z0-9_]+)`", README))
    exposed = {spec.sample_name for spec in CATALOGUE.values()}
    assert documented - exposed == set()


def test_normalisation_tables_map_into_the_vocabularies() -> None:
    assert set(normalise.SAS_SCAN_STATUS.values()) <= set(metrics.SCAN_STATUSES)
    assert set(normalise.TCSS_SCAN_STATUS.values()) <= set(metrics.SCAN_STATUSES)
    assert set(normalise.SAS_NECESSITY_SEVERITY.values()) <= set(metrics.SEVERITIES)
    assert set(normalise.SAS_BASELINE_FIELDS.values()) == set(metrics.BASELINE_SEVERITIES)
    assert set(normalise.SAS_MALWARE_STATUS.values()) <= set(metrics.MALWARE_STATUSES)
    assert set(normalise.SAS_REGISTRATION.values()) <= set(metrics.REGISTRATION_STATUSES)
    assert normalise.sas_scan_status("CVE_ANALYZER") == "scanning"
    assert normalise.sas_scan_status(None) == "unknown"
    assert normalise.tcss_scan_status("SCANNED") == "succeeded"  # seed 003's upper case
    assert normalise.tcss_scan_status("scanErr") == "failed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("docker.io/centos:latest", ("", "centos", "latest")),
        ("ccr.ccs.tencentyun.com/shop/cart:1.4.2", ("shop", "cart", "1.4.2")),
        ("localhost:5000/team/app/api:v1", ("team/app", "api", "v1")),
        ("nginx", ("", "nginx", "latest")),
        ("library/nginx@sha256:abc", ("library", "nginx", "latest")),
        ("registry:5000/app:2", ("", "app", "2")),
    ],
)
def test_split_image_name(name: str, expected: tuple[str, str, str]) -> None:
    assert normalise.split_image_name(name) == expected


def test_tcss_times_are_beijing_time() -> None:
    assert normalise.tcss_time("2024-10-25 16:13:39") == 1729844019.0  # 2024-10-25T08:13:39Z
    assert normalise.tcss_time("") is None
    assert normalise.tcss_time("0000-00-00 00:00:00") is None
