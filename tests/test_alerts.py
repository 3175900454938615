"""The alert rules: promtool accepts and tests them, and they only use catalogued metrics."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.metrics import CATALOGUE, Kind
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "imagesec.rules.yml"
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARD_UID = "imagesec-exporter"
RUNBOOK_BASE = "https://github.com/imagesec-exporter/imagesec-exporter/blob/main/docs/runbook.md#"
DASHBOARD_BASE = f"https://grafana.example.com/d/{DASHBOARD_UID}/"
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
SEVERITIES = {"critical", "warning", "info"}

sys.path.insert(0, str(ROOT / "grafana"))
from promql import metric_names, recorded_metrics, unknown_metrics  # noqa: E402

FLOOD = ROOT / "alerts" / "tests" / "flood.py"
FINDING_GROUPS = ("imagesec-findings", "imagesec-scans")
RECORDED = recorded_metrics(RULES)


def _groups() -> list[dict]:
    return list(yaml.safe_load(RULES.read_text())["groups"])


def _alerts() -> list[dict]:
    return [rule for group in _groups() for rule in group["rules"] if "alert" in rule]


def _finding_alerts() -> list[dict]:
    return [
        rule
        for group in _groups()
        if group["name"] in FINDING_GROUPS
        for rule in group["rules"]
        if "alert" in rule
    ]


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts()) + len(RECORDED)} rules found" in result.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path) -> None:
    result = subprocess.run(
        [require_tool("promtool"), "test", "rules", test_file.name],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "alerts without a case where they fire"
    assert names - quiet == set(), "alerts without a case where they stay quiet"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_alert_uses_only_catalogued_or_recorded_metrics(rule: dict) -> None:
    assert metric_names(rule["expr"]), "no metric found in the expression"
    assert unknown_metrics(rule["expr"], CATALOGUE, RECORDED) == set()


@pytest.mark.parametrize("name, expr", RECORDED.items(), ids=list(RECORDED))
def test_recording_rule_reads_only_catalogued_metrics(name: str, expr: str) -> None:
    assert unknown_metrics(expr, CATALOGUE) == set()
    level, metric, operation = name.split(":")
    assert (level, operation) in {("repo", "sum"), ("repo", "count")}, name
    assert metric.startswith("imagesec_")
    # Per repository: the repository's identity is kept, the image's (tag, image_id) is not.
    assert "by (provider, account, region, repo_namespace, repo" in expr, name


@pytest.mark.parametrize("rule", _finding_alerts(), ids=lambda r: r["alert"])
def test_finding_alert_pages_per_repository_or_account_not_per_image(rule: dict) -> None:
    """One cause, one page: the alert aggregates images away and says how many and which."""
    expr = " ".join(rule["expr"].split())
    per_repo = expr.startswith("count by (provider, account, region, repo_namespace, repo) (")
    per_account = expr.startswith("count by (provider, account, region) (")
    recorded = metric_names(expr) <= set(RECORDED) and expr.startswith("repo:")
    assert per_repo or per_account or recorded, expr
    assert "{{ $value }} images" in rule["annotations"]["summary"]
    assert "| query" in rule["annotations"]["worst_images"]
    assert "image_id" not in rule["annotations"]["summary"] + rule["annotations"]["description"]


def test_flood_case_is_current_and_pages_once() -> None:
    spec = importlib.util.spec_from_file_location("imagesec_flood", FLOOD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUTPUT.read_text() == module.render(), "run python alerts/tests/flood.py"
    assert module.render().count("imagesec_image_vulnerabilities_by_severity{") == 500


def test_alertmanager_example_inhibits_every_finding_alert() -> None:
    """The inhibit rule's target matcher covers every finding alert, and no exporter alert."""
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    (rule,) = config["inhibit_rules"]
    (target,) = rule["target_matchers"]
    pattern = target.split("=~", 1)[1].strip('"')
    findings = {r["alert"] for r in _finding_alerts()}
    others = {r["alert"] for r in _alerts()} - findings
    assert {name for name in findings if re.fullmatch(pattern, name)} == findings
    assert {name for name in others if re.fullmatch(pattern, name)} == set()
    assert rule["equal"] == ["provider", "account", "region"]


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_alert_labels_and_annotations(rule: dict) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert REQUIRED_ANNOTATIONS <= set(rule["annotations"])
    assert all(rule["annotations"][key].strip() for key in REQUIRED_ANNOTATIONS)
    assert rule["annotations"]["dashboard_url"].startswith(DASHBOARD_BASE)


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_alert_has_a_runbook_section(rule: dict) -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert rule["alert"] in headings
    assert rule["annotations"]["runbook_url"] == RUNBOOK_BASE + _github_anchor(rule["alert"])


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_alert_does_not_clobber_finding_severity(rule: dict) -> None:
    """A metric with its own ``severity`` label must be aggregated by ``sum without (severity)``.

    Otherwise the rule's ``severity`` label overwrites the finding's, and findings of two
    severities of one image collapse into one label set.
    """
    with_severity = [name for name, spec in CATALOGUE.items() if "severity" in spec.labels]
    for name in with_severity:
        for match in re.finditer(rf"\b{name}\b", rule["expr"]):
            before = rule["expr"][: match.start()]
            assert re.search(r"without\s*\(\s*severity\s*\)\s*\(\s*$", before), (
                f"{name} at offset {match.start()} is not wrapped in sum without (severity)"
            )


def test_no_alert_names_repeat() -> None:
    names = [rule["alert"] for rule in _alerts()]
    assert len(names) == len(set(names))


def test_unknown_metrics_flags_typos_and_counters_without_total() -> None:
    assert unknown_metrics("imagesec_up == 0 or up == 0", CATALOGUE) == set()
    assert unknown_metrics("rate(imagesec_api_requests_total[5m])", CATALOGUE) == set()
    assert unknown_metrics("rate(imagesec_api_requests[5m])", CATALOGUE) == {
        "imagesec_api_requests"
    }
    assert unknown_metrics("imagesec_image_vulns > 0", CATALOGUE) == {"imagesec_image_vulns"}
    assert unknown_metrics("imagesec_up_total", CATALOGUE) == {"imagesec_up_total"}
    assert CATALOGUE["imagesec_api_requests"].kind is Kind.COUNTER


def test_metric_names_skips_functions_labels_and_durations() -> None:
    expr = (
        'sum without (code) (rate(a_total{code=~"Throttling.*"}[10m] offset 1h))'
        " / on (job) group_left (x) b > bool 3 * c"
    )
    assert metric_names(expr) == {"a_total", "b", "c"}
