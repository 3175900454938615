"""Pydantic models of the TCSS responses: lenient (unknown fields ignored, vendor quirks absorbed).

Only the fields the exporter uses are modelled, so a mistyped field nobody reads cannot cost a
row. Envelopes are validated whole (a missing ``List`` or a mistyped ``TotalCount`` fails the
page); rows are validated one by one with ``parse_rows`` (exporter/clouds/client.py), so one
bad row is counted and skipped, not fatal. Counts are non-negative: a negative count makes the
row invalid.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_pascal

from exporter.clouds.wire import Count, Finite, Identity, OptionalText, Text
from exporter.normalise import tcss_time

__all__ = [
    "DescribeAssetImageListResponse",
    "ImageDetail",
    "ImagesInfo",
    "TcssModel",
]


def _beijing_time(value: object) -> object:
    # TCSS times are "YYYY-MM-DD HH:MM:SS" strings in Beijing time; "" and "0000-..." mean unset.
    if value is None or isinstance(value, str):
        return tcss_time(value)  # ValueError on anything else: the row is invalid
    raise ValueError(f"expected a time string, got {type(value).__name__}")


NonNegInt = Count
Percent = Annotated[Finite, Field(ge=0, le=100)]
TcssTime = Annotated[float | None, BeforeValidator(_beijing_time)]
"""A TCSS time string (Beijing time) converted to Unix seconds; empty or zero means unknown."""


class TcssModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_pascal, validate_by_name=True, extra="ignore", frozen=True
    )


class ImagesInfo(TcssModel):
    """One row of DescribeAssetImageList (cloud-api-facts.md 3.6): a local image and its counts.

    ``RiskCnt`` is the sensitive-information count here but "risky behaviours" in the detail
    answer; the exporter takes risks from the detail only, and uses this one in the scan marker.
    """

    image_id: Identity = Field(alias="ImageID")
    image_name: Text = ""
    create_time: TcssTime = None
    size: NonNegInt | None = None
    os_name: Text = ""
    host_cnt: NonNegInt | None = None
    container_cnt: NonNegInt | None = None
    vul_cnt: NonNegInt | None = None
    virus_cnt: NonNegInt | None = None
    risk_cnt: NonNegInt | None = None
    critical_level_vul_cnt: NonNegInt | None = None
    high_level_vul_cnt: NonNegInt | None = None
    medium_level_vul_cnt: NonNegInt | None = None
    low_level_vul_cnt: NonNegInt | None = None
    scan_time: TcssTime = None
    scan_status: OptionalText = None


def _intern(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


class ImagesInfoRow(NamedTuple):
    """An ``ImagesInfo`` held compactly: a tuple of its values, folded from each page as it
    arrives (``describe_asset_image_list``), so a walk of a big fleet holds about 200 bytes per
    image rather than a pydantic model (about 1.9 kB); repeated strings are interned."""

    image_id: str
    image_name: str
    create_time: float | None
    size: int | None
    os_name: str
    host_cnt: int | None
    container_cnt: int | None
    vul_cnt: int | None
    virus_cnt: int | None
    risk_cnt: int | None
    critical_level_vul_cnt: int | None
    high_level_vul_cnt: int | None
    medium_level_vul_cnt: int | None
    low_level_vul_cnt: int | None
    scan_time: float | None
    scan_status: str | None

    @classmethod
    def of(cls, row: ImagesInfo) -> ImagesInfoRow:
        return cls(
            sys.intern(row.image_id),
            row.image_name,
            row.create_time,
            row.size,
            sys.intern(row.os_name),
            row.host_cnt,
            row.container_cnt,
            row.vul_cnt,
            row.virus_cnt,
            row.risk_cnt,
            row.critical_level_vul_cnt,
            row.high_level_vul_cnt,
            row.medium_level_vul_cnt,
            row.low_level_vul_cnt,
            row.scan_time,
            _intern(row.scan_status),
        )


class DescribeAssetImageListResponse(TcssModel):
    request_id: Text = ""
    total_count: NonNegInt | None = None
    rows: list[Any] = Field(alias="List")


class ImageDetail(TcssModel):
    """The answer of DescribeAssetImageDetail (seed 003, cloud-api-facts.md 3.7).

    ``Scan*Progress`` are percentages (0-100); ``ScanRisk*`` is the sensitive-information
    scanner. ``VirusCnt`` has no breakdown by level or handling status.
    """

    image_id: Identity = Field(alias="ImageID")
    image_name: Text = ""
    image_digest: Text = ""
    create_time: TcssTime = None
    size: NonNegInt | None = None
    os_name: Text = ""
    architecture: Text = ""
    host_cnt: NonNegInt | None = None
    container_cnt: NonNegInt | None = None
    vul_cnt: NonNegInt | None = None
    risk_cnt: NonNegInt | None = None
    sensitive_info_cnt: NonNegInt | None = None
    virus_cnt: NonNegInt | None = None
    scan_time: TcssTime = None
    scan_status: OptionalText = None
    agent_error: OptionalText = None
    scan_error: OptionalText = None
    scan_vul_error: OptionalText = None
    scan_virus_error: OptionalText = None
    scan_risk_error: OptionalText = None
    scan_vul_progress: Percent | None = None
    scan_virus_progress: Percent | None = None
    scan_risk_progress: Percent | None = None


class DetailRow(NamedTuple):
    """What the exporter uses of an ``ImageDetail``, as a tuple of values: the detail cache
    holds one per image (about 300 bytes, not a pydantic model of about 5.7 kB); repeated
    strings (OS, architecture, empty errors) are interned."""

    image_digest: str
    os_name: str
    architecture: str
    risk_cnt: int | None
    sensitive_info_cnt: int | None
    virus_cnt: int | None
    agent_error: str | None
    scan_error: str | None
    scan_vul_error: str | None
    scan_virus_error: str | None
    scan_risk_error: str | None
    scan_vul_progress: float | None
    scan_virus_progress: float | None
    scan_risk_progress: float | None

    @classmethod
    def of(cls, detail: ImageDetail) -> DetailRow:
        return cls(
            detail.image_digest,
            sys.intern(detail.os_name),
            sys.intern(detail.architecture),
            detail.risk_cnt,
            detail.sensitive_info_cnt,
            detail.virus_cnt,
            _intern(detail.agent_error),
            _intern(detail.scan_error),
            _intern(detail.scan_vul_error),
            _intern(detail.scan_virus_error),
            _intern(detail.scan_risk_error),
            detail.scan_vul_progress,
            detail.scan_virus_progress,
            detail.scan_risk_progress,
        )
