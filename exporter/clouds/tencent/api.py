"""TCSS API 3.0 client: one ``call`` that signs, rate-limits, retries and maps errors; one function per action.

Every action is POST "/" with a JSON body, as the official SDK sends it (cloud-api-facts.md 2b).
TCSS answers errors with HTTP 200 and ``{"Response": {"Error": {...}}}``; the client looks for
``Response.Error`` whatever the Content-Type (the SDK only does for two exact values: 2d).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from exporter.clouds.client import PARSE_ERRORS, ApiClient, parse_rows
from exporter.clouds.http import Page, PageSpec, Rows
from exporter.clouds.tencent.schemas import (
    DescribeAssetImageListResponse,
    ImageDetail,
    ImagesInfo,
    ImagesInfoRow,
)
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

VERSION = "2020-11-01"
PROVIDER = "tencent"
DEFAULT_RATE = 20.0  # requests/s per (account, action): every TCSS action page says 20/s

# Declarative pagination per action (STYLE habit 11); the simulator pages the same way.
# Limit: "default 10, max 100" on every DescribeAssetImage* page (cloud-api-facts.md 3.6).
PAGINATION: dict[str, PageSpec] = {
    "DescribeAssetImageList": PageSpec(style="offset", page_size=100),
}

ACTIONS = ("DescribeAssetImageList", "DescribeAssetImageDetail")

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


def vendor_error(code: str, message: str, request_id: str) -> SourceError:
    """Map a ``Response.Error`` onto the error tree (the label code folded, the message cleaned)."""
    message = clean_message(message)
    text = f"TCSS error: {message}" if message else "TCSS error"
    kwargs: dict[str, Any] = {
        "provider": PROVIDER,
        "code": fold_code(PROVIDER, code),
        "vendor_code": code,
        "request_id": request_id,
    }
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
    code = fold_code(PROVIDER, f"http_{status // 100}xx")
    text = f"TCSS answered HTTP {status}"
    if status == 429:
        return ThrottledError(text, provider=PROVIDER, code=code)
    return UpstreamError(text, provider=PROVIDER, code=code)


class TcssClient(ApiClient):
    """Calls TCSS actions for one (account, region).

    TCSS is one service for every region, and its 20/s quota is per account and action: pass
    the account's other clients' ``buckets`` to share their rate limiters.
    """

    PROVIDER = PROVIDER
    DEFAULT_RATE = DEFAULT_RATE
    DECLARED = ("imagesec_api_requests", "imagesec_invalid_rows")

    def _request(self, action: str, params: Mapping[str, object]) -> httpx.Request:
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
        return self._http.build_request("POST", self._base_url, content=body, headers=headers)

    def _decode(self, action: str, response: httpx.Response) -> dict[str, Any]:
        """Return the ``Response`` object of a 200 answer; raise the mapped error it carries.

        The body is parsed as JSON whatever the Content-Type says (``application/json;
        charset=...`` and ``text/plain`` included), so an error envelope is never taken for
        success.
        """
        if response.status_code != 200:
            raise _http_error(response)
        body = self._json_body(action, response)
        inner = body.get("Response") if isinstance(body, dict) else None
        if not isinstance(inner, dict):
            raise PayloadError(f"{action}: answer has no Response object", provider=PROVIDER)
        request_id = inner.get("RequestId")
        request_id = clean_label(request_id[:65], 64) if isinstance(request_id, str) else ""
        error = inner.get("Error")
        if error is not None:
            if not isinstance(error, dict) or not isinstance(error.get("Code"), str):
                raise PayloadError(
                    f"{action}: malformed Response.Error", provider=PROVIDER, request_id=request_id
                )
            message = error.get("Message")
            raise vendor_error(
                clean_label(error["Code"][:81], 80),
                message[:4096] if isinstance(message, str) else "",
                request_id,
            )
        return inner


async def describe_asset_image_list(client: TcssClient) -> Rows[ImagesInfoRow]:
    """Every local image (DescribeAssetImageList, 3.6), de-duplicated by ImageID.

    Each page's rows are folded into compact ``ImagesInfoRow`` tuples as the page arrives:
    the walk never holds more than one page of pydantic models.
    """
    action = "DescribeAssetImageList"

    async def fetch(params: Mapping[str, object]) -> Page[ImagesInfoRow]:
        envelope = await client.call_model(action, params, DescribeAssetImageListResponse)
        items = parse_rows(ImagesInfo, envelope.rows, client.invalid_row(action))
        rows = [ImagesInfoRow.of(row) for row in items]
        return Page(items=rows, total=envelope.total_count, count=len(envelope.rows))

    return await client.walk(action, fetch, PAGINATION[action], key=lambda r: r.image_id)


async def describe_asset_image_detail(client: TcssClient, image_id: str) -> ImageDetail:
    """The detail of one image (DescribeAssetImageDetail, seed 003).

    An answer that does not fit :class:`ImageDetail` is one invalid row: it is counted in
    ``imagesec_invalid_rows`` and raised as ``PayloadError``.
    """
    action = "DescribeAssetImageDetail"
    body = await client.call(action, {"ImageID": image_id})
    try:
        return ImageDetail.model_validate(body)
    except PARSE_ERRORS as err:
        client.invalid_row(action)(body, err)
        raise PayloadError(
            f"{action}: answer for one image does not fit the documented shape",
            provider=PROVIDER,
            request_id=clean_label(str(body.get("RequestId") or "")[:65], 64),
        ) from None
