"""A real Prometheus scrapes the demo exporter; every panel query and alert expression runs on it.

Debian's prometheus package provides the server and promtool; CI installs it (never skipped there).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "grafana" / "imagesec-exporter.json").read_text())
RULES = yaml.safe_load((ROOT / "alerts" / "imagesec.rules.yml").read_text())["groups"]
SETTLE_SECONDS = 90
"""How long to wait for the demo's first refresh of every source and enough scrapes for rates."""

sys.path.insert(0, str(ROOT / "grafana"))
from prometheus_stack import Stack, expand, http_get, running_stack  # noqa: E402

PANEL_QUERIES = [
    (panel["title"], target["expr"])
    for panel in DASHBOARD["panels"]
    if panel["type"] != "row"
    for target in panel["targets"]
]
VARIABLE_QUERIES = [
    (variable["name"], variable["query"])
    for variable in DASHBOARD["templating"]["list"]
    if variable["type"] == "query"
]
ALERTS = [
    (rule["alert"], rule["expr"]) for group in RULES for rule in group["rules"] if "alert" in rule
]
RECORDS = [
    (rule["record"], rule["expr"]) for group in RULES for rule in group["rules"] if "record" in rule
]

pytestmark = pytest.mark.promtool


def _label_values(stack: Stack, query: str) -> list[str]:
    """What Grafana's ``label_values(selector, label)`` lists, through the series API."""
    selector, _, label = (
        expand(query).removeprefix("label_values(").removesuffix(")").rpartition(",")
    )
    answer = stack.api(f"label/{label.strip()}/values", **{"match[]": selector.strip()})
    assert answer["status"] == "success", answer
    return list(answer["data"])


def _has_data(answer: dict) -> bool:
    return answer.get("status") == "success" and bool(answer["data"]["result"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The demo and Prometheus, once every source has refreshed and rates have samples."""
    prometheus = require_tool("prometheus")
    with running_stack(tmp_path_factory.mktemp("prometheus"), prometheus=prometheus) as stack:
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            ready = http_get(f"{stack.exporter_url}/-/ready")[0] == 200
            if ready and all(_has_data(stack.query(expand(q))) for _, q in PANEL_QUERIES):
                break
            time.sleep(1)
        yield stack


def test_demo_metrics_pass_promtool_check_metrics(stack: Stack) -> None:
    status, exposition = http_get(f"{stack.exporter_url}/metrics")
    assert status == 200 and "imagesec_image_info{" in exposition
    result = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_prometheus_scrapes_the_exporter(stack: Stack) -> None:
    answer = stack.query('up{job="imagesec-exporter"}')
    assert [sample["value"][1] for sample in answer["data"]["result"]] == ["1"]


@pytest.mark.parametrize("title, expr", PANEL_QUERIES, ids=[t for t, _ in PANEL_QUERIES])
def test_dashboard_query_returns_data(stack: Stack, title: str, expr: str) -> None:
    answer = stack.query(expand(expr))
    assert answer["status"] == "success", answer.get("error")
    assert answer["data"]["result"], f"no data for {expand(expr)}"


@pytest.mark.parametrize("name, query", VARIABLE_QUERIES, ids=[n for n, _ in VARIABLE_QUERIES])
def test_dashboard_variable_has_values(stack: Stack, name: str, query: str) -> None:
    assert _label_values(stack, query)


def test_provider_variable_lists_both_clouds(stack: Stack) -> None:
    (query,) = [q for name, q in VARIABLE_QUERIES if name == "provider"]
    assert sorted(_label_values(stack, query)) == ["aliyun", "tencent"]


@pytest.mark.parametrize("alert, expr", ALERTS, ids=[a for a, _ in ALERTS])
def test_alert_expression_runs(stack: Stack, alert: str, expr: str) -> None:
    answer = stack.query(expr)
    assert answer["status"] == "success", answer.get("error")


@pytest.mark.parametrize("record, expr", RECORDS, ids=[r for r, _ in RECORDS])
def test_recording_rule_has_data_and_agrees_with_its_expression(
    stack: Stack, record: str, expr: str
) -> None:
    """Prometheus evaluated the rule: the recorded series exist, one per repository (or per
    repository and severity, level, status, scan), with the values of the raw expression."""
    recorded = stack.query(f"sort({record})")
    assert _has_data(recorded), record
    assert all(
        set(s["metric"]) >= {"provider", "account", "region", "repo"}
        for s in recorded["data"]["result"]
    )
    assert not any("image_id" in s["metric"] for s in recorded["data"]["result"])
    raw = stack.query(f"count({expr})")
    assert raw["data"]["result"][0]["value"][1] == str(len(recorded["data"]["result"]))


def test_prometheus_loaded_and_evaluated_every_rule(stack: Stack) -> None:
    """Every rule ran at least once without an evaluation error (e.g. duplicate label sets)."""
    deadline = time.monotonic() + 30
    while True:
        groups = stack.api("rules")["data"]["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        evaluated = all(r["lastEvaluation"] > "2000" for r in rules.values())
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(rules) == {alert for alert, _ in ALERTS} | {record for record, _ in RECORDS}
    assert {name: rule["health"] for name, rule in rules.items()} == {
        name: "ok" for name in rules
    }, {name: rule.get("lastError") for name, rule in rules.items()}


def test_demo_fires_the_finding_alerts_it_should(stack: Stack) -> None:
    """The demo fleet has serious unhandled malware and failed scans: their expressions match."""
    for alert in (
        "ImagesecRepoMaliciousSamplesUnhandled",
        "ImagesecRepoCriticalOrHighVulnerabilities",
    ):
        (expr,) = [e for a, e in ALERTS if a == alert]
        assert stack.query(expr)["data"]["result"], alert
