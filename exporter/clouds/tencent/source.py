"""TCSS collectors: turn TCSS answers into provider-neutral samples.

The two collectors split the catalogue so that no series comes from both::

    tcss_images        vulnerabilities, vulnerabilities_by_severity, scan_status,
                       last_scan_timestamp_seconds, size_bytes, created_timestamp_seconds,
                       hosts, containers
    tcss_image_detail  info (digest, os, architecture), risks, sensitive_info_items,
                       malicious_samples{level="unknown",status="unknown"},
                       scan_progress_ratio, scan_error

``imagesec_image_info`` comes from the detail only: the list has no digest or architecture,
and two info series with different labels for one image would break ``group_left`` joins.
TCSS ``VirusCnt`` has no level or status breakdown, so it is exported as
``imagesec_image_malicious_samples{level="unknown",status="unknown"}``: sums over level and
status work across providers, and nothing is guessed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cachetools import TTLCache

from exporter.clouds.tencent.api import (
    PROVIDER,
    TcssClient,
    describe_asset_image_detail,
    describe_asset_image_list,
)
from exporter.clouds.tencent.schemas import ImageDetail, ImagesInfo
from exporter.errors import PayloadError, RequestError, SourceError
from exporter.metrics import SCAN_STATUSES, SEVERITIES
from exporter.model import (
    ImageKey,
    ImageRef,
    Sample,
    SourceData,
    SourceKey,
    optional,
    stateset,
)
from exporter.normalise import split_image_name, tcss_scan_status
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

LIST_ACTION = "DescribeAssetImageList"
DETAIL_ACTION = "DescribeAssetImageDetail"

# Codes meaning the image is gone (deleted between the list and the detail call): the image
# is skipped for this refresh, not a failure of the source.
VANISHED_CODES = frozenset(
    {"ResourceNotFound", "InvalidParameterValue.DataNotFound", "ResourceNotFound.DataNotFound"}
)

# TCSS has no overall-progress field, and no level or status for VirusCnt (see module doc).
MALWARE_UNKNOWN = ("unknown", "unknown")


def image_key(image_name: str, image_id: str, account: str, region: str) -> ImageKey:
    """Identity of a TCSS image: repo path and tag from ImageName, the source's region."""
    namespace, repo, tag = split_image_name(image_name)
    return ImageKey(
        provider=PROVIDER,
        account=account,
        region=region,
        repo_namespace=namespace,
        repo=repo,
        tag=tag,
        image_id=image_id,
    )


def scan_marker(row: ImagesInfo) -> str:
    """Changes whenever the image's scan result changes; keys the detail cache."""
    return f"{row.scan_time}|{row.scan_status}|{row.vul_cnt}|{row.risk_cnt}|{row.virus_cnt}"


def list_samples(row: ImagesInfo, key: ImageKey) -> list[Sample]:
    """Every per-image sample DescribeAssetImageList supports (see the module doc)."""
    samples = optional("imagesec_image_vulnerabilities", key, row.vul_cnt)
    by_severity = (
        row.critical_level_vul_cnt,
        row.high_level_vul_cnt,
        row.medium_level_vul_cnt,
        row.low_level_vul_cnt,
    )
    for severity, count in zip(SEVERITIES, by_severity, strict=True):
        samples += optional("imagesec_image_vulnerabilities_by_severity", key, count, severity)
    samples += stateset(
        "imagesec_image_scan_status", key, SCAN_STATUSES, tcss_scan_status(row.scan_status)
    )
    samples += optional("imagesec_image_last_scan_timestamp_seconds", key, row.scan_time)
    samples += optional("imagesec_image_size_bytes", key, row.size)
    samples += optional("imagesec_image_created_timestamp_seconds", key, row.create_time)
    samples += optional("imagesec_image_hosts", key, row.host_cnt)
    samples += optional("imagesec_image_containers", key, row.container_cnt)
    return samples


def _error_flag(*messages: str | None) -> float | None:
    """1 if any scanner error string is non-empty, 0 if all are empty, None if none was sent."""
    given = [m for m in messages if m is not None]
    if not given:
        return None
    return 1.0 if any(m.strip() for m in given) else 0.0


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100.0


def detail_samples(detail: ImageDetail, key: ImageKey) -> list[Sample]:
    """Every per-image sample DescribeAssetImageDetail adds to the list (see the module doc).

    ``scan="overall"`` of the scan error is the backend's ``ScanError`` or the agent's
    ``AgentError``; TCSS reports no overall progress, so none is exported.
    """
    info = (detail.image_digest, "", "", detail.os_name, detail.architecture)
    samples = [Sample("imagesec_image_info", key, 1.0, info)]
    samples += optional("imagesec_image_risks", key, detail.risk_cnt)
    samples += optional("imagesec_image_sensitive_info_items", key, detail.sensitive_info_cnt)
    samples += optional("imagesec_image_malicious_samples", key, detail.virus_cnt, *MALWARE_UNKNOWN)
    progress = {
        "vulnerability": detail.scan_vul_progress,
        "malware": detail.scan_virus_progress,
        "risk": detail.scan_risk_progress,
    }
    for scan, percent in progress.items():
        samples += optional("imagesec_image_scan_progress_ratio", key, _ratio(percent), scan)
    errors = {
        "overall": _error_flag(detail.scan_error, detail.agent_error),
        "vulnerability": _error_flag(detail.scan_vul_error),
        "malware": _error_flag(detail.scan_virus_error),
        "risk": _error_flag(detail.scan_risk_error),
    }
    for scan, flag in errors.items():
        samples += optional("imagesec_image_scan_error", key, flag, scan)
    return samples


class TcssImagesSource:
    """tcss_images: the image inventory (DescribeAssetImageList)."""

    def __init__(self, key: SourceKey, interval: float, client: TcssClient) -> None:
        self.key = key
        self.interval = interval
        self.depends_on: SourceKey | None = None
        self.client = client
        client.declare(LIST_ACTION)

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        rows = await describe_asset_image_list(self.client)
        samples: list[Sample] = []
        images: list[ImageRef] = []
        for row in rows:
            key = image_key(row.image_name, row.image_id, self.key.account, self.key.region)
            samples += list_samples(row, key)
            images.append(ImageRef(key, row.image_id, scan_marker(row), row.vul_cnt))
        return SourceData(samples=tuple(samples), images=tuple(images))


CacheKey = tuple[str, str]
"""(ImageID, scan marker)."""


class TcssImageDetailSource:
    """tcss_image_detail: DescribeAssetImageDetail for every image of the inventory.

    Details are cached by (ImageID, scan marker), so a steady-state refresh only calls the API
    for images whose scan result changed. Details of a scan still running are not cached (their
    progress moves while the marker does not). Entries also expire after ``cache_ttl`` seconds,
    and entries of images no longer listed are dropped at each refresh. The cache belongs to
    this source alone (cachetools is not thread-safe; only the refresher task touches it).
    """

    def __init__(
        self,
        key: SourceKey,
        interval: float,
        client: TcssClient,
        *,
        depends_on: SourceKey | None,
        telemetry: Telemetry,
        concurrency: int = 8,
        cache_ttl: float = 6 * 3600.0,
        cache_size: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.interval = interval
        self.depends_on = depends_on
        self.client = client
        self.concurrency = concurrency
        self._telemetry = telemetry
        self._cache: TTLCache[CacheKey, ImageDetail] = TTLCache(
            maxsize=cache_size, ttl=cache_ttl, timer=timer
        )
        client.declare(DETAIL_ACTION)
        for result in ("hit", "miss"):
            telemetry.declare("imagesec_detail_cache_requests", (*key.labels(), result))

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        if upstream is None:
            raise SourceError(
                "no image inventory yet", provider=PROVIDER, code="upstream_unavailable"
            )
        refs = {(ref.native_id, ref.scan_marker): ref for ref in upstream.images}
        for stale in [k for k in list(self._cache.keys()) if k not in refs]:
            self._cache.pop(stale, None)
        details: dict[CacheKey, ImageDetail] = {}
        misses: list[CacheKey] = []
        for cache_key in refs:
            cached = self._cache.get(cache_key)
            if cached is None:
                misses.append(cache_key)
            else:
                details[cache_key] = cached
        self._count("hit", len(details))
        self._count("miss", len(misses))
        if misses:
            await self._fetch_all(misses, details)
        samples: list[Sample] = []
        images: list[ImageRef] = []
        for cache_key, ref in refs.items():
            detail = details.get(cache_key)
            if detail is not None:
                samples += detail_samples(detail, ref.key)
                images.append(ref)
        return SourceData(samples=tuple(samples), images=tuple(images))

    def _count(self, result: str, amount: int) -> None:
        labels = (*self.key.labels(), result)
        self._telemetry.inc("imagesec_detail_cache_requests", labels, float(amount))

    async def _fetch_all(self, misses: list[CacheKey], out: dict[CacheKey, ImageDetail]) -> None:
        """Fetch ``misses`` concurrently (bounded; the client's token bucket paces them)."""
        semaphore = asyncio.Semaphore(self.concurrency)

        async def fetch(cache_key: CacheKey) -> None:
            async with semaphore:
                detail = await self._fetch(cache_key[0])
            if detail is None:
                return
            out[cache_key] = detail
            if tcss_scan_status(detail.scan_status) != "scanning":
                self._cache[cache_key] = detail

        try:
            async with asyncio.TaskGroup() as group:
                for cache_key in misses:
                    group.create_task(fetch(cache_key))
        except* SourceError as failed:
            # The first failure fails the refresh; details fetched so far stay cached.
            raise failed.exceptions[0] from None

    async def _fetch(self, image_id: str) -> ImageDetail | None:
        try:
            return await describe_asset_image_detail(self.client, image_id)
        except RequestError as err:
            if err.code not in VANISHED_CODES:
                raise
            log.info(
                "image vanished between list and detail provider=tencent account=%s "
                "region=%s image_id=%s code=%s",
                self.key.account,
                self.key.region,
                image_id,
                err.code,
            )
        except PayloadError as err:
            # Already counted (invalid row or bad_payload); the image is retried next refresh.
            log.warning(
                "skipped image detail provider=tencent account=%s region=%s image_id=%s code=%s",
                self.key.account,
                self.key.region,
                image_id,
                err.code,
            )
        return None
