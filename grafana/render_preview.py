"""Render docs/dashboard-preview.png: the dashboard's main panels, as a real Prometheus answers them.

Dev-only (needs matplotlib and Debian's prometheus): starts the demo exporter and a Prometheus
scraping it (grafana/prometheus_stack.py), lets them run, then draws the chosen panels of
grafana/imagesec-exporter.json from /api/v1/query and /api/v1/query_range answers::

    pip install matplotlib && python grafana/render_preview.py --minutes 20
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from prometheus_stack import Stack, expand, running_stack

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "grafana" / "imagesec-exporter.json").read_text())
OUTPUT = ROOT / "docs" / "dashboard-preview.png"

STATS = (
    "Images",
    "Images with critical or high vulnerabilities",
    "Malicious samples unhandled",
    "Baseline risk items (high)",
    "Scans failed or timed out",
    "Sources down",
)
TABLE = "Worst images: critical + high vulnerabilities"
ROWS = (
    (TABLE, "Vulnerabilities by severity"),
    ("Images by scan status", "Malicious samples by level and status"),
    ("API requests by action", "API errors by code"),
    ("Data age by source", "Scan progress"),
)

# Grafana's dark theme.
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLOURS = {
    "green": "#73bf69",
    "yellow": "#fade2a",
    "orange": "#ff9830",
    "red": "#f2495c",
    "blue": "#5794f2",
}
SERIES = ("#73bf69", "#fade2a", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ffb357")
# Fixed colours for label values that mean something, and the order to stack them in.
MEANING = {
    "critical": "#f2495c",
    "high": "#ff9830",
    "medium": "#fade2a",
    "low": "#73bf69",
    "succeeded": "#73bf69",
    "scanning": "#5794f2",
    "pending": "#8ab8ff",
    "not_scanned": "#8e8e8e",
    "failed": "#f2495c",
    "timeout": "#ff9830",
    "unknown": "#b877d9",
}
ORDER = list(MEANING)


def panel(title: str) -> dict[str, Any]:
    (found,) = [p for p in DASHBOARD["panels"] if p.get("title") == title and p["type"] != "row"]
    return dict(found)


def legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt in ("", "__auto"):
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(title, color=TEXT, loc="left", fontsize=10, fontweight="bold")
    ax.tick_params(colors=TEXT, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color(GRID)


def draw_stat(ax: Axes, stack: Stack, title: str) -> None:
    spec = panel(title)
    answer = stack.query(expand(spec["targets"][0]["expr"]))
    value = float(answer["data"]["result"][0]["value"][1]) if answer["data"]["result"] else 0.0
    steps = spec["fieldConfig"]["defaults"]["thresholds"]["steps"]
    colour = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            colour = step["color"]
    ax.set_facecolor(COLOURS.get(colour, colour))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.42, f"{value:g}", ha="center", va="center", fontsize=26, color="white")
    ax.text(
        0.5, 0.84, textwrap.fill(title, 24), ha="center", va="center", fontsize=8, color="white"
    )


def draw_table(ax: Axes, stack: Stack, title: str, rows: int = 10) -> None:
    spec = panel(title)
    style(ax, title)
    ax.set_xticks([])
    ax.set_yticks([])
    answer = stack.query(expand(spec["targets"][0]["expr"]))
    result = sorted(answer["data"]["result"], key=lambda s: -float(s["value"][1]))[:rows]
    columns = ("provider", "region", "repo_namespace", "repo", "tag", "critical + high")
    cells = [
        [s["metric"].get(c, "") for c in columns[:-1]] + [f"{float(s['value'][1]):g}"]
        for s in result
    ]
    table = ax.table(cellText=cells, colLabels=columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.scale(1, 1.25)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor(GRID)
        cell.set_facecolor(PANEL if row else "#22252b")
        cell.get_text().set_color(TEXT)


def _order(fmt: str, sample: dict[str, Any]) -> tuple[int, str]:
    """Stack severities and statuses in their natural order, everything else by legend."""
    labels = sample["metric"]
    meaning = labels.get("severity") or labels.get("status", "")
    rank = ORDER.index(meaning) if meaning in ORDER else len(ORDER)
    return rank, legend(fmt, labels)


def draw_graph(ax: Axes, stack: Stack, title: str, start: float, end: float) -> None:
    spec = panel(title)
    style(ax, title)
    target = spec["targets"][0]
    step = max(5.0, (end - start) / 240)
    answer = stack.query_range(expand(target["expr"]), start, end, step)
    series = sorted(
        answer["data"]["result"], key=lambda s: legend(target["legendFormat"], s["metric"])
    )
    stacked = spec["fieldConfig"]["defaults"]["custom"].get("stacking", {}).get("mode") == "normal"
    baseline: dict[float, float] = {}
    for index, sample in enumerate(series[:8]):
        name = legend(target["legendFormat"], sample["metric"]) or "value"
        meaning = sample["metric"].get("severity") or sample["metric"].get("status", "")
        colour = MEANING.get(meaning, SERIES[index % len(SERIES)])
        xs = [float(t) for t, _ in sample["values"]]
        ys = [float(v) for _, v in sample["values"]]
        when = [datetime.fromtimestamp(x) for x in xs]
        if stacked:
            low = [baseline.get(x, 0.0) for x in xs]
            high = [lo + y for lo, y in zip(low, ys, strict=True)]
            ax.fill_between(when, low, high, color=colour, alpha=0.55, label=name, linewidth=0)
            baseline.update(zip(xs, high, strict=True))
        else:
            ax.plot(when, ys, color=colour, linewidth=1.2, label=name)
    unit = spec["fieldConfig"]["defaults"].get("unit", "")
    ax.set_ylabel({"reqps": "req/s", "s": "seconds"}.get(unit, ""), color=TEXT, fontsize=7)
    ax.set_ylim(bottom=0)
    ax.grid(color=GRID, linewidth=0.5)
    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.legend(
        fontsize=6, loc="upper left", ncol=2, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT
    )


def render(stack: Stack, start: float, end: float, output: Path) -> None:
    figure = plt.figure(figsize=(16, 17), facecolor=BACKGROUND)
    grid = figure.add_gridspec(
        1 + len(ROWS), 6, height_ratios=(0.55, *[1.3] * len(ROWS)), hspace=0.45, wspace=0.3
    )
    figure.subplots_adjust(top=0.96, bottom=0.03, left=0.04, right=0.99)
    figure.suptitle(DASHBOARD["title"], color=TEXT, fontsize=14, x=0.04, y=0.985, ha="left")
    for column, title in enumerate(STATS):
        draw_stat(figure.add_subplot(grid[0, column]), stack, title)
    for row, titles in enumerate(ROWS, start=1):
        for half, title in enumerate(titles):
            ax = figure.add_subplot(grid[row, half * 3 : half * 3 + 3])
            if title == TABLE:
                draw_table(ax, stack, title)
            else:
                draw_graph(ax, stack, title, start, end)
    figure.text(
        0.99,
        0.005,
        "imagesec-exporter --demo scraped by Prometheus; queries from grafana/imagesec-exporter.json",
        color="#8e8e8e",
        fontsize=7,
        ha="right",
    )
    figure.savefig(output, dpi=80, facecolor=BACKGROUND, bbox_inches="tight")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20, help="how long to collect data")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    matplotlib.use("Agg")
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.stderr.write("prometheus not found: apt-get install prometheus\n")
        return 1
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_stack(Path(tmp), prometheus=prometheus, scrape_interval="5s") as stack,
    ):
        start = time.time()
        sys.stdout.write(f"collecting for {args.minutes:g} min from {stack.prometheus_url}\n")
        sys.stdout.flush()
        time.sleep(args.minutes * 60)
        render(stack, start, time.time(), args.output)
    sys.stdout.write(f"wrote {args.output}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
