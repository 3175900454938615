"""Sas RPC client: one ``call`` that signs, rate-limits, retries and maps errors; one function per action.

Every Sas image action is POST with all parameters in the query string and an empty body, as
the official SDK sends them (cloud-api-facts.md 1b).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from exporter.clouds.aliyun.schemas import (
    AffectedMaliciousFile,
    BaselineResult,
    DescribeAffectedMaliciousFileImagesResponse,
    DescribeImageBaselineCheckResultResponse,
    DescribeImageInstancesResponse,
    DescribeImageVulListResponse,
    ImageInstance,
    ImageInstanceRow,
    ImageRisk,
    ListImageRiskResponse,
    PagedResponse,
    VulRecord,
)
from exporter.clouds.client import PARSE_ERRORS, ApiClient, parse_rows
from exporter.clouds.http import Page, PageSpec, Rows
from exporter.errors import (
    AuthError,
    PayloadError,
    RequestError,
    SourceError,
    ThrottledError,
    UpstreamError,
    clean_message,
    fold_code,
)
from exporter.normalise import clean_label

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger(__name__)

VERSION = "2018-12-03"
PROVIDER = "aliyun"
DEFAULT_RATE = 10.0  # requests/s per (account, region, action): the documented Sas default

# Declarative pagination per action (STYLE habit 11); the simulator pages the same way and
# rejects a PageSize over 100. The SDK models state no maximum; the console and the API
# Explorer page these actions at up to 100 (cloud-api-facts.md 3): the largest page costs the
# fewest calls and makes a walk shorter, so fewer images move under it.
MAX_PAGE_SIZE = 100
PAGINATION: dict[str, PageSpec] = {
    "DescribeImageInstances": PageSpec(page_size=MAX_PAGE_SIZE),
    "DescribeImageBaselineCheckResult": PageSpec(page_size=MAX_PAGE_SIZE),
    "ListImageRisk": PageSpec(page_size=MAX_PAGE_SIZE),
    "DescribeAffectedMaliciousFileImages": PageSpec(page_size=MAX_PAGE_SIZE, size_as_str=True),
    "DescribeImageVulList": PageSpec(page_size=10),
}

_AUTH_CODES = {
    "IncompleteSignature",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "InvalidAccessKeySecret",
    "InvalidSecurityToken.Expired",
    "InvalidSecurityToken.MismatchWithAccessKey",
    "InvalidSecurityToken.Malformed",
    "InvalidTimeStamp.Expired",
    "NoPermission",
    "Forbidden.RAM",
    "Forbidden",
}


def error_from_response(response: httpx.Response) -> SourceError:
    """Map a Sas error answer (status >= 400, flat JSON body) onto the error tree."""
    code, message, request_id = "", "", ""
    try:
        body = response.json()
    except PARSE_ERRORS:
        body = None
    if isinstance(body, dict):
        code = _text(body.get("Code") or body.get("code"), 80)
        message = clean_message(_text(body.get("Message") or body.get("message"), 4096))
        request_id = _text(body.get("RequestId") or body.get("requestId"), 64)
    status = response.status_code
    fallback = "http_5xx" if status >= 500 else "http_4xx"
    text = f"Sas answered HTTP {status}" + (f": {message}" if message else "")
    kwargs: dict[str, Any] = {
        "provider": PROVIDER,
        "code": fold_code(PROVIDER, code) if code else fallback,
        "vendor_code": code,
        "request_id": request_id,
    }
    if code.startswith("Throttling"):
        retry_after = response.headers.get("x-acs-retry-after", "")
        if retry_after.isdigit() and int(retry_after) > 0:
            kwargs["retry_after"] = int(retry_after) / 1000.0
        return ThrottledError(text, **kwargs)
    if code in _AUTH_CODES or status in (401, 403):
        return AuthError(text, **kwargs)
    if status >= 500 or code == "SignatureNonceUsed":
        return UpstreamError(text, **kwargs)
    return RequestError(text, **kwargs)


class SasClient(ApiClient):
    """Calls Sas actions for one (account, API region): rate limits per (account, region, action)."""

    PROVIDER = PROVIDER
    DEFAULT_RATE = DEFAULT_RATE

    def _request(self, action: str, params: Mapping[str, object]) -> httpx.Request:
        # No RegionId: the endpoint selects the site, and several image actions (e.g.
        # DescribeImageVulList) document RegionId as a filter on the image's own region.
        query = {k: _param(v) for k, v in params.items() if v is not None}
        return self._http.build_request(
            "POST",
            self._base_url,
            params=query,
            headers={
                "x-acs-action": action,
                "x-acs-version": VERSION,
                "accept": "application/json",
            },
        )

    def _decode(self, action: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise error_from_response(response)
        body = self._json_body(action, response)
        if not isinstance(body, dict):
            raise PayloadError(f"{action}: answer is not a JSON object", provider=PROVIDER)
        if body.get("Code") and "PageInfo" not in body and len(body) <= 6:
            # A 200 carrying an error body: the SDK would call it success; we do not.
            code = _text(body["Code"], 80)
            raise RequestError(
                f"{action}: {clean_message(_text(body.get('Message') or 'error', 4096))}",
                provider=PROVIDER,
                code=fold_code(PROVIDER, code),
                vendor_code=code,
                request_id=_text(body.get("RequestId"), 64),
            )
        return body


def _text(value: object, limit: int) -> str:
    """A scalar of an error body as bounded, encodable text ("" for null or a structure)."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    return clean_label(str(value)[: limit + 1], limit)


def _param(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pages(
    client: SasClient,
    action: str,
    envelope: type[PagedResponse],
    list_field: str,
    row: type[M],
    fixed: Mapping[str, object] | None = None,
) -> Callable[[Mapping[str, object]], Awaitable[Page[M]]]:
    """A page fetcher of ``action``: ``fixed`` and the page's parameters in, valid rows out."""

    async def fetch(params: Mapping[str, object]) -> Page[M]:
        answer = await client.call_model(action, {**(fixed or {}), **params}, envelope)
        rows = getattr(answer, list_field)
        items = parse_rows(row, rows, client.invalid_row(action))
        return Page(items=items, total=answer.page_info.total_count, count=len(rows))

    return fetch


async def describe_image_instances(client: SasClient) -> Rows[ImageInstanceRow]:
    """Every image asset (DescribeImageInstances, seed 000), de-duplicated by Uuid.

    Each page's rows are folded into compact ``ImageInstanceRow`` tuples as the page arrives:
    the walk never holds more than one page of pydantic models.
    """
    action = "DescribeImageInstances"
    models = _pages(
        client, action, DescribeImageInstancesResponse, "image_instance_list", ImageInstance
    )

    async def fetch(params: Mapping[str, object]) -> Page[ImageInstanceRow]:
        page = await models(params)
        rows = [ImageInstanceRow.of(row) for row in page.items]
        return Page(items=rows, total=page.total, count=page.count)

    return await client.walk(action, fetch, PAGINATION[action], key=lambda r: r.uuid)


# -- findings actions (issue 3) -------------------------------------------------------------


async def describe_image_baseline_check_result(
    client: SasClient, image_uuid: str
) -> list[BaselineResult]:
    """The baseline results of one image (DescribeImageBaselineCheckResult, seed 001).

    Rows repeated across pages are dropped by their ``BaselineNameKey`` (one result per
    baseline and image), so a sum over the rows counts every baseline once.
    """
    action = "DescribeImageBaselineCheckResult"
    fetch = _pages(
        client,
        action,
        DescribeImageBaselineCheckResultResponse,
        "baseline_result",
        BaselineResult,
        {"ImageUuid": image_uuid},
    )
    return await client.walk(
        action, fetch, PAGINATION[action], key=lambda r: r.baseline_name_key or r
    )


async def describe_affected_malicious_file_images(
    client: SasClient,
) -> Rows[AffectedMaliciousFile]:
    """Every malicious file of every image, account-wide (DescribeAffectedMaliciousFileImages).

    ``PageSize`` goes out as a string, as the action types it (PAGINATION ``size_as_str``);
    ``CurrentPage`` and ``PageSize`` are both required.
    """
    action = "DescribeAffectedMaliciousFileImages"
    fetch = _pages(
        client,
        action,
        DescribeAffectedMaliciousFileImagesResponse,
        "affected_malicious_file_images_response",
        AffectedMaliciousFile,
    )
    return await client.walk(action, fetch, PAGINATION[action])


async def list_image_risk(client: SasClient) -> Rows[ImageRisk]:
    """The images in use in clusters with their risk statistics (ListImageRisk, seed 002).

    An image used by several clusters may be listed more than once; the first row wins.
    """
    action = "ListImageRisk"
    fetch = _pages(client, action, ListImageRiskResponse, "image_risk_list", ImageRisk)
    return await client.walk(action, fetch, PAGINATION[action], key=lambda r: r.uuid)


VUL_TYPE = "cve"  # DescribeImageVulList accepts only "cve" (image system vulnerabilities)
VUL_OPEN_STATUSES = "1,4"  # 1 unfixed, 4 being fixed; 7 (fixed) is not a present vulnerability


async def count_image_vulnerabilities(client: SasClient, image_uuid: str, necessity: str) -> int:
    """How many open vulnerabilities of ``necessity`` one image has (DescribeImageVulList).

    Asks for a single record and reads the top-level ``TotalCount``: one call per necessity,
    however many records the image has, and none of the records' bulky package details.
    """
    envelope = await client.call_model(
        "DescribeImageVulList",
        {
            "Type": VUL_TYPE,
            "Uuids": image_uuid,
            "Necessity": necessity,
            "StatusList": VUL_OPEN_STATUSES,
            "CurrentPage": 1,
            "PageSize": 1,
        },
        DescribeImageVulListResponse,
    )
    return envelope.total_count


VUL_PAGE_SIZE = 100
"""Records per DescribeImageVulList page when counting from the records. Sas documents the
default (10 or 20 by page version) but no maximum; 100 is what the simulator accepts. The
count never trusts the size: it compares the records it got with ``TotalCount``."""

VUL_MAX_RECORD_PAGES = 3
"""Reading records costs one call per page; the Necessity-filtered counts cost three calls
whatever the size. Beyond three pages the filtered counts are cheaper."""


async def _vul_page(
    client: SasClient, image_uuid: str, page: int, size: int, necessity: str | None = None
) -> DescribeImageVulListResponse:
    params: dict[str, object] = {
        "Type": VUL_TYPE,
        "Uuids": image_uuid,
        "StatusList": VUL_OPEN_STATUSES,
        "CurrentPage": page,
        "PageSize": size,
    }
    if necessity is not None:
        params["Necessity"] = necessity
    return await client.call_model("DescribeImageVulList", params, DescribeImageVulListResponse)


class VulnerabilityCounter:
    """Counts one image's open vulnerabilities per ``Necessity``, in as few calls as it needs.

    When the image's records (``expected`` is its ``VulCount`` from the inventory, if known)
    fit in at most ``VUL_MAX_RECORD_PAGES`` pages of ``VUL_PAGE_SIZE``, they are read and
    counted by their ``Necessity`` (one call for an image with up to 100 open
    vulnerabilities); otherwise, or when the records do not add up to ``TotalCount`` (rows
    that did not parse, a list that moved between pages), each necessity is counted with a
    ``Necessity`` filter and ``PageSize=1`` (three calls, whatever the size). Should Sas
    refuse the page size (``InvalidParameter*``: it documents no maximum), the counter keeps
    to the filtered counts from then on.
    """

    def __init__(self, client: SasClient) -> None:
        self.client = client
        self.read_records = True

    async def count(
        self, image_uuid: str, necessities: tuple[str, ...], expected: int | None = None
    ) -> dict[str, int]:
        fits = expected is None or math.ceil(expected / VUL_PAGE_SIZE) <= VUL_MAX_RECORD_PAGES
        if self.read_records and fits:
            try:
                counts = await _count_from_records(self.client, image_uuid)
            except RequestError as err:
                if not err.code.startswith("InvalidParameter"):
                    raise
                self.read_records = False
                log.warning(
                    "vulnerability record pages refused, counting by necessity filters",
                    extra={
                        "provider": PROVIDER,
                        "account": self.client.account,
                        "region": self.client.region,
                        "source": "sas_vulnerabilities",
                        "action": "DescribeImageVulList",
                        "code": err.code,
                    },
                )
                counts = None
            if counts is not None:
                return {n: counts.get(n, 0) for n in necessities}
        client = self.client
        return {n: await count_image_vulnerabilities(client, image_uuid, n) for n in necessities}


async def _count_from_records(client: SasClient, image_uuid: str) -> Counter[str] | None:
    """Necessity counts from the records themselves; None if they do not add up."""
    report = client.invalid_row("DescribeImageVulList")
    first = await _vul_page(client, image_uuid, 1, VUL_PAGE_SIZE)
    total, got = first.total_count, len(first.vul_records)
    if got == 0:
        return Counter() if total == 0 else None
    if math.ceil(total / got) > VUL_MAX_RECORD_PAGES:
        return None
    records = list(first.vul_records)
    page = 1
    while len(records) < total:
        page += 1
        if page > VUL_MAX_RECORD_PAGES:
            return None  # short pages: the filtered counts are cheaper from here
        answer = await _vul_page(client, image_uuid, page, got)
        if answer.total_count != total or not answer.vul_records:
            return None  # the list moved while we read it
        records += answer.vul_records
    if len(records) != total:
        return None
    parsed = parse_rows(VulRecord, records, report)
    if len(parsed) != total:
        return None
    return Counter(r.necessity for r in parsed)
