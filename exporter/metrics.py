"""The metric catalogue: every metric's name, type, HELP and labels, in one table.

The collector, the self-metrics, the docs, the alert rules and the dashboard are all checked
against this table (tests/test_metrics_catalogue.py).

Per-image series carry the identity labels ``IMAGE_LABELS`` first, then their own extra labels::

    # HELP imagesec_image_vulnerabilities Vulnerabilities the scanner reports for the image (cached, refreshed every 300s).
    # TYPE imagesec_image_vulnerabilities gauge
    imagesec_image_vulnerabilities{provider="aliyun",account="prod",region="cn-hangzhou",repo_namespace="shop",repo="cart",tag="1.4.2",image_id="12f8..."} 7.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """Exposition type of a metric family."""

    GAUGE = "gauge"
    COUNTER = "counter"


IMAGE_LABELS: tuple[str, ...] = (
    "provider",
    "account",
    "region",
    "repo_namespace",
    "repo",
    "tag",
    "image_id",
)
"""Identity of one image. ``repo_namespace``, not ``namespace``: Kubernetes SD adds its own."""

SOURCE_LABELS: tuple[str, ...] = ("provider", "account", "region", "source")
"""Identity of one source: a collector run against one (account, region)."""

API_LABELS: tuple[str, ...] = ("provider", "account", "region", "action")

INFO_LABELS: tuple[str, ...] = (
    "digest",
    "registry_type",
    "repo_type",
    "os",
    "architecture",
    "image_region",
)
"""``region`` on every series is the configured source region (as on imagesec_up); the image's
own vendor region (Sas RegionId of the registry) is ``image_region``, on imagesec_image_info only."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family of the catalogue."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    per_image: bool = False

    @property
    def sample_name(self) -> str:
        """The name samples carry in the text exposition (counters end in ``_total``)."""
        return f"{self.name}_total" if self.kind is Kind.COUNTER else self.name


def _image(name: str, help_: str, *extra: str) -> MetricSpec:
    return MetricSpec(name, Kind.GAUGE, help_, IMAGE_LABELS + extra, per_image=True)


# Label vocabularies (normalisation tables live in exporter/normalise.py and the README).
SEVERITIES = ("critical", "high", "medium", "low")
BASELINE_SEVERITIES = ("high", "medium", "low")
# "unknown" level and status: TCSS VirusCnt gives no breakdown by level or handling status, so
# TCSS counts are exported as level="unknown",status="unknown" rather than guessed.
MALWARE_LEVELS = ("serious", "suspicious", "remind", "unknown")
MALWARE_STATUSES = ("unhandled", "handled", "verifying", "whitelisted", "unknown")
SCANS = ("overall", "vulnerability", "malware", "risk")
SCAN_STATUSES = ("not_scanned", "pending", "scanning", "succeeded", "failed", "timeout", "unknown")
IN_USE_FINDINGS = ("baseline", "new_suspicious", "vulnerability")
# Why an inventory left an image out (config filters and bounds, exporter/filters.py).
SKIP_REASONS = ("repo_filter", "tag_filter", "newest_tags", "max_images")
LISTING_SOURCES = ("sas_images", "sas_image_risk", "tcss_images")
"""The collectors that list images themselves (the account's image filters apply to them)."""
REGISTRATION_STATUSES = ("in_sas", "not_in_sas", "unknown")


IMAGE_METRICS: tuple[MetricSpec, ...] = (
    _image(
        "imagesec_image_info",
        "Static properties of the image; always 1",
        *INFO_LABELS,
    ),
    _image(
        "imagesec_image_vulnerabilities",
        "Vulnerabilities the scanner reports for the image (Sas VulCount, TCSS VulCnt)",
    ),
    _image(
        "imagesec_image_vulnerabilities_by_severity",
        "Vulnerabilities by severity (TCSS *LevelVulCnt; Sas: fix priority asap=high, "
        "later=medium, nntf=low)",
        "severity",
    ),
    _image(
        "imagesec_image_baseline_risk_items",
        "Baseline check risk items of the image by severity (Sas DescribeImageBaselineCheckResult)",
        "severity",
    ),
    _image(
        "imagesec_image_malicious_samples",
        "Malicious samples found in the image by level and handling status, only where there "
        "are some (TCSS VirusCnt has no breakdown: level and status unknown)",
        "level",
        "status",
    ),
    _image(
        "imagesec_image_malicious_samples_all",
        "Malicious samples found in the image over all levels and statuses; present for every "
        "image the malware collector covers, 0 when none",
    ),
    _image(
        "imagesec_image_alerts",
        "Security alerts raised on the image (Sas AlarmCount)",
    ),
    _image(
        "imagesec_image_risks",
        "Risky behaviours found in the image (TCSS RiskCnt)",
    ),
    _image(
        "imagesec_image_sensitive_info_items",
        "Sensitive information items found in the image (TCSS SensitiveInfoCnt)",
    ),
    _image(
        "imagesec_image_scan_progress_ratio",
        "Scan progress of the image, 0 to 1, overall and per scanner",
        "scan",
    ),
    _image(
        "imagesec_image_scan_status",
        "Normalised scan status of the image: one series, the current status, always 1",
        "status",
    ),
    _image(
        "imagesec_image_scan_error",
        "1 if the scanner reported an error for the image's last scan, else 0",
        "scan",
    ),
    _image(
        "imagesec_image_last_scan_timestamp_seconds",
        "Unix time of the image's last completed scan",
    ),
    _image(
        "imagesec_image_size_bytes",
        "Size of the image in bytes",
    ),
    _image(
        "imagesec_image_created_timestamp_seconds",
        "Unix time the image was created",
    ),
    _image(
        "imagesec_image_deployed",
        "1 if the image is deployed (Sas Deployed), else 0",
    ),
    _image(
        "imagesec_image_hosts",
        "Hosts that hold the image (TCSS HostCnt)",
    ),
    _image(
        "imagesec_image_containers",
        "Containers running the image (TCSS ContainerCnt)",
    ),
    _image(
        "imagesec_image_in_use_findings",
        "Security statistics of an image in use in a cluster (Sas ListImageRisk Statistics)",
        "finding",
    ),
    _image(
        "imagesec_image_registration_status",
        "Whether the image in use is registered with Sas (ListImageRisk ImageAccessType): one "
        "series, the current status, always 1",
        "status",
    ),
)

SELF_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "imagesec_up",
        Kind.GAUGE,
        "1 if the last refresh of the source succeeded, else 0",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_last_refresh_success_timestamp_seconds",
        Kind.GAUGE,
        "Unix time of the source's last successful refresh (0 if none yet)",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_refresh_duration_seconds",
        Kind.GAUGE,
        "Duration of the source's last refresh attempt",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_refresh_interval_seconds",
        Kind.GAUGE,
        "Configured refresh interval of the source",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_source_images",
        Kind.GAUGE,
        "Images in the source's last good data",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_source_pass_completeness_ratio",
        Kind.GAUGE,
        "Share of the source's images its current or last pass has looked up, 0 to 1: below 1 "
        "while a first pass is under way, or after a pass the timeout stopped (the next "
        "attempt resumes it); 1 once a pass completed (0 before any data)",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_images_skipped",
        Kind.GAUGE,
        "Images the inventory listed but the exporter left out in its last pass, by reason "
        "(repo_filter, tag_filter, newest_tags, max_images)",
        (*SOURCE_LABELS, "reason"),
    ),
    MetricSpec(
        "imagesec_source_truncated",
        Kind.GAUGE,
        "1 if the source's last good data is known to be incomplete (its listing stopped at "
        "the page cap, or the list changed under the walk and rows were missed), else 0",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_source_expired",
        Kind.GAUGE,
        "1 if the source's last good data was dropped for being older than refresh.max_age, else 0",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_detail_lookup_failures",
        Kind.COUNTER,
        "Per-image detail lookups that failed; the image keeps its last good detail",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_sanitised_strings",
        Kind.COUNTER,
        "Strings from the cloud APIs changed before use, by reason (replaced: unencodable or "
        "control characters; truncated: longer than 256 characters)",
        ("reason",),
    ),
    MetricSpec(
        "imagesec_refresh_failures",
        Kind.COUNTER,
        "Failed refreshes of the source, by error code",
        (*SOURCE_LABELS, "code"),
    ),
    MetricSpec(
        "imagesec_invalid_rows",
        Kind.COUNTER,
        "Rows of API answers skipped because they did not match the documented shape",
        API_LABELS,
    ),
    MetricSpec(
        "imagesec_api_requests",
        Kind.COUNTER,
        "HTTP requests sent to the cloud APIs (each retry counts)",
        API_LABELS,
    ),
    MetricSpec(
        "imagesec_api_request_errors",
        Kind.COUNTER,
        "Failed cloud API requests by error code: the vendor's code if known, else other; or "
        "timeout, connect, http_5xx, http_4xx, bad_payload, response_too_large",
        (*API_LABELS, "code"),
    ),
    MetricSpec(
        "imagesec_detail_cache_requests",
        Kind.COUNTER,
        "Per-image detail lookups by cache result (hit, miss)",
        (*SOURCE_LABELS, "result"),
    ),
    MetricSpec(
        "imagesec_http_rejected_requests",
        Kind.COUNTER,
        "HTTP requests or connections the exporter refused, by reason (max_connections, "
        "max_requests, rate_limit, unauthorized, password_too_long, forbidden_san, write_timeout, "
        "accept_paused)",
        ("reason",),
    ),
    MetricSpec(
        "imagesec_http_connections",
        Kind.GAUGE,
        "Established HTTP connections to the exporter",
        (),
    ),
    MetricSpec(
        "imagesec_config_last_reload_successful",
        Kind.GAUGE,
        "1 if the last reload of the file (config, web_config) succeeded, else 0",
        ("file",),
    ),
    MetricSpec(
        "imagesec_config_last_reload_success_timestamp_seconds",
        Kind.GAUGE,
        "Unix time of the last successful load of the file (config, web_config)",
        ("file",),
    ),
    MetricSpec(
        "imagesec_exposition_renders",
        Kind.COUNTER,
        "Renders of the source's part of the exposition (one per change of its data)",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_exposition_render_seconds",
        Kind.COUNTER,
        "CPU time spent rendering the source's part of the exposition",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_exposition_render_failures",
        Kind.COUNTER,
        "Renders of the source's part that failed (its part is left out until one succeeds)",
        SOURCE_LABELS,
    ),
    MetricSpec(
        "imagesec_credential_refresh_failures",
        Kind.COUNTER,
        "Failed fetches or renewals of an account's credentials (STS, instance metadata, "
        "files), by code",
        ("provider", "account", "code"),
    ),
    MetricSpec(
        "imagesec_credential_expiry_timestamp_seconds",
        Kind.GAUGE,
        "Unix time the account's current temporary credentials expire (absent for long-lived keys)",
        ("provider", "account"),
    ),
    MetricSpec(
        "imagesec_build_info",
        Kind.GAUGE,
        "Build information of the exporter; always 1",
        ("version", "python_version"),
    ),
)

CATALOGUE: dict[str, MetricSpec] = {m.name: m for m in IMAGE_METRICS + SELF_METRICS}
"""Every metric family the exporter can emit, by name."""


def metric_selection(allowlist: str | None, denylist: str | None) -> frozenset[str]:
    """The families to expose under ``--metric-allowlist`` or ``--metric-denylist``.

    As kube-state-metrics: each is a comma-separated list of metric names or regular
    expressions matched against the whole family name (``imagesec_image_.*``; the ``_total``
    of a counter may be given or left out). At most one of the two; a pattern that is not a
    valid expression, or matches no metric of the catalogue, is an error (ValueError), so a
    typo cannot silently expose or hide everything.
    """
    if allowlist and denylist:
        raise ValueError("--metric-allowlist and --metric-denylist are mutually exclusive")
    given = allowlist or denylist
    if not given:
        return frozenset(CATALOGUE)
    selected: set[str] = set()
    for pattern in (p.strip() for p in given.split(",")):
        if not pattern:
            continue
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"bad metric pattern {pattern!r}: {err}") from None
        matched = {
            name
            for name, spec in CATALOGUE.items()
            if regex.fullmatch(name) or regex.fullmatch(spec.sample_name)
        }
        if not matched:
            raise ValueError(f"metric pattern {pattern!r} matches no metric")
        selected |= matched
    return frozenset(selected if allowlist else set(CATALOGUE) - selected)
