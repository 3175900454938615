"""Pydantic models of the Sas responses: lenient (unknown fields ignored, vendor quirks absorbed).

Envelopes are validated whole (a missing list or a mistyped page field fails the page); rows are
validated one by one by ``parse_rows`` so that one bad row is counted and skipped, not fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_pascal


def _millis_to_seconds(value: float | None) -> float | None:
    return value / 1000.0 if value else None


NonNegInt = Annotated[int, Field(ge=0)]
EpochMillis = Annotated[float | None, AfterValidator(_millis_to_seconds)]
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
    request_id: str = ""
    page_info: PageInfo


class ImageInstance(SasModel):
    """One row of DescribeImageInstances (seed 000).

    ``Uuid`` is documented as "the UUID of the server", but it is the image asset id that the
    other image actions take as ``ImageUuid``. ``ImageSize`` is documented in MB, but the
    sample's value (1604487690) is plainly bytes: we read it as bytes.
    """

    uuid: str = Field(min_length=1)
    image_id: str = ""
    digest: str = ""
    repo_id: str = ""
    repo_name: str = ""
    repo_namespace: str = ""
    tag: str = ""
    region_id: str = ""
    instance_id: str = ""
    repo_type: str = ""
    registry_type: str = ""
    status: str = ""
    vul_count: NonNegInt | None = None
    alarm_count: NonNegInt | None = None
    hc_count: NonNegInt | None = None
    deployed: Annotated[int, Field(ge=0, le=1)] | None = None
    sca_status: str | None = None
    sca_progress: Annotated[float, Field(ge=0, le=100)] | None = None
    sca_result: str | None = None
    last_scan_time: EpochMillis = None
    image_create: EpochMillis = None
    image_update: EpochMillis = None
    image_size: NonNegInt | None = None


class DescribeImageInstancesResponse(PagedResponse):
    image_instance_list: list[Any]


M = TypeVar("M", bound=BaseModel)


def parse_rows(
    model: type[M],
    rows: Iterable[object],
    on_invalid: Callable[[object, ValidationError | TypeError], None],
) -> list[M]:
    """Validate each row; report and skip the ones that do not fit ``model``."""
    parsed: list[M] = []
    for row in rows:
        try:
            if not isinstance(row, dict):
                raise TypeError(f"row is {type(row).__name__}, not an object")
            parsed.append(model.model_validate(row))
        except (ValidationError, TypeError) as err:
            on_invalid(row, err)
    return parsed
