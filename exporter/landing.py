"""The landing page at ``/``: a pure function of the snapshot and the time, for triage.

A summary line ("3 of 16 sources down"), failing sources first, marked and coloured, absolute
and relative times, a banner in demo mode, and links to the metrics, the dashboard, the runbook
and the docs. No secrets: the page shows source identities, counts, times and error messages
(which never carry credentials). Every value is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter import __version__
from exporter.model import Snapshot, SourceState

PROJECT = "https://github.com/imagesec-exporter/imagesec-exporter"
RUNBOOK_URL = f"{PROJECT}/blob/main/docs/runbook.md"
DOCS_URL = f"{PROJECT}#readme"


@dataclass(frozen=True, slots=True)
class LandingLinks:
    """What the page links to and how it introduces itself."""

    telemetry_path: str = "/metrics"
    dashboard_url: str | None = None
    runbook_url: str = RUNBOOK_URL
    docs_url: str = DOCS_URL
    demo: bool = False


# state -> (sort order, mark, colour): failing first; the mark says it without colour too.
_STATES = {
    "down": (0, "✗ down", "#c62828"),
    "pending": (1, "… pending", "#b26a00"),
    "up": (2, "✓ up", "#2e7d32"),
}


def state_of(source: SourceState) -> str:
    return "up" if source.up else ("down" if source.attempted else "pending")


def ago(now: float, then: float) -> str:
    """``42s ago``, ``5m ago``, ``3h12m ago``, ``2d4h ago`` (``in 5s`` for a clock skew)."""
    seconds = int(now - then)
    if seconds < 0:
        return f"in {-seconds}s"
    if seconds < 60:
        return f"{seconds}s ago"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes}m ago"
    if hours < 24:
        return f"{hours}h{minutes % 60}m ago" if minutes % 60 else f"{hours}h ago"
    return f"{days}d{hours % 24}h ago" if hours % 24 else f"{days}d ago"


def when(now: float, then: float | None) -> str:
    """Absolute UTC time and relative age, e.g. ``2026-12-02 07:41:24 UTC (3m ago)``."""
    if then is None:
        return "never"
    stamp = datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({ago(now, then)})"


def summary(states: Sequence[str]) -> str:
    """``3 of 16 sources down, 1 pending`` or ``all 16 sources up``."""
    total, down, pending = len(states), states.count("down"), states.count("pending")
    if total == 0:
        return "no sources configured"
    if not down and not pending:
        return f"all {total} sources up"
    parts = [f"{down} of {total} sources down"] if down else [f"0 of {total} sources down"]
    if pending:
        parts.append(f"{pending} pending (first refresh running)")
    return ", ".join(parts)


def _cell(value: object, attrs: str = "") -> str:
    return f"<td{attrs}>{html.escape(str(value))}</td>"


def _age_cell(now: float, then: float | None) -> str:
    """The age, with the absolute time as its tooltip."""
    if then is None:
        return "<td>never</td>"
    stamp, _, age = when(now, then).partition(" (")
    return f'<td title="{html.escape(stamp)}">{html.escape(age[:-1])}</td>'


def _time_cell(now: float, then: float | None) -> str:
    """Absolute time, and the age under it."""
    if then is None:
        return "<td>never</td>"
    stamp, _, age = when(now, then).partition(" (")
    return f'<td class="time">{html.escape(stamp)}<br><small>{html.escape(age[:-1])}</small></td>'


def render(snapshot: Snapshot, now: float, links: LandingLinks | None = None) -> bytes:
    """The HTML of ``/`` for ``snapshot`` at time ``now`` (Unix seconds)."""
    links = links or LandingLinks()
    sources = sorted(snapshot.sources.values(), key=lambda s: (_STATES[state_of(s)][0], s.key))
    states = [state_of(s) for s in sources]
    rows = []
    for source, state in zip(sources, states, strict=True):
        _, mark, colour = _STATES[state]
        notes = []
        if source.data is not None and source.data.truncated:
            notes.append(f"incomplete: {source.data.truncated}")
        elif source.data is not None and source.data.completeness < 1:
            notes.append(f"pass {source.data.completeness:.0%} done")
        if source.expired:
            notes.append("data expired")
        if notes:
            mark += f" ({', '.join(notes)})"
        images = len(source.data.images) if source.data else 0
        key = source.key
        rows.append(
            f'<tr class="{state}">'
            + "".join(_cell(v) for v in (key.provider, key.account, key.region, key.source))
            + _cell(mark, f' class="state" style="color:{colour}"')
            + _cell(images, ' class="num"')
            + _time_cell(now, source.last_success)
            + _age_cell(now, source.last_attempt)
            + _cell(f"{source.interval:g}s", ' class="num"')
            + _cell(source.last_error or "", ' class="error"')
            + "</tr>"
        )
    down = states.count("down")
    banner_colour = "#c62828" if down else ("#b26a00" if "pending" in states else "#2e7d32")
    e = html.escape
    dashboard = (
        f'<a href="{e(links.dashboard_url)}">Grafana dashboard</a>'
        if links.dashboard_url
        else "Grafana dashboard: set <code>--web.dashboard-url</code> to link it here"
    )
    demo = (
        '<p class="demo"><strong>Demo mode:</strong> these sources are the built-in simulated '
        "Alibaba Cloud Sas and Tencent Cloud TCSS endpoints, not real cloud accounts.</p>"
        if links.demo
        else ""
    )
    generated = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>imagesec-exporter</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}}
h1{{margin-bottom:.2em}} .sub{{color:#555;margin-top:0}}
.summary{{font-size:1.3em;font-weight:600;color:{banner_colour};margin:.6em 0}}
.demo{{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em;border-radius:4px}}
nav a{{margin-right:1.2em}}
table{{border-collapse:collapse;margin-top:.8em;font-size:.88em}}
td,th{{padding:.3em .6em;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}}
td{{white-space:nowrap}} th{{background:#f3f3f3}} small{{color:#555}} .num{{text-align:right}} .state{{font-weight:600;white-space:nowrap}}
tr.down{{background:#fdecea}} tr.pending{{background:#fff8e1}}
.error{{color:#8a1c1c;white-space:normal;min-width:16em;word-break:break-word}}
</style></head>
<body><h1>imagesec-exporter</h1>
<p class="sub">version {e(__version__)} · container-image security findings of Alibaba Cloud Sas
and Tencent Cloud TCSS, cached and refreshed in the background · page generated {generated}</p>
{demo}
<p class="summary">{e(summary(states))}</p>
<nav><a href="{e(links.telemetry_path)}">Metrics ({e(links.telemetry_path)})</a>{dashboard}
<a href="{e(links.runbook_url)}">Runbook</a><a href="{e(links.docs_url)}">Docs</a>
<a href="/-/healthy">/-/healthy</a><a href="/-/ready">/-/ready</a></nav>
<table><tr><th>provider</th><th>account</th><th>region</th><th>source</th><th>state</th>
<th>images</th><th>last success</th><th>last attempt</th><th>interval</th><th>last error</th></tr>
{"".join(rows)}
</table></body></html>
"""
    return page.encode()
