"""The Grafana dashboard: generated JSON is current, well formed and uses catalogued metrics."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from exporter.metrics import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_JSON = ROOT / "grafana" / "imagesec-exporter.json"
VARIABLES = ("datasource", "provider", "account", "region", "repo")
SOURCE_FILTERS = ('provider=~"$provider"', 'account=~"$account"', 'region=~"$region"')
IMAGE_FILTERS = (*SOURCE_FILTERS, 'repo=~"$repo"')

sys.path.insert(0, str(ROOT / "grafana"))
from promql import metric_names, recorded_metrics, unknown_metrics  # noqa: E402

RECORDED = recorded_metrics()


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "imagesec_dashboard", ROOT / "grafana" / "dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def _panels() -> list[dict]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _queries() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in _panels() for target in panel["targets"]]


def test_committed_json_is_what_the_generator_builds() -> None:
    assert DASHBOARD_JSON.read_text() == _generator().render(), (
        "grafana/imagesec-exporter.json is out of date: run python grafana/dashboard.py"
    )


def test_importable_with_a_prometheus_input_and_a_pinned_uid() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "imagesec-exporter"
    assert "id" not in dashboard or dashboard["id"] is None
    assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    datasource = dashboard["templating"]["list"][0]
    assert (datasource["name"], datasource["type"], datasource["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    assert datasource["current"]["value"] == "${DS_PROMETHEUS}"


def test_variables_list_source_labels_so_region_means_the_source_region() -> None:
    """provider, account and region list every configured source (imagesec_up), whose region is
    the one every series carries; repo lists the repositories of the recorded per-repo series."""
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert tuple(variables) == VARIABLES
    sources = {"provider": "imagesec_up", "account": "imagesec_up", "region": "imagesec_up"}
    for name in VARIABLES[1:]:
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        assert match.group(2) == name
        want = sources.get(name, "repo:imagesec_images:count")
        assert metric_names(match.group(1)) == {want}
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"


def test_every_panel_queries_the_datasource_variable() -> None:
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource") in (None, panel["datasource"])


def test_panel_ids_are_unique_and_the_grid_has_no_overlaps() -> None:
    panels = _dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_rows_are_expanded_so_grafana_keeps_their_panels() -> None:
    rows = [panel for panel in _dashboard()["panels"] if panel["type"] == "row"]
    assert [row["title"] for row in rows] == [
        "Fleet overview",
        "Worst images and repositories",
        "Findings over time",
        "Scans",
        "Exporter health",
    ]
    assert all(not row["collapsed"] and not row.get("panels") for row in rows)


@pytest.mark.parametrize("title, expr", _queries(), ids=[title for title, _ in _queries()])
def test_query_uses_only_catalogued_or_recorded_metrics(title: str, expr: str) -> None:
    assert metric_names(expr), "no metric found in the query"
    assert unknown_metrics(expr, CATALOGUE, RECORDED) == set()


@pytest.mark.parametrize("title, expr", _queries(), ids=[title for title, _ in _queries()])
def test_aggregate_panels_read_the_recording_rules(title: str, expr: str) -> None:
    """Only the per-image top-15 tables read per-image series; the rest read repo:... rules."""
    per_image = {n for n in metric_names(expr) if n in CATALOGUE and CATALOGUE[n].per_image}
    if per_image:
        assert expr.startswith(
            "topk(15, sum by (provider, account, region, repo_namespace, repo, tag, image_id)"
        ), title


@pytest.mark.parametrize("title, expr", _queries(), ids=[title for title, _ in _queries()])
def test_query_applies_the_variables(title: str, expr: str) -> None:
    """Per-image metrics filter on all four variables, source metrics on all but repo."""
    for name in metric_names(expr):
        if name in RECORDED:
            for selector in re.findall(rf"\b{name}\{{([^}}]*)\}}", expr) or [""]:
                assert all(f in selector for f in IMAGE_FILTERS), f"{name}{{{selector}}}"
            continue
        spec = CATALOGUE[name.removesuffix("_total")]
        if "provider" not in spec.labels:
            continue  # imagesec_build_info describes the exporter, not a cloud
        filters = IMAGE_FILTERS if spec.per_image else SOURCE_FILTERS
        for selector in re.findall(rf"\b{name}\{{([^}}]*)\}}", expr) or [""]:
            assert all(f in selector for f in filters), f"{name}{{{selector}}}"


def test_overview_covers_the_fleet_and_health_covers_the_exporter() -> None:
    exprs = " ".join(expr for _, expr in _queries())
    for name in (
        "repo:imagesec_images:count",
        "repo:imagesec_image_vulnerabilities_by_severity:sum",
        "repo:imagesec_image_malicious_samples:sum",
        "repo:imagesec_image_baseline_risk_items:sum",
        "repo:imagesec_image_scan_status:sum",
        "repo:imagesec_image_scan_progress_ratio:sum",
        "imagesec_image_vulnerabilities_by_severity",
        "imagesec_up",
        "imagesec_last_refresh_success_timestamp_seconds",
        "imagesec_refresh_duration_seconds",
        "imagesec_api_requests_total",
        "imagesec_api_request_errors_total",
    ):
        assert name in metric_names(exprs), name


def test_stat_panels_show_the_last_value() -> None:
    stats = [panel for panel in _panels() if panel["type"] == "stat"]
    assert stats
    for panel in stats:
        assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"], panel["title"]


def test_table_panels_run_instant_queries_as_tables() -> None:
    tables = [panel for panel in _panels() if panel["type"] == "table"]
    assert tables
    for panel in tables:
        for target in panel["targets"]:
            assert target["instant"] is True and target["format"] == "table", panel["title"]
