"""Build the imagesec-exporter Grafana dashboard with grafana-foundation-sdk.

Run ``python grafana/dashboard.py`` after a change to rewrite grafana/imagesec-exporter.json;
tests/test_dashboard.py fails while the committed JSON differs from what this script builds.

The JSON is importable as it is: the import dialog asks for a Prometheus data source
(``${DS_PROMETHEUS}``), which becomes the default of the ``datasource`` variable that every panel
uses. Variables ``provider``, ``account``, ``region`` and ``repo`` filter every per-image panel;
the exporter-health panels ignore ``repo``. ``region`` is the configured source region on every
series (the image's own region is ``image_region`` on imagesec_image_info only), so one region
filters the findings and the health of the same sources.

Aggregate panels read the recording rules of alerts/imagesec.rules.yml (``repo:...``: per
repository and severity, level, status or scan), so the dashboard stays fast at 50k images; only
the per-image top-15 tables read the per-image series. tests/test_prometheus_e2e.py runs every
query on a real Prometheus that evaluates those rules.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

PanelBuilder = stat.Panel | table.Panel | timeseries.Panel

UID = "imagesec-exporter"
TITLE = "imagesec-exporter: container image security"
OUTPUT = Path(__file__).with_name("imagesec-exporter.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label filters every query carries; the variables hold regexes (All is ".*").
SOURCE = 'provider=~"$provider", account=~"$account", region=~"$region"'
IMAGE = SOURCE + ', repo=~"$repo"'
IMAGE_ID = "provider, account, region, repo_namespace, repo, tag, image_id"
REPO_ID = "provider, account, region, repo_namespace, repo"
THROTTLING = 'code=~"Throttling.*|RequestLimitExceeded.*"'

GREEN, YELLOW, ORANGE, RED, BLUE = "green", "yellow", "orange", "red", "blue"


def query(expr: str, legend: str = "") -> Dataquery:
    """A range query, plotted over time."""
    return Dataquery().expr(expr).legend_format(legend or "__auto").ref_id("A").range()


def instant_table_query(expr: str) -> Dataquery:
    """An instant query returned as a table: one row per series, one column per label."""
    return Dataquery().expr(expr).ref_id("A").instant().format(PromQueryFormat.TABLE)


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def stat_panel(
    title: str,
    expr: str,
    description: str,
    *steps: tuple[float | None, str],
    unit: str = "short",
    legend: str = "",
) -> stat.Panel:
    """A single number with a sparkline, coloured by thresholds."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, legend))
        .unit(unit)
        .thresholds(thresholds(*(steps or ((None, GREEN),))))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.AREA)
        .height(4)
        .span(4)
    )


def timeseries_panel(
    title: str,
    description: str,
    expr: str,
    legend: str,
    unit: str = "short",
    stacked: bool = False,
) -> timeseries.Panel:
    """Half a row wide, with a table legend of last and max values."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, legend))
        .unit(unit)
        .min(0)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
        .height(8)
        .span(12)
    )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(60)
    return panel


def table_panel(title: str, description: str, expr: str, value_name: str) -> table.Panel:
    """An instant top-N table: label columns, the value renamed, Time hidden."""
    organize = DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": {"Time": True}, "renameByName": {"Value": value_name}},
    )
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(instant_table_query(expr))
        .with_transformation(organize)
        .with_transformation(
            DataTransformerConfig(
                id_val="sortBy", options={"sort": [{"field": value_name, "desc": True}]}
            )
        )
        .height(9)
        .span(12)
    )


def label_variable(
    name: str, label: str, selector: str, metric: str = "imagesec_up"
) -> dash.QueryVariable:
    """A multi-value variable listing the values of ``name`` among ``metric``'s series.

    Provider, account and region come from ``imagesec_up``: every configured source, with
    ``region`` the source's configured region, as on every other series.
    """
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({_selector(metric, selector)}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def _selector(metric: str, matchers: str) -> str:
    return f"{metric}{{{matchers}}}" if matchers else metric


def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    return [
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(VariableOption(selected=True, text="Prometheus", value="${DS_PROMETHEUS}")),
        label_variable("provider", "Provider", ""),
        label_variable("account", "Account", 'provider=~"$provider"'),
        label_variable("region", "Region", 'provider=~"$provider", account=~"$account"'),
        label_variable("repo", "Repository", SOURCE, "repo:imagesec_images:count"),
    ]


def fleet_overview() -> list[PanelBuilder]:
    critical_high = (
        f'repo:imagesec_image_vulnerabilities_by_severity:sum{{severity=~"critical|high", {IMAGE}}}'
    )
    return [
        stat_panel(
            "Images",
            f"sum(repo:imagesec_images:count{{{IMAGE}}}) or vector(0)",
            "Images the cloud security centres know, after the variable filters.",
            (None, BLUE),
        ),
        stat_panel(
            "Images with critical or high vulnerabilities",
            "sum(repo:imagesec_images_with_critical_or_high_vulnerabilities:count"
            f"{{{IMAGE}}}) or vector(0)",
            "Images with at least one critical or high vulnerability "
            "(Sas: fix priority asap counts as high).",
            (None, GREEN),
            (1, ORANGE),
        ),
        stat_panel(
            "Critical and high vulnerabilities",
            f"sum({critical_high}) or vector(0)",
            "Sum of critical and high vulnerabilities over all images.",
            (None, GREEN),
            (1, ORANGE),
        ),
        stat_panel(
            "Malicious samples unhandled",
            f'sum(repo:imagesec_image_malicious_samples:sum{{status="unhandled", {IMAGE}}})'
            " or vector(0)",
            "Malicious samples of any level that nobody has handled, verified or whitelisted.",
            (None, GREEN),
            (1, RED),
        ),
        stat_panel(
            "Baseline risk items (high)",
            f'sum(repo:imagesec_image_baseline_risk_items:sum{{severity="high", {IMAGE}}})'
            " or vector(0)",
            "High-risk baseline check items over all images (Sas image baseline checks).",
            (None, GREEN),
            (1, ORANGE),
        ),
        stat_panel(
            "Scans failed or timed out",
            f'sum(repo:imagesec_image_scan_status:sum{{status=~"failed|timeout", {IMAGE}}})'
            " or vector(0)",
            "Images whose last scan ended in failed or timeout.",
            (None, GREEN),
            (1, YELLOW),
        ),
    ]


def worst_images() -> list[PanelBuilder]:
    vulns = f'imagesec_image_vulnerabilities_by_severity{{severity=~"critical|high", {IMAGE}}}'
    malicious = f'imagesec_image_malicious_samples{{status="unhandled", {IMAGE}}}'
    return [
        table_panel(
            "Worst images: critical + high vulnerabilities",
            "The 15 images with the most critical and high vulnerabilities.",
            f"topk(15, sum by ({IMAGE_ID}) ({vulns}))",
            "critical + high",
        ),
        table_panel(
            "Worst repositories: critical + high vulnerabilities",
            "The 15 repositories whose tags add up to the most critical and high vulnerabilities.",
            f"topk(15, sum by ({REPO_ID}) (repo:imagesec_image_vulnerabilities_by_severity:sum"
            f'{{severity=~"critical|high", {IMAGE}}}))',
            "critical + high",
        ),
        table_panel(
            "Images with unhandled malicious samples",
            "The 15 images with the most unhandled malicious samples, of any level.",
            f"topk(15, sum by ({IMAGE_ID}) ({malicious}) > 0)",
            "unhandled samples",
        ),
        table_panel(
            "Worst images: high-risk baseline items",
            "The 15 images with the most high-risk baseline check items.",
            f'topk(15, sum by ({IMAGE_ID}) (imagesec_image_baseline_risk_items{{severity="high", {IMAGE}}}) > 0)',
            "high-risk items",
        ),
    ]


def findings_over_time() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Vulnerabilities by severity",
            "All images' vulnerabilities by severity. Sas reports a fix priority "
            "(asap=high, later=medium, nntf=low) and never critical.",
            f"sum by (severity) (repo:imagesec_image_vulnerabilities_by_severity:sum{{{IMAGE}}})",
            "{{severity}}",
            stacked=True,
        ),
        timeseries_panel(
            "Malicious samples by level and status",
            "Malicious samples in all images.",
            f"sum by (level, status) (repo:imagesec_image_malicious_samples:sum{{{IMAGE}}})",
            "{{level}} {{status}}",
        ),
        timeseries_panel(
            "Baseline risk items by severity",
            "Baseline check risk items in all images.",
            f"sum by (severity) (repo:imagesec_image_baseline_risk_items:sum{{{IMAGE}}})",
            "{{severity}}",
            stacked=True,
        ),
        timeseries_panel(
            "Vulnerabilities by provider and account",
            "Total vulnerabilities the scanners report, per cloud account.",
            f"sum by (provider, account) (repo:imagesec_image_vulnerabilities:sum{{{IMAGE}}})",
            "{{provider}}/{{account}}",
        ),
    ]


def scans() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Images by scan status",
            "How many images are in each normalised scan status.",
            f"sum by (status) (repo:imagesec_image_scan_status:sum{{{IMAGE}}})",
            "{{status}}",
            stacked=True,
        ),
        timeseries_panel(
            "Scan progress",
            "Average progress of the images' scans, overall and per scanner.",
            f"sum by (scan) (repo:imagesec_image_scan_progress_ratio:sum{{{IMAGE}}})"
            f" / sum by (scan) (repo:imagesec_image_scan_progress_ratio:count{{{IMAGE}}})",
            "{{scan}}",
            unit="percentunit",
        ),
    ]


def exporter_health() -> list[PanelBuilder]:
    errors = f"imagesec_api_request_errors_total{{{SOURCE}}}"
    return [
        stat_panel(
            "Sources up",
            f"sum(imagesec_up{{{SOURCE}}})",
            "Sources (collector x account x region) whose last refresh succeeded.",
            (None, GREEN),
        ),
        stat_panel(
            "Sources down",
            f"count(imagesec_up{{{SOURCE}}} == 0) or vector(0)",
            "Sources whose last refresh failed; they keep serving their last good data.",
            (None, GREEN),
            (1, RED),
        ),
        stat_panel(
            "Oldest data",
            f"max(time() - imagesec_last_refresh_success_timestamp_seconds{{{SOURCE}}})",
            "Age of the oldest source's last successful refresh.",
            (None, GREEN),
            (900, YELLOW),
            (3600, RED),
            unit="s",
        ),
        stat_panel(
            "API requests / s",
            f"sum(rate(imagesec_api_requests_total{{{SOURCE}}}[$__rate_interval]))",
            "Requests to the cloud APIs, retries included.",
            (None, BLUE),
            unit="reqps",
        ),
        stat_panel(
            "Throttled requests / s",
            f"sum(rate(imagesec_api_request_errors_total{{{THROTTLING}, {SOURCE}}}"
            "[$__rate_interval])) or vector(0)",
            "Requests the cloud APIs refused with Throttling* or RequestLimitExceeded*.",
            (None, GREEN),
            (0.1, YELLOW),
            unit="reqps",
        ),
        stat_panel(
            "Exporter version",
            "count by (version) (imagesec_build_info)",
            "Versions of the exporter instances Prometheus scrapes.",
            (None, BLUE),
            legend="{{version}}",
        ).text_mode(BigValueTextMode.NAME),
        timeseries_panel(
            "Data age by source",
            "Seconds since each source's last successful refresh. The data-stale alert "
            "fires past three refresh intervals.",
            f"time() - imagesec_last_refresh_success_timestamp_seconds{{{SOURCE}}}",
            "{{provider}}/{{account}}/{{region}} {{source}}",
            unit="s",
        ),
        timeseries_panel(
            "Refresh duration by source",
            "Duration of each source's last refresh attempt.",
            f"imagesec_refresh_duration_seconds{{{SOURCE}}}",
            "{{provider}}/{{account}}/{{region}} {{source}}",
            unit="s",
        ),
        timeseries_panel(
            "API requests by action",
            "Request rate to the cloud APIs by action, retries included.",
            f"sum by (provider, action) (rate(imagesec_api_requests_total{{{SOURCE}}}"
            "[$__rate_interval]))",
            "{{provider}} {{action}}",
            unit="reqps",
        ),
        timeseries_panel(
            "API errors by code",
            "Failed API requests by vendor error code (or timeout, connect, http_5xx, "
            "http_4xx, bad_payload). Throttling codes are retried.",
            f"sum by (provider, code) (rate({errors}[$__rate_interval])) or on () vector(0)",
            "{{provider}} {{code}}",
            unit="reqps",
        ),
        timeseries_panel(
            "Refresh failures by code",
            "Failed refreshes of each source, by error code.",
            "sum by (provider, source, code) (increase(imagesec_refresh_failures_total"
            f"{{{SOURCE}}}[$__rate_interval])) or on () vector(0)",
            "{{provider}} {{source}} {{code}}",
        ),
        timeseries_panel(
            "Sources up",
            "1 when the source's last refresh succeeded.",
            f"imagesec_up{{{SOURCE}}}",
            "{{provider}}/{{account}}/{{region}} {{source}}",
        ),
        timeseries_panel(
            "Pass completeness by source",
            "Share of the images a source's current or last pass has looked up: below 1 "
            "while a long first pass publishes its progress, or after a pass the timeout "
            "stopped (the next attempt resumes it).",
            f"imagesec_source_pass_completeness_ratio{{{SOURCE}}}",
            "{{provider}}/{{account}}/{{region}} {{source}}",
            unit="percentunit",
        ),
        timeseries_panel(
            "Images skipped by reason",
            "Images the listings left out: the account's repo and tag filters, newest_tags "
            "per repository, and the max_images bound (truncation).",
            f"sum by (provider, account, region, reason) (imagesec_images_skipped{{{SOURCE}}})",
            "{{provider}}/{{account}}/{{region}} {{reason}}",
        ),
    ]


SECTIONS = (
    ("Fleet overview", fleet_overview),
    ("Worst images and repositories", worst_images),
    ("Findings over time", findings_over_time),
    ("Scans", scans),
    ("Exporter health", exporter_health),
)


def build() -> dict[str, object]:
    """The dashboard as a JSON-ready dict, with the import inputs Grafana's export adds."""
    builder = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .description(
            "Container image security findings from Alibaba Cloud Security Center and "
            "Tencent Cloud TCSS, as served by imagesec-exporter."
        )
        .tags(["imagesec", "security", "containers"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .variables(variables())
        .link(
            dash.DashboardLink("Runbook")
            .type("link")
            .icon("doc")
            .url("https://github.com/imagesec-exporter/imagesec-exporter/blob/main/docs/runbook.md")
            .target_blank(True)
        )
    )
    for title, panels in SECTIONS:
        builder = builder.with_row(dash.Row(title).collapsed(False))
        for panel in panels():
            builder = builder.with_panel(panel)
    model = json.loads(JSONEncoder().encode(builder.build()))
    for number, panel in enumerate(model["panels"], start=1):
        panel["id"] = number
    model["__inputs"] = [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "The Prometheus that scrapes imagesec-exporter",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    model["__requires"] = [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "11.6.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
        {"type": "panel", "id": "table", "name": "Table", "version": ""},
        {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
    ]
    return model


def render() -> str:
    """The dashboard as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
