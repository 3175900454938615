"""TCSS API 3.0 client: one ``call`` that signs, rate-limits, retries and maps errors; one function per action.

Every action is POST "/" with a JSON body, as the official SDK sends it (cloud-api-facts.md 2b).
TCSS answers errors with HTTP 200 and ``{"Response": {"Error": {...}}}``; the client looks for
``Response.Error`` whatever the Content-Type (the SDK only does for two exact values: 2d).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from exporter.clouds.http import (
    Page,
    PageSpec,
    RetryPolicy,
    TokenBucket,
    call_with_retry,
    paginate,
)
from exporter.clouds.tencent.schemas import (
    DescribeAssetImageListResponse,
    ImageDetail,
    ImagesInfo,
    parse_rows,
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

VERSION = "2020-11-01"
PROVIDER = "tencent"
DEFAULT_RATE = 20.0  # requests/s per (account, action): every TCSS action page says 20/s

# Declarative pagination per action (STYLE habit 11); the simulator pages the same way.
PAGINATION: dict[str, PageSpec] = {
    "DescribeAssetImageList": PageSpec(style="offset", page_size=100),
}

# Vendor codes (cloud-api-facts.md 2d) by what retrying can do about them. Codes not listed
# (InvalidParameter*, MissingParameter, ResourceNotFound, UnsupportedRegion, FailedOperation*,
# ...) reject the request itself: RequestError, never retried.
_AUTH_CODES = frozenset({"UnauthorizedOperation", "IpInBlacklist", "IpNotInWhitelist"})
_AUTH_PREFIXES = ("AuthFailure",)
_THROTTLE_PREFIXES = ("RequestLimitExceeded",)
_SERVER_PREFIXES = (
    "InternalError",
    "ServiceUnavailable",
    "ResourceUnavailable",
    "ResourceInsufficient",
)

M = TypeVar("M", bound=BaseModel)


def vendor_error(code: str, message: str, request_id: str) -> SourceError:
    """Map a ``Response.Error`` onto the error tree."""
    text = f"TCSS error: {message}" if message else "TCSS error"
    kwargs: dict[str, Any] = {"provider": PROVIDER, "code": code, "request_id": request_id}
    if code.startswith(_THROTTLE_PREFIXES):
        return ThrottledError(text, **kwargs)
    if code.startswith(_AUTH_PREFIXES) or code in _AUTH_CODES:
        return AuthError(text, **kwargs)
    if code.startswith(_SERVER_PREFIXES):
        return UpstreamError(text, **kwargs)
    return RequestError(text, **kwargs)


def _http_error(response: httpx.Response) -> SourceError:
    """A non-200 answer: TCSS itself never sends one, so it comes from a gateway or proxy."""
    status = response.status_code
    code = f"http_{status // 100}xx"
    text = f"TCSS answered HTTP {status}"
    if status == 429:
        return ThrottledError(text, provider=PROVIDER, code=code)
    return UpstreamError(text, provider=PROVIDER, code=code)


def decode_response(action: str, response: httpx.Response) -> dict[str, Any]:
    """Return the ``Response`` object of a 200 answer; raise the mapped error it carries.

    The body is parsed as JSON whatever the Content-Type says (``application/json; charset=...``
    and ``text/plain`` included), so an error envelope is never taken for success.
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        ctype = response.headers.get("content-type", "?")
        raise PayloadError(
            f"{action}: answer is not JSON (content-type {ctype})", provider=PROVIDER
        ) from None
    inner = body.get("Response") if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        raise PayloadError(f"{action}: answer has no Response object", provider=PROVIDER)
    request_id = str(inner.get("RequestId") or "")
    error = inner.get("Error")
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("Code"), str):
            raise PayloadError(
                f"{action}: malformed Response.Error", provider=PROVIDER, request_id=request_id
            )
        raise vendor_error(error["Code"], str(error.get("Message") or ""), request_id)
    return inner


class TcssClient:
    """Calls TCSS actions for one (account, region) through a shared ``httpx.AsyncClient``."""

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
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        buckets: dict[str, TokenBucket] | None = None,
    ) -> None:
        """Create a client.

        Args:
            buckets: rate limiters by action, to share with the account's other regions: TCSS
                is one service for every region, and its 20/s quota is per account and action.
        """
        self._http = http
        self._auth = auth
        self._base_url = base_url.rstrip("/") + "/"
        self.account = account
        self.region = region
        self._telemetry = telemetry
        self._rate = rate
        self._retry = retry or RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self._clock = clock  # the rate limiter's clock; tests pair it with ``sleep``
        self._rng = rng or random.Random()
        self._buckets = buckets if buckets is not None else {}

    def _labels(self, action: str) -> tuple[str, str, str, str]:
        return (PROVIDER, self.account, self.region, action)

    def declare(self, *actions: str) -> None:
        """Pre-create the counters of ``actions`` so they exist from the first scrape."""
        for action in actions:
            self._telemetry.declare("imagesec_api_requests", self._labels(action))
            self._telemetry.declare("imagesec_invalid_rows", self._labels(action))

    def _bucket(self, action: str) -> TokenBucket:
        if action not in self._buckets:
            self._buckets[action] = TokenBucket(self._rate, clock=self._clock, sleep=self._sleep)
        return self._buckets[action]

    async def call(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        """Call ``action`` with retries; return the ``Response`` object of the answer."""

        async def once() -> dict[str, Any]:
            await self._bucket(action).acquire()
            return await self._send(action, params)

        return await call_with_retry(once, self._retry, sleep=self._sleep, rng=self._rng)

    async def call_model(self, action: str, params: Mapping[str, object], model: type[M]) -> M:
        """Call ``action`` and validate its ``Response`` against ``model`` (else PayloadError)."""
        body = await self.call(action, params)
        try:
            return model.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"]))
            failure = PayloadError(
                f"{action}: unexpected answer at {where}: {first['msg']}",
                provider=PROVIDER,
                request_id=str(body.get("RequestId") or ""),
            )
            self._failed(action, failure)
            raise failure from None

    async def _send(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        # The SDK's body: json.dumps with default separators, unset (None) fields dropped.
        body = json.dumps({k: v for k, v in params.items() if v is not None}).encode()
        headers = {
            "Content-Type": "application/json",  # exactly this: it is signed (2a)
            "X-TC-Action": action,
            "X-TC-Version": VERSION,
            "X-TC-Language": "en-US",
        }
        if self.region:
            headers["X-TC-Region"] = self.region
        request = self._http.build_request("POST", self._base_url, content=body, headers=headers)
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
            if response.status_code != 200:
                raise _http_error(response)
            return decode_response(action, response)
        except SourceError as err:
            self._failed(action, err)
            raise

    def _failed(self, action: str, err: SourceError) -> None:
        self._telemetry.inc("imagesec_api_request_errors", (*self._labels(action), err.code))
        log.warning(
            "api call failed provider=tencent account=%s region=%s action=%s code=%s request_id=%s",
            self.account,
            self.region,
            action,
            err.code,
            err.request_id,
        )

    def invalid_row(self, action: str) -> Callable[[object, Exception], None]:
        """A callback that counts and logs one skipped row of ``action``."""

        def report(row: object, err: Exception) -> None:
            self._telemetry.inc("imagesec_invalid_rows", self._labels(action))
            first = err.errors()[0] if isinstance(err, ValidationError) else None
            detail = f"{first['loc']}: {first['msg']}" if first else str(err)
            log.warning("skipped invalid row provider=tencent action=%s problem=%s", action, detail)

        return report


async def describe_asset_image_list(client: TcssClient) -> list[ImagesInfo]:
    """Every local image (DescribeAssetImageList, 3.6), de-duplicated by ImageID."""
    action = "DescribeAssetImageList"

    async def fetch(params: Mapping[str, object]) -> Page[ImagesInfo]:
        envelope = await client.call_model(action, params, DescribeAssetImageListResponse)
        items = parse_rows(ImagesInfo, envelope.rows, client.invalid_row(action))
        return Page(items=items, total=envelope.total_count, count=len(envelope.rows))

    return await paginate(fetch, PAGINATION[action], key=lambda r: r.image_id)


async def describe_asset_image_detail(client: TcssClient, image_id: str) -> ImageDetail:
    """The detail of one image (DescribeAssetImageDetail, seed 003).

    An answer that does not fit :class:`ImageDetail` is one invalid row: it is counted in
    ``imagesec_invalid_rows`` and raised as ``PayloadError``.
    """
    action = "DescribeAssetImageDetail"
    body = await client.call(action, {"ImageID": image_id})
    try:
        return ImageDetail.model_validate(body)
    except ValidationError as err:
        client.invalid_row(action)(body, err)
        raise PayloadError(
            f"{action}: answer for one image does not fit the documented shape",
            provider=PROVIDER,
            request_id=str(body.get("RequestId") or ""),
        ) from None
