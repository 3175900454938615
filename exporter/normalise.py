"""Vendor vocabularies mapped onto the exporter's lower-case label vocabularies (one table each).

These tables are reproduced in the README; tests check that every mapped value is in the
catalogue's vocabulary (exporter/metrics.py). Unknown vendor values map to ``unknown`` rather than
to a guess.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone

# -- strings from the network --------------------------------------------------------------

MAX_LABEL = 256
"""Characters kept of a string from the network (a label value, an OS name...)."""

# Lone surrogates (valid in JSON "\\udc80" but not encodable as UTF-8) and the C0 controls
# other than tab/newline (they break logs and HTML, not the exposition, but carry nothing).
_UNFIT = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class CleanStats:
    """How many strings ``clean_label`` changed, by reason (``replaced``, ``truncated``).

    Module state because cleaning happens inside response models, far from any telemetry
    object; the collector exports it as ``imagesec_sanitised_strings_total{reason}``.
    """

    REASONS = ("replaced", "truncated")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.REASONS, 0)

    def inc(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


clean_stats = CleanStats()


def clean_label(value: str, limit: int = MAX_LABEL) -> str:
    """``value`` made safe for a record: every code point encodable as UTF-8 (lone surrogates
    and control characters become U+FFFD) and at most ``limit`` characters. Changes are
    counted in ``clean_stats``."""
    if value.isascii() and value.isprintable() and len(value) <= limit:
        return value  # the common case, at C speed
    cleaned = _UNFIT.sub("\ufffd", value)
    if cleaned != value:
        clean_stats.inc("replaced")
    if len(cleaned) > limit:
        clean_stats.inc("truncated")
        cleaned = cleaned[: limit - 1] + "\u2026"
    return cleaned


# Sas DescribeImageInstances ScaStatus (seed 000).
SAS_SCAN_STATUS: dict[str, str] = {
    "INIT": "pending",
    "START": "scanning",
    "MESSAGE_SEND": "scanning",
    "START_RUN": "scanning",
    "DOWNLOAD": "scanning",
    "PRE_ANALYZER": "scanning",
    "PRE_ANALYZER_SUCCESS": "scanning",
    "WEB_SHELL_ANALYZER": "scanning",
    "CVE_ANALYZER": "scanning",
    "BIN_ANALYZER": "scanning",
    "OTHER_ANALYZER": "scanning",
    "SUCCESS": "succeeded",
    "FAIL": "failed",
    "TIMEOUT": "timeout",
}

# TCSS ScanStatus: the list API's filter values, and the upper-case form of seed 003's sample.
TCSS_SCAN_STATUS: dict[str, str] = {
    "notscan": "not_scanned",
    "scanning": "scanning",
    "scanned": "succeeded",
    "scanerr": "failed",
}

# Sas DescribeImageVulList Necessity is a fix priority, not a CVSS severity.
SAS_NECESSITY_SEVERITY: dict[str, str] = {"asap": "high", "later": "medium", "nntf": "low"}

# Sas DescribeImageBaselineCheckResult counts: field -> severity label.
SAS_BASELINE_FIELDS: dict[str, str] = {
    "high_risk_item_count": "high",
    "middle_risk_item_count": "medium",
    "low_risk_item_count": "low",
}

# Sas DescribeAffectedMaliciousFileImages Status (int) -> status label; Level kept as sent.
SAS_MALWARE_STATUS: dict[int, str] = {
    0: "unhandled",
    1: "handled",
    2: "verifying",
    3: "whitelisted",
}

# Sas ListImageRisk ImageAccessType.
SAS_REGISTRATION: dict[str, str] = {"IN_SAS": "in_sas", "NOT_IN_SAS": "not_in_sas"}

# TCSS times are "YYYY-MM-DD HH:MM:SS" in Beijing time (the console's zone; the API says none).
TCSS_TIMEZONE = timezone(timedelta(hours=8))


def sas_scan_status(value: str | None) -> str:
    return SAS_SCAN_STATUS.get((value or "").upper(), "unknown")


def tcss_scan_status(value: str | None) -> str:
    return TCSS_SCAN_STATUS.get((value or "").lower(), "unknown")


def tcss_time(value: str | None) -> float | None:
    """Parse a TCSS time string (Beijing time) into Unix seconds; None if empty or zero."""
    if not value or value.startswith("0000"):
        return None
    parsed = datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TCSS_TIMEZONE)
    return parsed.timestamp()


def split_image_name(name: str) -> tuple[str, str, str]:
    """Split ``[registry/]namespace/repo[:tag][@digest]`` into (namespace, repo, tag).

    The registry host (first segment with a dot or colon, or ``localhost``) is dropped; the
    remaining path's last segment is the repo, everything before it the namespace. A missing tag
    is ``latest``, as docker resolves it.
    """
    name = name.split("@", 1)[0]
    path, tag = name, "latest"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        path, tag = name[:colon], name[colon + 1 :] or "latest"
    parts = [p for p in path.split("/") if p]
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if not parts:
        return "", "", tag
    return "/".join(parts[:-1]), parts[-1], tag
