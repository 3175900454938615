"""Sas collectors: turn Sas answers into provider-neutral samples."""

from __future__ import annotations

import sys

from exporter.clouds.aliyun.api import SasClient, describe_image_instances
from exporter.clouds.aliyun.schemas import ImageInstanceRow
from exporter.filters import NO_FILTER, ImageFilter, Listed
from exporter.metrics import SCAN_STATUSES
from exporter.model import (
    ImageKey,
    ImageRef,
    Sample,
    SourceData,
    SourceKey,
    optional,
    stateset,
)
from exporter.normalise import sas_scan_status


def sas_key(
    account: str,
    region: str,
    uuid: str,
    repo_namespace: str,
    repo: str,
    tag: str,
    row_region: str,
) -> ImageKey:
    """Identity of a Sas image. ``region`` is the configured source region, as on imagesec_up.

    The image's own registry region (``row_region``) is not part of the identity: it is the
    ``image_region`` label of imagesec_image_info only (README, "Labels"). Every Sas collector
    keys its rows with this, so their series join on the identity labels.
    """
    del row_region  # one meaning per label: see instance_samples for image_region
    intern = sys.intern  # one string per distinct label value across every Sas source
    return ImageKey(
        "aliyun", account, region, intern(repo_namespace), intern(repo), intern(tag), intern(uuid)
    )


def image_key(row: ImageInstanceRow, account: str, region: str) -> ImageKey:
    """Identity of an inventory row (DescribeImageInstances)."""
    return sas_key(
        account, region, row.uuid, row.repo_namespace, row.repo_name, row.tag, row.region_id
    )


def instance_samples(row: ImageInstanceRow, key: ImageKey) -> list[Sample]:
    """Every per-image sample DescribeImageInstances supports.

    ``HcCount`` (baseline risks) has no severity breakdown here; the sas_baseline collector
    provides it per severity, so it is not exported from the inventory.
    """
    intern = sys.intern  # lower() makes a new string per row: one per distinct value instead
    info = (
        row.digest,
        intern(row.registry_type.lower()),
        intern(row.repo_type.lower()),
        "",
        "",
        row.region_id or key.region,
    )
    samples = [Sample("imagesec_image_info", key, 1.0, info)]
    samples += optional("imagesec_image_vulnerabilities", key, row.vul_count)
    samples += optional("imagesec_image_alerts", key, row.alarm_count)
    samples += optional("imagesec_image_deployed", key, row.deployed)
    progress = None if row.sca_progress is None else row.sca_progress / 100.0
    samples += optional("imagesec_image_scan_progress_ratio", key, progress, "overall")
    samples += stateset(
        "imagesec_image_scan_status", key, SCAN_STATUSES, sas_scan_status(row.sca_status)
    )
    samples += optional("imagesec_image_last_scan_timestamp_seconds", key, row.last_scan_time)
    samples += optional("imagesec_image_size_bytes", key, row.image_size)
    samples += optional("imagesec_image_created_timestamp_seconds", key, row.image_create)
    return samples


def scan_marker(row: ImageInstanceRow) -> str:
    """What keys the per-image caches: the last finished scan's time and the counts.

    Not ``ScaStatus``: it moves through about ten stages during one scan while the results
    (those of the previous scan) stay the same, so keying on it re-fetched every image
    several times per scan.
    """
    return f"{row.last_scan_time}|{row.vul_count}|{row.hc_count}"


def listed(row: ImageInstanceRow) -> Listed:
    """What the account's image filters read of an inventory row."""
    return Listed(row.repo_namespace, row.repo_name, row.tag, row.image_create, row.uuid)


class SasImagesSource:
    """sas_images: the image inventory (DescribeImageInstances), filtered per the account."""

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
        self._last: tuple[ImageRef, ...] = ()  # the last walk's images
        client.declare("DescribeImageInstances")

    def _ref(self, row: ImageInstanceRow, last: dict[str, ImageRef]) -> ImageRef:
        """The row's image: the last walk's object when nothing of it changed."""
        marker, stage = scan_marker(row), row.sca_status or ""
        old = last.get(row.uuid)
        path = (row.repo_namespace, row.repo_name, row.tag)
        if old is not None and old.unchanged(path, marker, row.vul_count, stage):
            return old
        key = image_key(row, self.key.account, self.key.region)
        return ImageRef(key, key.image_id, marker, row.vul_count, stage)

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        walked = await describe_image_instances(self.client)
        rows, skipped = self.filters.apply(walked, listed)
        # An unchanged image keeps its key and ref: a walk of an unchanged fleet makes no
        # object per image that outlives it (they were made anew and dropped on every walk).
        last = {ref.native_id: ref for ref in self._last}
        images = tuple(self._ref(row, last) for row in rows)
        del last
        # Samples are folded into columns as they are made (a generator, not a list of them)
        samples = (
            sample
            for row, ref in zip(rows, images, strict=True)
            for sample in instance_samples(row, ref.key)
        )
        data = SourceData(
            samples=samples,
            images=images,
            skipped=skipped,
            truncated=walked.truncated,
        )
        self._last = images
        return data
