"""Sas findings collectors: baseline, vulnerabilities by fix priority, malware, images in use.

Each collector is its own source (own interval, ``imagesec_up``, failure isolation). Their
series join the inventory's on the identity labels: an image is keyed by its Sas ``Uuid``
with the repository namespace, name, tag and region the rows name, exactly as
``source.sas_key`` keys the inventory.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, get_args

from exporter.clouds.aliyun.api import (
    SasClient,
    VulnerabilityCounter,
    describe_affected_malicious_file_images,
    describe_image_baseline_check_result,
    list_image_risk,
)
from exporter.clouds.aliyun.schemas import AffectedMaliciousFile, MalwareLevel, parse_statistics
from exporter.clouds.aliyun.source import sas_key
from exporter.clouds.fanout import DEFAULT_PUBLISH_EVERY, DEFAULT_TTL, DetailFanOut
from exporter.filters import NO_FILTER, ImageFilter, Listed
from exporter.metrics import BASELINE_SEVERITIES, REGISTRATION_STATUSES
from exporter.model import ImageRef, Sample, SourceData, SourceKey, optional, stateset
from exporter.normalise import (
    SAS_BASELINE_FIELDS,
    SAS_MALWARE_STATUS,
    SAS_NECESSITY_SEVERITY,
    SAS_REGISTRATION,
)
from exporter.telemetry import Telemetry

if TYPE_CHECKING:
    from exporter.refresh import Partial

# The Sas part of the malware vocabularies (the catalogue's "unknown" is TCSS's, not ours).
SAS_MALWARE_LEVELS: tuple[str, ...] = get_args(MalwareLevel)
SAS_MALWARE_STATUSES: tuple[str, ...] = tuple(SAS_MALWARE_STATUS.values())

Counts = tuple[int, ...]
"""A detail result: a count per label value of the collector's ``labels``, in that order (one
small tuple an image in the cache: ints, not (label, count) pairs)."""


SHARED_COUNTS_MAX = 4096
"""Distinct per-image results a collector shares (see ``_PerImageSource._shared``)."""


def _images(upstream: SourceData | None) -> tuple[ImageRef, ...]:
    return upstream.images if upstream is not None else ()


class _PerImageSource:
    """A collector that makes one cached detail lookup per image of the inventory."""

    action: str  # the Sas action of the lookup
    metric: str  # the catalogue metric it feeds, with one extra label
    labels: tuple[str, ...]  # that label's values, in the order of a lookup's Counts

    def __init__(
        self,
        key: SourceKey,
        interval: float,
        client: SasClient,
        telemetry: Telemetry,
        *,
        depends_on: SourceKey | None,
        concurrency: int,
        ttl: float = DEFAULT_TTL,
        timer: Callable[[], float] = time.monotonic,
        publish_every: float = DEFAULT_PUBLISH_EVERY,
    ) -> None:
        self.key = key
        self.interval = interval
        self.depends_on = depends_on
        self.client = client
        self.on_progress: Callable[[Partial], None] | None = None
        self.details: DetailFanOut[Counts] = DetailFanOut(
            key,
            telemetry,
            concurrency=concurrency,
            ttl=ttl,
            timer=timer,
            publish_every=publish_every,
        )
        # One tuple per distinct result, shared by the images that have it (most images of a
        # fleet repeat a few count patterns); bounded, past which results are kept as made.
        self._shared: dict[Counts, Counts] = {}
        client.declare(self.action)

    def version(self, ref: ImageRef) -> Hashable:
        """What a cached lookup depends on: the scan marker (finished scan time and counts, not
        the stage). The ref's own string: no key object per image and pass."""
        return ref.scan_marker

    async def lookup(self, ref: ImageRef) -> Counts:
        raise NotImplementedError

    async def _lookup(self, ref: ImageRef) -> Counts:
        counts = await self.lookup(ref)
        if len(self._shared) < SHARED_COUNTS_MAX:
            return self._shared.setdefault(counts, counts)
        return self._shared.get(counts, counts)

    def _data(self, found: list[tuple[ImageRef, Counts]]) -> SourceData:
        labels = [(label,) for label in self.labels]
        samples = (
            Sample(self.metric, ref.key, float(value), label)
            for ref, counts in found
            for label, value in zip(labels, counts, strict=True)
        )
        return SourceData(samples=samples, images=tuple(ref for ref, _ in found))

    def _progress(self, found: list[tuple[ImageRef, Counts]], done: float) -> None:
        if self.on_progress is not None:
            self.on_progress(lambda: self._data(found).with_completeness(done))

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        found = await self.details.run(
            _images(upstream), self.version, self._lookup, self._progress
        )
        return self._data(found)


class SasBaselineSource(_PerImageSource):
    """sas_baseline: baseline risk items per image and severity (DescribeImageBaselineCheckResult).

    The sums of High/Middle/LowRiskItemCount over the image's baseline results; an image
    without results has 0 of each. One lookup per image whose scan changed::

        # HELP imagesec_image_baseline_risk_items Baseline check risk items of the image by severity (Sas DescribeImageBaselineCheckResult) (cached, refreshed every 900s).
        # TYPE imagesec_image_baseline_risk_items gauge
        imagesec_image_baseline_risk_items{provider="aliyun",account="prod",region="cn-hangzhou",repo_namespace="shop",repo="cart",tag="1.4.2",image_id="a910...",severity="high"} 1.0
    """

    action = "DescribeImageBaselineCheckResult"
    metric = "imagesec_image_baseline_risk_items"
    labels = BASELINE_SEVERITIES

    async def lookup(self, ref: ImageRef) -> Counts:
        rows = await describe_image_baseline_check_result(self.client, ref.native_id)
        totals = dict.fromkeys(BASELINE_SEVERITIES, 0)
        for row in rows:
            for field, severity in SAS_BASELINE_FIELDS.items():
                totals[severity] += getattr(row, field) or 0
        return tuple(totals.values())


class SasVulnerabilitiesSource(_PerImageSource):
    """sas_vulnerabilities: open vulnerabilities per image by fix priority (DescribeImageVulList).

    Sas ranks image vulnerabilities by ``Necessity``, a fix priority rather than a CVSS
    severity: asap=high, later=medium, nntf=low (exporter/normalise.py); Sas has no critical.
    Counted are the ``Type=cve`` records (the only type the action takes: system packages)
    with status unfixed or being fixed. An image with up to 100 of them costs one call: one
    page of records, counted by their ``Necessity``; up to 300, a call per page; beyond, or
    when the records do not add up, three calls (a ``Necessity`` filter and ``PageSize=1``
    each, ``TotalCount`` read): see ``VulnerabilityCounter`` and the README's
    cost table. Looked up again only when the image's finished scan time or its
    vulnerability total changes, not as a running scan moves through its stages::

        # HELP imagesec_image_vulnerabilities_by_severity Vulnerabilities by severity (TCSS *LevelVulCnt; Sas: fix priority asap=high, later=medium, nntf=low) (cached, refreshed every 900s).
        # TYPE imagesec_image_vulnerabilities_by_severity gauge
        imagesec_image_vulnerabilities_by_severity{provider="aliyun",account="prod",region="cn-hangzhou",repo_namespace="shop",repo="cart",tag="1.4.2",image_id="a910...",severity="high"} 4.0
    """

    action = "DescribeImageVulList"
    metric = "imagesec_image_vulnerabilities_by_severity"
    labels = tuple(SAS_NECESSITY_SEVERITY.values())

    @functools.cached_property
    def counter(self) -> VulnerabilityCounter:
        return VulnerabilityCounter(self.client)

    def version(self, ref: ImageRef) -> Hashable:
        return (ref.scan_marker, ref.vulnerabilities)

    async def lookup(self, ref: ImageRef) -> Counts:
        counts = await self.counter.count(
            ref.native_id, tuple(SAS_NECESSITY_SEVERITY), ref.vulnerabilities
        )
        return tuple(counts[n] for n in SAS_NECESSITY_SEVERITY)


class SasMaliciousSource:
    """sas_malicious: malicious files per image, level and status (DescribeAffectedMaliciousFileImages).

    One account-wide paged listing. Its rows are per malicious file per image (and repeat for
    every container, pod or page that shows the same file), so a cell counts the distinct
    (MaliciousMd5, FilePath) pairs of the image at that level and status. Only the cells an
    image has files in are emitted (the grid would be 12 series per image, 98% zero); every
    image of the inventory and every image with a row gets ``imagesec_image_malicious_samples_all``,
    the sum of its cells, so "no malware" is a visible 0 and absence is not ambiguous. A row whose ImageUuid the inventory does not know (yet) is still exported,
    keyed by its own RepoName/Namespace/Tag/RepoRegionId, which are the labels the inventory
    gives the same image, if the account's image filters keep it: its repo and tag patterns,
    and none at all while the inventory drops images for ``newest_tags`` or ``max_images``
    (the row could be one of them)::

        # HELP imagesec_image_malicious_samples Malicious samples found in the image by level and handling status (cached, refreshed every 900s).
        # TYPE imagesec_image_malicious_samples gauge
        imagesec_image_malicious_samples{provider="aliyun",account="prod",region="cn-shanghai",repo_namespace="hanghai-namespace",repo="centos",tag="0.2",image_id="e05c...",level="serious",status="handled"} 1.0
        # TYPE imagesec_image_malicious_samples_all gauge
        imagesec_image_malicious_samples_all{provider="aliyun",account="prod",region="cn-shanghai",repo_namespace="hanghai-namespace",repo="centos",tag="0.2",image_id="e05c..."} 1.0
    """

    action = "DescribeAffectedMaliciousFileImages"
    metric = "imagesec_image_malicious_samples"
    total = "imagesec_image_malicious_samples_all"
    CELLS = tuple((lvl, st) for lvl in SAS_MALWARE_LEVELS for st in SAS_MALWARE_STATUSES)

    def __init__(
        self,
        key: SourceKey,
        interval: float,
        client: SasClient,
        *,
        depends_on: SourceKey | None,
        filters: ImageFilter = NO_FILTER,
    ) -> None:
        self.key = key
        self.interval = interval
        self.depends_on = depends_on
        self.client = client
        self.filters = filters
        client.declare(self.action)

    def _row_ref(self, row: AffectedMaliciousFile) -> ImageRef:
        key = sas_key(
            self.key.account,
            self.key.region,
            row.image_uuid,
            row.namespace,
            row.repo_name,
            row.tag,
            row.repo_region_id,
        )
        return ImageRef(key, key.image_id, "")

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        rows = await describe_affected_malicious_file_images(self.client)
        refs = {ref.native_id: ref for ref in _images(upstream)}
        files: dict[str, dict[tuple[str, str], set[tuple[str, str]]]] = {u: {} for u in refs}
        skipped = dict(upstream.skipped) if upstream is not None else {}
        truncated = skipped.get("newest_tags", 0) + skipped.get("max_images", 0) > 0
        for row in rows:
            if row.image_uuid not in refs:
                if truncated or not self.filters.allows(row.namespace, row.repo_name, row.tag):
                    continue
                refs[row.image_uuid] = self._row_ref(row)
            cell = (row.level, SAS_MALWARE_STATUS[row.status])
            grid = files.setdefault(row.image_uuid, {})
            grid.setdefault(cell, set()).add((row.malicious_md5, row.file_path))

        def samples() -> Iterator[Sample]:  # folded into columns as they are made
            for uuid, grid in files.items():
                image = refs[uuid].key
                cells = [
                    ((lvl, st), len(grid[(lvl, st)])) for lvl, st in self.CELLS if (lvl, st) in grid
                ]
                for cell, n in cells:
                    yield Sample(self.metric, image, float(n), cell)
                yield Sample(self.total, image, float(sum(n for _, n in cells)))

        return SourceData(
            samples=samples(),
            images=tuple(refs[u] for u in files),
            truncated=rows.truncated,
        )


class SasImageRiskSource:
    """sas_image_risk: risk statistics and registration of the images in use (ListImageRisk).

    ``Statistics`` (baselineNum, newSuspicious, vul; a JSON string, or an object as in the
    seed's sample) becomes ``imagesec_image_in_use_findings{finding}``: a key it lacks gives no
    sample. A value that does not parse counts the row in ``imagesec_invalid_rows`` and drops
    only its statistics: the row's registration status (``ImageAccessType``) is still
    exported. The account's repo and tag patterns and ``max_images`` apply to its rows;
    ``newest_tags`` does not (ListImageRisk gives no creation time; images in use are
    exported whatever their age)::

        # TYPE imagesec_image_in_use_findings gauge
        imagesec_image_in_use_findings{provider="aliyun",...,image_id="6247...",finding="new_suspicious"} 0.0
        # TYPE imagesec_image_registration_status gauge
        imagesec_image_registration_status{provider="aliyun",...,image_id="6247...",status="in_sas"} 1.0
    """

    action = "ListImageRisk"

    def __init__(
        self,
        key: SourceKey,
        interval: float,
        client: SasClient,
        filters: ImageFilter = NO_FILTER,
    ) -> None:
        self.key = key
        self.interval = interval
        self.depends_on: SourceKey | None = None
        self.client = client
        self.filters = filters
        client.declare(self.action)

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        walked = await list_image_risk(self.client)
        rows, skipped = self.filters.apply(
            walked,
            lambda r: Listed(r.repo_namespace, r.repo_name, r.tag, None, r.uuid),
            rank=False,
        )
        report = self.client.invalid_row(self.action)
        samples: list[Sample] = []
        images: list[ImageRef] = []
        for row in rows:
            key = sas_key(
                self.key.account,
                self.key.region,
                row.uuid,
                row.repo_namespace,
                row.repo_name,
                row.tag,
                row.region_id,
            )
            images.append(ImageRef(key, key.image_id, ""))
            status = SAS_REGISTRATION.get(row.image_access_type.upper(), "unknown")
            samples += stateset(
                "imagesec_image_registration_status", key, REGISTRATION_STATUSES, status
            )
            try:
                stats = parse_statistics(row.statistics)
            except (ValueError, RecursionError, OverflowError) as err:  # bad JSON or value
                report(row, err)
                continue
            if stats is None:
                continue
            findings = {
                "baseline": stats.baseline_num,
                "new_suspicious": stats.new_suspicious,
                "vulnerability": stats.vul,
            }
            for finding, value in findings.items():
                samples += optional("imagesec_image_in_use_findings", key, value, finding)
        return SourceData(
            samples=tuple(samples),
            images=tuple(images),
            skipped=skipped,
            truncated=walked.truncated,
        )
