"""Sas RPC client: one ``call`` that signs, rate-limits, retries and maps errors; one function per action.

Every Sas image action is POST with all parameters in the query string and an empty body, as
the official SDK sends them (cloud-api-facts.md 1b).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from exporter.clouds.aliyun.schemas import (
    AffectedMaliciousFile,
    BaselineResult,
    DescribeAffectedMaliciousFileImagesResponse,
    DescribeImageBaselineCheckResultResponse,
    DescribeImageInstancesResponse,
    DescribeImageVulListResponse,
    ImageInstance,
    ImageRisk,
    ListImageRiskResponse,
    parse_rows,
)
from exporter.clouds.http import (
    Page,
    PageSpec,
    RetryPolicy,
    TokenBucket,
    call_with_retry,
    paginate,
)
from exporter.errors import (
    AuthError,
    PayloadError,
    RequestError,
    SourceError,
    ThrottledError,
    UpstreamError,
)
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

T = TypeVar("T")

VERSION = "2018-12-03"
PROVIDER = "aliyun"
DEFAULT_RATE = 10.0  # requests/s per (account, region, action): the documented Sas default

# Declarative pagination per action (STYLE habit 11); the simulator pages the same way.
PAGINATION: dict[str, PageSpec] = {
    "DescribeImageInstances": PageSpec(page_size=20),
    "DescribeImageBaselineCheckResult": PageSpec(page_size=20),
    "ListImageRisk": PageSpec(page_size=20),
    "DescribeAffectedMaliciousFileImages": PageSpec(page_size=20, size_as_str=True),
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
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("Code") or body.get("code") or "")
        message = str(body.get("Message") or body.get("message") or "")
        request_id = str(body.get("RequestId") or body.get("requestId") or "")
    status = response.status_code
    fallback = "http_5xx" if status >= 500 else "http_4xx"
    text = f"Sas answered HTTP {status}" + (f": {message}" if message else "")
    kwargs: dict[str, Any] = {
        "provider": PROVIDER,
        "code": code or fallback,
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


class SasClient:
    """Calls Sas actions for one (account, API region) through a shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: httpx.Auth,
        *,
        base_url: str,
        account: str,
        region: str,
        telemetry: Telemetry,
        rate: float = DEFAULT_RATE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._auth = auth
        self._base_url = base_url.rstrip("/") + "/"
        self.account = account
        self.region = region
        self._telemetry = telemetry
        self._rate = rate
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._buckets: dict[str, TokenBucket] = {}

    def _labels(self, action: str) -> tuple[str, str, str, str]:
        return (PROVIDER, self.account, self.region, action)

    def declare(self, *actions: str) -> None:
        """Pre-create the request counters of ``actions`` so they exist from the first scrape."""
        for action in actions:
            self._telemetry.declare("imagesec_api_requests", self._labels(action))

    def _bucket(self, action: str) -> TokenBucket:
        if action not in self._buckets:
            kwargs = {"sleep": self._sleep} if self._sleep else {}
            self._buckets[action] = TokenBucket(self._rate, **kwargs)  # type: ignore[arg-type]
        return self._buckets[action]

    async def call(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        """Call ``action`` with retries; return the decoded JSON object."""

        async def once() -> dict[str, Any]:
            await self._bucket(action).acquire()
            return await self._send(action, params)

        kwargs = {"sleep": self._sleep} if self._sleep else {}
        return await call_with_retry(once, self._retry, rng=self._rng, **kwargs)

    async def _send(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        # No RegionId: the endpoint selects the site, and several image actions (e.g.
        # DescribeImageVulList) document RegionId as a filter on the image's own region.
        query = {k: _param(v) for k, v in params.items() if v is not None}
        request = self._http.build_request(
            "POST",
            self._base_url,
            params=query,
            headers={
                "x-acs-action": action,
                "x-acs-version": VERSION,
                "accept": "application/json",
            },
        )
        self._telemetry.inc("imagesec_api_requests", self._labels(action))
        try:
            try:
                response = await self._http.send(request, auth=self._auth)
            except httpx.TimeoutException as err:
                raise UpstreamError(
                    f"{action} timed out", provider=PROVIDER, code="timeout"
                ) from err
            except httpx.HTTPError as err:
                raise UpstreamError(
                    f"{action} failed: {type(err).__name__}", provider=PROVIDER, code="connect"
                ) from err
            if response.status_code >= 400:
                raise error_from_response(response)
            try:
                body = json.loads(response.content)
            except ValueError as err:
                ctype = response.headers.get("content-type", "?")
                raise PayloadError(
                    f"{action}: answer is not JSON (content-type {ctype})", provider=PROVIDER
                ) from err
            if not isinstance(body, dict):
                raise PayloadError(f"{action}: answer is not a JSON object", provider=PROVIDER)
            if body.get("Code") and "PageInfo" not in body and len(body) <= 6:
                # A 200 carrying an error body: the SDK would call it success; we do not.
                raise RequestError(
                    f"{action}: {body.get('Message', 'error')}",
                    provider=PROVIDER,
                    code=str(body["Code"]),
                    request_id=str(body.get("RequestId", "")),
                )
            return body
        except SourceError as err:
            self.count_error(action, err)
            raise

    def count_error(self, action: str, err: SourceError) -> None:
        """Count a failed request of ``action`` once, by its code, and log it."""
        if getattr(err, "counted", False):
            return
        err.counted = True  # type: ignore[attr-defined]
        self._telemetry.inc("imagesec_api_request_errors", (*self._labels(action), err.code))
        log.warning(
            "api call failed provider=aliyun account=%s region=%s action=%s code=%s "
            "request_id=%s error=%s",
            self.account,
            self.region,
            action,
            err.code,
            err.request_id,
            err.message,
        )

    async def walk(
        self,
        action: str,
        fetch: Callable[[Mapping[str, object]], Awaitable[Page[T]]],
        key: Callable[[T], Hashable],
        spec: PageSpec | None = None,
    ) -> list[T]:
        """Paginate ``action``; errors of the walk itself (a shifting total) count as its errors."""
        try:
            return await paginate(fetch, spec or PAGINATION[action], key=key)
        except SourceError as err:
            self.count_error(action, err)
            raise

    def invalid_row(self, action: str) -> Callable[[object, Exception], None]:
        """A callback that counts and logs one skipped row of ``action``."""

        def report(row: object, err: Exception) -> None:
            self._telemetry.inc("imagesec_invalid_rows", self._labels(action))
            first = err.errors()[0] if isinstance(err, ValidationError) else None
            detail = f"{first['loc']}: {first['msg']}" if first else str(err)
            log.warning("skipped invalid row action=%s problem=%s", action, detail)

        return report

    async def page(
        self, action: str, params: Mapping[str, object], model: type[Any], list_field: str
    ) -> tuple[Any, list[Any]]:
        """Fetch one page: validate the envelope, return it with its raw rows."""
        body = await self.call(action, params)
        try:
            envelope = model.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            error = PayloadError(
                f"{action}: unexpected answer at {'.'.join(map(str, first['loc']))}: {first['msg']}",
                provider=PROVIDER,
                request_id=str(body.get("RequestId", "")),
            )
            self.count_error(action, error)
            raise error from None
        return envelope, getattr(envelope, list_field)


def _param(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def describe_image_instances(client: SasClient) -> list[ImageInstance]:
    """Every image asset (DescribeImageInstances, seed 000), de-duplicated by Uuid."""
    action = "DescribeImageInstances"

    async def fetch(params: Mapping[str, object]) -> Page[ImageInstance]:
        envelope, rows = await client.page(
            action, params, DescribeImageInstancesResponse, "image_instance_list"
        )
        items = parse_rows(ImageInstance, rows, client.invalid_row(action))
        return Page(items=items, total=envelope.page_info.total_count, count=len(rows))

    return await client.walk(action, fetch, key=lambda r: r.uuid)


# -- findings actions (issue 3) -------------------------------------------------------------


async def describe_image_baseline_check_result(
    client: SasClient, image_uuid: str
) -> list[BaselineResult]:
    """The baseline results of one image (DescribeImageBaselineCheckResult, seed 001).

    Rows repeated across pages are dropped by their ``BaselineNameKey`` (one result per
    baseline and image), so a sum over the rows counts every baseline once.
    """
    action = "DescribeImageBaselineCheckResult"

    async def fetch(params: Mapping[str, object]) -> Page[BaselineResult]:
        envelope, rows = await client.page(
            action,
            {"ImageUuid": image_uuid, **params},
            DescribeImageBaselineCheckResultResponse,
            "baseline_result",
        )
        items = parse_rows(BaselineResult, rows, client.invalid_row(action))
        return Page(items=items, total=envelope.page_info.total_count, count=len(rows))

    return await paginate(fetch, PAGINATION[action], key=lambda r: r.baseline_name_key or r)


async def describe_affected_malicious_file_images(
    client: SasClient,
) -> list[AffectedMaliciousFile]:
    """Every malicious file of every image, account-wide (DescribeAffectedMaliciousFileImages).

    ``PageSize`` goes out as a string, as the action types it (PAGINATION ``size_as_str``);
    ``CurrentPage`` and ``PageSize`` are both required.
    """
    action = "DescribeAffectedMaliciousFileImages"

    async def fetch(params: Mapping[str, object]) -> Page[AffectedMaliciousFile]:
        envelope, rows = await client.page(
            action,
            params,
            DescribeAffectedMaliciousFileImagesResponse,
            "affected_malicious_file_images_response",
        )
        items = parse_rows(AffectedMaliciousFile, rows, client.invalid_row(action))
        return Page(items=items, total=envelope.page_info.total_count, count=len(rows))

    return await paginate(fetch, PAGINATION[action])


async def list_image_risk(client: SasClient) -> list[ImageRisk]:
    """The images in use in clusters with their risk statistics (ListImageRisk, seed 002).

    An image used by several clusters may be listed more than once; the first row wins.
    """
    action = "ListImageRisk"

    async def fetch(params: Mapping[str, object]) -> Page[ImageRisk]:
        envelope, rows = await client.page(action, params, ListImageRiskResponse, "image_risk_list")
        items = parse_rows(ImageRisk, rows, client.invalid_row(action))
        return Page(items=items, total=envelope.page_info.total_count, count=len(rows))

    return await paginate(fetch, PAGINATION[action], key=lambda r: r.uuid)


VUL_TYPE = "cve"  # DescribeImageVulList accepts only "cve" (image system vulnerabilities)
VUL_OPEN_STATUSES = "1,4"  # 1 unfixed, 4 being fixed; 7 (fixed) is not a present vulnerability


async def count_image_vulnerabilities(client: SasClient, image_uuid: str, necessity: str) -> int:
    """How many open vulnerabilities of ``necessity`` one image has (DescribeImageVulList).

    Asks for a single record and reads the top-level ``TotalCount``: one call per necessity,
    however many records the image has, and none of the records' bulky package details.
    """
    envelope, _ = await client.page(
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
        "vul_records",
    )
    total: int = envelope.total_count
    return total
