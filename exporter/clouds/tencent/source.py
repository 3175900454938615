"""TCSS collectors: turn TCSS answers into provider-neutral samples.

The two collectors split the catalogue so that no series comes from both::

    tcss_images        vulnerabilities, vulnerabilities_by_severity, scan_status,
                       last_scan_timestamp_seconds, size_bytes, created_timestamp_seconds,
                       hosts, containers
    tcss_image_detail  info (digest, os, architecture), risks, sensitive_info_items,
                       malicious_samples_all, malicious_samples{level="unknown",
                       status="unknown"} (only when VirusCnt > 0),
                       scan_progress_ratio, scan_error

``imagesec_image_info`` comes from the detail only: the list has no digest or architecture,
and two info series with different labels for one image would break ``group_left`` joins.
TCSS ``VirusCnt`` has no level or status breakdown, so it is exported as
``imagesec_image_malicious_samples{level="unknown",status="unknown"}``: sums over level and
status work across providers, and nothing is guessed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from exporter.clouds.fanout import DEFAULT_PUBLISH_EVERY, DetailFanOut
from exporter.clouds.tencent.api import (
    PROVIDER,
    TcssClient,
    describe_asset_image_detail,
    describe_asset_image_list,
)
from exporter.clouds.tencent.schemas import DetailRow, ImagesInfoRow
from exporter.errors import RequestError, SourceError
from exporter.filters import NO_FILTER, ImageFilter, Listed
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

if TYPE_CHECKING:
    from exporter.refresh import Partial

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


def image_key(path: tuple[str, str, str], image_id: str, account: str, region: str) -> ImageKey:
    """Identity of a TCSS image: ``path`` is ImageName's (namespace, repo, tag)
    (``split_image_name``); the region is the source's."""
    namespace, repo, tag = path
    intern = sys.intern  # one string per distinct label value across the TCSS sources
    return ImageKey(
        provider=PROVIDER,
        account=account,
        region=region,
        repo_namespace=intern(namespace),
        repo=intern(repo),
        tag=intern(tag),
        image_id=intern(image_id),
    )


def scan_marker(row: ImagesInfoRow) -> str:
    """Changes when the image's scan result can have changed (finished scan time, counts).

    Not ``ScanStatus``: that is the image's stage (``ImageRef.stage``), which the detail
    cache follows separately, at most once per floor interval.
    """
    return f"{row.scan_time}|{row.vul_cnt}|{row.risk_cnt}|{row.virus_cnt}"


DEFAULT_STAGE_FLOOR = 300.0
"""Seconds a cached detail is kept at least, even when the image's ScanStatus moved."""


def list_samples(row: ImagesInfoRow, key: ImageKey) -> list[Sample]:
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


def detail_samples(detail: DetailRow, key: ImageKey) -> list[Sample]:
    """Every per-image sample DescribeAssetImageDetail adds to the list (see the module doc).

    ``scan="overall"`` of the scan error is the backend's ``ScanError`` or the agent's
    ``AgentError``; TCSS reports no overall progress, so none is exported.
    """
    # TCSS names no region of its own for an image: image_region is the source's region.
    info = (detail.image_digest, "", "", detail.os_name, detail.architecture, key.region)
    samples = [Sample("imagesec_image_info", key, 1.0, info)]
    samples += optional("imagesec_image_risks", key, detail.risk_cnt)
    samples += optional("imagesec_image_sensitive_info_items", key, detail.sensitive_info_cnt)
    samples += optional("imagesec_image_malicious_samples_all", key, detail.virus_cnt)
    if detail.virus_cnt:  # the grid only where there are samples (the total is always there)
        samples.append(
            Sample(
                "imagesec_image_malicious_samples", key, float(detail.virus_cnt), MALWARE_UNKNOWN
            )
        )
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
    """tcss_images: the image inventory (DescribeAssetImageList), filtered per the account."""

    def __init__(
        self,
        key: SourceKey,
        interval: float,
        client: TcssClient,
        filters: ImageFilter = NO_FILTER,
    ) -> None:
        self.key = key
        self.interval = interval
        self.depends_on: SourceKey | None = None
        self.client = client
        self.filters = filters
        self._last: tuple[ImageRef, ...] = ()  # the last walk's images
        client.declare(LIST_ACTION)

    def _ref(self, row: ImagesInfoRow, last: dict[str, ImageRef]) -> ImageRef:
        """The row's image: the last walk's object when nothing of it changed."""
        marker, stage = scan_marker(row), row.scan_status or ""
        old = last.get(row.image_id)  # the walk is de-duplicated by ImageID
        path = split_image_name(row.image_name)
        if old is not None and old.unchanged(path, marker, row.vul_cnt, stage):
            return old
        key = image_key(path, row.image_id, self.key.account, self.key.region)
        return ImageRef(key, key.image_id, marker, row.vul_cnt, stage)

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        walked = await describe_asset_image_list(self.client)
        # An unchanged image keeps its key and ref: a walk of an unchanged fleet makes no
        # object per image that outlives it (they were made anew and dropped on every walk).
        last = {ref.native_id: ref for ref in self._last}
        refs = [(self._ref(row, last), row) for row in walked]
        del last
        kept, skipped = self.filters.apply(
            refs,
            lambda rr: Listed(
                rr[0].key.repo_namespace,
                rr[0].key.repo,
                rr[0].key.tag,
                rr[1].create_time,
                rr[0].native_id,
            ),
        )
        images = tuple(ref for ref, _ in kept)
        # Samples are folded into columns as they are made (a generator, not a list of them)
        samples = (sample for ref, row in kept for sample in list_samples(row, ref.key))
        data = SourceData(
            samples=samples,
            images=images,
            skipped=skipped,
            truncated=walked.truncated,
        )
        self._last = images
        return data


class TcssImageDetailSource:
    """tcss_image_detail: DescribeAssetImageDetail for every image of the inventory.

    Details are cached by (ImageID, scan marker) in a :class:`DetailFanOut`, so a steady-state
    refresh only calls the API for images whose scan result can have changed (a finished
    scan's time, a count). The list's ``ScanStatus`` is the image's stage: a detail is looked
    up again when the stage moves (a scan starts, ends or fails), but not sooner than
    ``stage_floor`` seconds after it was fetched, so a running scan costs one call when it
    starts and one when it ends, whatever the refresh interval; its per-scanner progress is
    the one read at its start. Images skipped as vanished or invalid are not cached. Entries
    also expire after ``cache_ttl`` seconds, and entries of images no longer listed are
    dropped at each refresh.
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
        stage_floor: float = DEFAULT_STAGE_FLOOR,
        timer: Callable[[], float] = time.monotonic,
        publish_every: float = DEFAULT_PUBLISH_EVERY,
    ) -> None:
        self.key = key
        self.interval = interval
        self.depends_on = depends_on
        self.client = client
        self.on_progress: Callable[[Partial], None] | None = None
        self.details: DetailFanOut[DetailRow | None] = DetailFanOut(
            key,
            telemetry,
            concurrency=concurrency,
            ttl=cache_ttl,
            timer=timer,
            cacheable=_found,
            stage_floor=stage_floor,
            publish_every=publish_every,
        )
        client.declare(DETAIL_ACTION)

    @staticmethod
    def _data(found: list[tuple[ImageRef, DetailRow | None]]) -> SourceData:
        kept = [(ref, detail) for ref, detail in found if detail is not None]
        # Folded into columns as they are made: a list of every Sample (about ten per image)
        # was most of a big pass's transient memory, made again for each progress report.
        samples = (sample for ref, detail in kept for sample in detail_samples(detail, ref.key))
        return SourceData(samples=samples, images=tuple(ref for ref, _ in kept))

    def _progress(self, found: list[tuple[ImageRef, DetailRow | None]], done: float) -> None:
        if self.on_progress is not None:
            self.on_progress(lambda: self._data(found).with_completeness(done))

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        if upstream is None:
            raise SourceError(
                "no image inventory yet", provider=PROVIDER, code="upstream_unavailable"
            )
        found = await self.details.run(upstream.images, _version, self._fetch, self._progress)
        return self._data(found)

    async def _fetch(self, ref: ImageRef) -> DetailRow | None:
        image_id = ref.native_id
        try:
            return DetailRow.of(await describe_asset_image_detail(self.client, image_id))
        except RequestError as err:
            if err.code not in VANISHED_CODES:
                raise
            log.info(
                "image vanished between list and detail",
                extra={**self.key.log_fields(), "image_id": image_id, "code": err.code},
            )
        return None


def _version(ref: ImageRef) -> Hashable:
    return ref.scan_marker


def _found(detail: DetailRow | None) -> bool:
    """Whether a detail may be cached: one was found (not vanished, not invalid), and none of
    its strings had to be repaired (a garbled answer is fetched again next time, so the fixed
    upstream shows at once rather than when the scan marker next moves)."""
    return detail is not None and not any(isinstance(v, str) and "\ufffd" in v for v in detail)
