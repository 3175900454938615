"""Pydantic models of the Sas responses: lenient (unknown fields ignored, vendor quirks absorbed).

Envelopes are validated whole (a missing list or a mistyped page field fails the page); rows are
validated one by one by ``parse_rows`` (exporter/clouds/client.py) so that one bad row is
counted and skipped, not fatal.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic.alias_generators import to_pascal

from exporter.clouds.wire import Count, Finite, Identity, Text


def _millis_to_seconds(value: float | None) -> float | None:
    return value / 1000.0 if value else None


NonNegInt = Count
EpochMillis = Annotated[Finite | None, AfterValidator(_millis_to_seconds)]
"""Epoch milliseconds (number or numeric string) converted to Unix seconds; 0 means unknown."""


class SasModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_pascal, validate_by_name=True, extra="ignore", frozen=True
    )


class PageInfo(SasModel):
    current_page: NonNegInt | None = None
    page_size: NonNegInt | None = None
    total_count: NonNegInt
    count: NonNegInt | None = None


class PagedResponse(SasModel):
    request_id: Text = ""
    page_info: PageInfo


class ImageInstance(SasModel):
    """One row of DescribeImageInstances (seed 000).

    ``Uuid`` is documented as "the UUID of the server", but it is the image asset id that the
    other image actions take as ``ImageUuid``. ``ImageSize`` is documented in MB, but the
    sample's value (1604487690) is plainly bytes: we read it as bytes.
    """

    uuid: Identity
    image_id: Text = ""
    digest: Text = ""
    repo_id: Text = ""
    repo_name: Text = ""
    repo_namespace: Text = ""
    tag: Text = ""
    region_id: Text = ""
    instance_id: Text = ""
    repo_type: Text = ""
    registry_type: Text = ""
    status: Text = ""
    vul_count: NonNegInt | None = None
    alarm_count: NonNegInt | None = None
    hc_count: NonNegInt | None = None
    deployed: Annotated[int, Field(ge=0, le=1)] | None = None
    sca_status: Text | None = None
    sca_progress: Annotated[Finite, Field(ge=0, le=100)] | None = None
    sca_result: Text | None = None
    last_scan_time: EpochMillis = None
    image_create: EpochMillis = None
    image_update: EpochMillis = None
    image_size: NonNegInt | None = None


class ImageInstanceRow(NamedTuple):
    """An ``ImageInstance`` held compactly: a tuple of the values, folded from each page as it
    arrives (``describe_image_instances``), so a walk of a big fleet holds a few hundred bytes
    per image rather than a pydantic model (about 3 kB). Label-like strings are interned: one
    object per distinct namespace, repository, tag or region across every source."""

    uuid: str
    image_id: str
    digest: str
    repo_id: str
    repo_name: str
    repo_namespace: str
    tag: str
    region_id: str
    instance_id: str
    repo_type: str
    registry_type: str
    status: str
    vul_count: int | None
    alarm_count: int | None
    hc_count: int | None
    deployed: int | None
    sca_status: str | None
    sca_progress: float | None
    sca_result: str | None
    last_scan_time: float | None
    image_create: float | None
    image_update: float | None
    image_size: int | None

    @classmethod
    def of(cls, row: ImageInstance) -> ImageInstanceRow:
        intern = sys.intern
        return cls(
            intern(row.uuid),
            row.image_id,
            row.digest,
            intern(row.repo_id),
            intern(row.repo_name),
            intern(row.repo_namespace),
            intern(row.tag),
            intern(row.region_id),
            row.instance_id,
            intern(row.repo_type),
            intern(row.registry_type),
            intern(row.status),
            row.vul_count,
            row.alarm_count,
            row.hc_count,
            row.deployed,
            None if row.sca_status is None else intern(row.sca_status),
            row.sca_progress,
            None if row.sca_result is None else intern(row.sca_result),
            row.last_scan_time,
            row.image_create,
            row.image_update,
            row.image_size,
        )


class DescribeImageInstancesResponse(PagedResponse):
    image_instance_list: list[Any]


# -- findings actions (issue 3) -------------------------------------------------------------


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class BaselineResult(SasModel):
    """One row of DescribeImageBaselineCheckResult (seed 001): one baseline of one image."""

    baseline_name_key: Text = ""
    baseline_name_level: Text = ""
    high_risk_item_count: NonNegInt | None = None
    middle_risk_item_count: NonNegInt | None = None
    low_risk_item_count: NonNegInt | None = None
    last_scan_time: EpochMillis = None
    status: int | None = None


class DescribeImageBaselineCheckResultResponse(PagedResponse):
    baseline_result: list[Any]


MalwareLevel = Literal["serious", "suspicious", "remind"]


class AffectedMaliciousFile(SasModel):
    """One row of DescribeAffectedMaliciousFileImages (seed 004): one malicious file in one image.

    ``Uuid`` in these rows is the server's; the image is ``ImageUuid``. ``Namespace`` is the
    repository namespace (the request calls the same filter ``RepoNamespace``).
    """

    image_uuid: Identity
    level: Annotated[MalwareLevel, BeforeValidator(_lower)]
    status: Annotated[int, Field(ge=0, le=3)]  # 0 unhandled, 1 handled, 2 verifying, 3 whitelisted
    malicious_md5: Text = ""
    file_path: Text = ""
    layer: Text = ""
    digest: Text = ""
    repo_name: Text = ""
    namespace: Text = ""
    tag: Text = ""
    repo_region_id: Text = ""


class DescribeAffectedMaliciousFileImagesResponse(PagedResponse):
    affected_malicious_file_images_response: list[Any]


class ImageRisk(SasModel):
    """One row of ListImageRisk (seed 002): an image in use in a cluster.

    ``Statistics`` is documented as a string holding JSON; the seed's sample sends an object.
    It stays raw here and is parsed by ``parse_statistics``, so that a malformed value marks the
    row without losing its registration status.
    """

    uuid: Identity
    repo_name: Text = ""
    repo_namespace: Text = ""
    tag: Text = ""
    region_id: Text = ""
    digest: Text = ""
    image_access_type: Text = ""
    statistics: Any = None


class ListImageRiskResponse(PagedResponse):
    image_risk_list: list[Any]


class RiskStatistics(BaseModel):
    """ListImageRisk ``Statistics``: camelCase keys, unlike the rest of the answer."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    baseline_num: NonNegInt | None = Field(default=None, alias="baselineNum")
    new_suspicious: NonNegInt | None = Field(default=None, alias="newSuspicious")
    vul: NonNegInt | None = None


def parse_statistics(raw: object) -> RiskStatistics | None:
    """Parse a ``Statistics`` value (a JSON string or an object); None if absent or empty.

    Raises ValueError (``json.JSONDecodeError``, ``ValidationError``) if it does not parse.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        raw = json.loads(raw)
    return RiskStatistics.model_validate(raw)


class VulRecord(SasModel):
    """One record of DescribeImageVulList: only its fix priority is read (cloud-api-facts 3.5)."""

    necessity: str = ""


class DescribeImageVulListResponse(SasModel):
    """DescribeImageVulList: paging fields at the top level, no PageInfo (cloud-api-facts 3.5)."""

    request_id: Text = ""
    total_count: NonNegInt
    vul_records: list[Any] = []
