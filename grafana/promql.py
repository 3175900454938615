"""Find the metric names a PromQL expression selects, to check them against the catalogue.

A small lexical scan, not a parser: Prometheus itself checks the syntax
(tests/test_prometheus_e2e.py); this only needs to find every metric name, which is any
identifier that is not inside a string, a label matcher block, a range or a grouping clause, is
not a keyword and is not called like a function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.metrics import MetricSpec

PROMETHEUS_SERIES = frozenset({"up"})
"""Series Prometheus writes itself for every target."""

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


def unknown_metrics(expr: str, catalogue: Mapping[str, MetricSpec]) -> set[str]:
    """Names ``expr`` selects that the exporter does not expose.

    Counters are exposed with ``_total``: the bare family name of a counter is unknown too.
    """
    unknown = set()
    for name in metric_names(expr) - PROMETHEUS_SERIES:
        spec = catalogue.get(name.removesuffix("_total"))
        if spec is None or spec.sample_name != name:
            unknown.add(name)
    return unknown
