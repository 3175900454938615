"""The landing page: a pure function of the snapshot and the time, for triage."""

from __future__ import annotations

import re

from exporter.landing import LandingLinks, ago, render, summary, when
from exporter.model import Snapshot, SourceData, SourceKey, SourceState

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def source(region: str, name: str, state: str, error: str | None = None) -> SourceState:
    key = SourceKey("aliyun", "prod", region, name)
    if state == "pending":
        return SourceState(key, 300.0)
    return SourceState(
        key,
        300.0,
        data=SourceData(),
        up=state == "up",
        attempted=True,
        last_success=NOW - 3 * 3600 - 120,
        last_attempt=NOW - 42,
        last_error=error,
    )


def snapshot() -> Snapshot:
    states = [
        source("cn-shanghai", "sas_images", "up"),
        source("cn-shanghai", "sas_baseline", "down", "<b>Throttling</b> code=Throttling.User"),
        source("ap-southeast-1", "sas_images", "pending"),
        source("ap-southeast-1", "sas_baseline", "up"),
        source("ap-southeast-1", "sas_malicious", "down", "connect failed"),
    ]
    return Snapshot({s.key: s for s in states})


def rows(page: str) -> list[str]:
    return re.findall(r'<tr class="(\w+)">', page)


def test_summary_counts_down_and_pending() -> None:
    assert summary(["up", "down", "pending", "up", "down"]) == (
        "2 of 5 sources down, 1 pending (first refresh running)"
    )
    assert summary(["up"] * 16) == "all 16 sources up"
    assert summary([]) == "no sources configured"


def test_failing_sources_come_first_marked_and_coloured() -> None:
    page = render(snapshot(), NOW).decode()
    assert rows(page) == ["down", "down", "pending", "up", "up"]
    assert page.count("✗ down") == 2 and page.count("✓ up") == 2 and "… pending" in page
    assert 'style="color:#c62828">✗ down' in page
    assert "2 of 5 sources down, 1 pending" in page


def test_times_are_absolute_and_relative() -> None:
    assert when(NOW, NOW - 3 * 3600 - 120) == "2027-01-15 04:58:00 UTC (3h2m ago)"
    assert when(NOW, None) == "never"
    assert [ago(NOW, NOW - s) for s in (5, 300, 7200, 90000)] == [
        "5s ago",
        "5m ago",
        "2h ago",
        "1d1h ago",
    ]
    page = render(snapshot(), NOW).decode()
    assert "2027-01-15 04:58:00 UTC<br><small>3h2m ago</small>" in page  # last success
    assert '<td title="2027-01-15 07:59:18 UTC">42s ago</td>' in page  # last attempt
    assert "page generated 2027-01-15 08:00:00 UTC" in page


def test_links_and_demo_banner() -> None:
    plain = render(snapshot(), NOW).decode()
    assert "Demo mode" not in plain
    assert "set <code>--web.dashboard-url</code>" in plain
    links = LandingLinks(
        telemetry_path="/probe", dashboard_url="https://grafana.example/d/x?a=1&b=2", demo=True
    )
    page = render(snapshot(), NOW, links).decode()
    assert "Demo mode" in page
    assert 'href="https://grafana.example/d/x?a=1&amp;b=2"' in page
    assert 'href="/probe"' in page
    assert "docs/runbook.md" in page and "#readme" in page


def test_everything_from_the_network_is_escaped() -> None:
    page = render(snapshot(), NOW).decode()
    assert "<b>Throttling</b>" not in page and "&lt;b&gt;Throttling&lt;/b&gt;" in page


def test_incomplete_and_expired_sources_say_so() -> None:
    from dataclasses import replace

    base = source("cn-shanghai", "sas_images", "up")
    partial = replace(base, data=SourceData(truncated="max_images"))
    expired = replace(source("cn-shanghai", "sas_baseline", "down", "x"), expired=True, data=None)
    page = render(Snapshot({partial.key: partial, expired.key: expired}), NOW).decode()
    assert "✓ up (incomplete: max_images)" in page
    assert "✗ down (data expired)" in page
