"""Find the metric names a PromQL expression selects, to check them against the catalogue.

A small lexical scan, not a parser: Prometheus itself checks the syntax
(tests/test_prometheus_e2e.py); this only needs to find every metric name, which is any
identifier that is not inside a string, a label matcher block, a range or a grouping clause, is
not a keyword and is not called like a function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from exporter.metrics import MetricSpec

PROMETHEUS_SERIES = frozenset({"up", "ALERTS"})
"""Series Prometheus writes itself: ``up`` for every target, ``ALERTS`` for every alert."""

RULES = Path(__file__).resolve().parent.parent / "alerts" / "imagesec.rules.yml"


def recorded_metrics(rules: Path = RULES) -> dict[str, str]:
    """The recording rules of ``alerts/imagesec.rules.yml``: {recorded name: expression}."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# An identifier that does not continue a number, a duration or a Grafana $variable.
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)


def metric_names(expr: str) -> set[str]:
    """Return the metric names that ``expr`` selects, such as ``{"up"}`` for ``up == 0``."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if match.group().lower() in _KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(match.group())
    return names


def unknown_metrics(
    expr: str, catalogue: Mapping[str, MetricSpec], recorded: Mapping[str, str] | None = None
) -> set[str]:
    """Names ``expr`` selects that neither the exporter nor a recording rule of ``recorded``
    provides (whose own expressions must use only catalogued metrics: checked in test_alerts).

    Counters are exposed with ``_total``: the bare family name of a counter is unknown too.
    """
    unknown = set()
    for name in metric_names(expr) - PROMETHEUS_SERIES - set(recorded or ()):
        spec = catalogue.get(name.removesuffix("_total"))
        if spec is None or spec.sample_name != name:
            unknown.add(name)
    return unknown
