"""What the Sas and TCSS clients share: rate limits, retries, request and error counting, validation.

A subclass names its provider and says how a request is built (``_request``) and how an answer
is decoded or mapped onto the error tree (``_decode``); everything else lives here.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from exporter.clouds.http import (
    ACCEPT_ENCODING,
    ByteBudget,
    HttpLimits,
    Page,
    PageSpec,
    RetryPolicy,
    Rows,
    TokenBucket,
    call_with_retry,
    paginate,
    read_capped,
)
from exporter.errors import AuthError, PayloadError, SourceError, ThrottledError, UpstreamError
from exporter.normalise import clean_label
from exporter.telemetry import Telemetry

# What parsing hostile JSON can raise besides ValueError: 100k-deep nesting (RecursionError),
# numbers past float range (OverflowError), a body too big to build (MemoryError).
PARSE_ERRORS = (ValueError, TypeError, RecursionError, OverflowError, MemoryError)

# Headers that described the body on the wire; the buffered answer is already decoded.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def parse_rows(
    model: type[M],
    rows: Iterable[object],
    on_invalid: Callable[[object, Exception], None],
) -> list[M]:
    """Validate each row; report and skip the ones that do not fit ``model``."""
    parsed: list[M] = []
    for row in rows:
        try:
            if not isinstance(row, dict):
                raise TypeError(f"row is {type(row).__name__}, not an object")
            parsed.append(model.model_validate(row))
        except PARSE_ERRORS as err:  # ValidationError is a ValueError
            on_invalid(row, err)
    return parsed


def connection_cause(err: BaseException) -> dict[str, object]:
    """What broke a connection, from the exception chain: errno, TLS reason, the innermost type."""
    found: dict[str, object] = {}
    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, OSError) and node.errno is not None and "errno" not in found:
            found["errno"] = errno_name(node.errno)
        reason = getattr(node, "reason", None)
        if isinstance(reason, str) and "tls_reason" not in found:
            found["tls_reason"] = reason
        found["cause"] = type(node).__name__
        node = node.__cause__ or node.__context__
    return found


def _request_id(answer: object) -> str:
    value = answer.get("RequestId") if isinstance(answer, dict) else None
    return clean_label(value[:65], 64) if isinstance(value, str) else ""


async def _replay(content: bytes) -> AsyncIterator[bytes]:
    yield content


def errno_name(number: int) -> str:
    return errno.errorcode.get(number, str(number))


class ApiClient:
    """Calls one provider's actions for one (account, region) through a shared ``httpx.AsyncClient``.

    Every request is counted once in ``imagesec_api_requests`` and every failed one once, by
    its code, in ``imagesec_api_request_errors``. Rate limiters are kept per action in
    ``buckets``, which clients may share (TCSS: one quota per account and action).
    """

    PROVIDER: ClassVar[str]
    DEFAULT_RATE: ClassVar[float]  # requests/s per action
    DECLARED: ClassVar[tuple[str, ...]] = ("imagesec_api_requests",)  # counters ``declare`` creates

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: httpx.Auth | Callable[[], Awaitable[httpx.Auth]],
        *,
        base_url: str,
        account: str,
        region: str,
        telemetry: Telemetry,
        rate: float | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        buckets: dict[str, TokenBucket] | None = None,
        limits: HttpLimits | None = None,
        on_auth_error: Callable[[AuthError, httpx.Auth], None] | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        """Create a client.

        Args:
            auth: a signer, or a coroutine function returning one signed with the account's
                current credentials (awaited before each request, so signing stays I/O-free).
            rate: requests per second and action; ``DEFAULT_RATE`` when None.
            clock: the rate limiter's clock; tests pair it with ``sleep``.
            buckets: rate limiters by action, to share with other clients.
            limits: response size caps and the whole-request deadline.
            on_auth_error: told of every ``AuthError`` answer and the signer that was refused
                (the credential holder renews a temporary key the cloud no longer accepts).
            budget: bytes the answers in flight may hold, shared per account and endpoint.
        """
        self._http = http
        self._auth = auth
        self._base_url = base_url.rstrip("/") + "/"
        self.account = account
        self.region = region
        self._telemetry = telemetry
        self._rate = self.DEFAULT_RATE if rate is None else rate
        self._retry = retry or RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._buckets = buckets if buckets is not None else {}
        self._limits = limits or HttpLimits()
        self._on_auth_error = on_auth_error
        self._budget = budget or ByteBudget(self._limits.max_buffered_bytes)
        self._log = logging.getLogger(type(self).__module__)

    def _context(self, action: str) -> dict[str, object]:
        return {
            "provider": self.PROVIDER,
            "account": self.account,
            "region": self.region,
            "action": action,
        }

    def _labels(self, action: str) -> tuple[str, str, str, str]:
        return (self.PROVIDER, self.account, self.region, action)

    def declare(self, *actions: str) -> None:
        """Pre-create the counters of ``actions`` so they exist from the first scrape."""
        for action in actions:
            for metric in self.DECLARED:
                self._telemetry.declare(metric, self._labels(action))

    def _bucket(self, action: str) -> TokenBucket:
        if action not in self._buckets:
            self._buckets[action] = TokenBucket(self._rate, clock=self._clock, sleep=self._sleep)
        return self._buckets[action]

    async def call(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        """Call ``action`` with retries; return the decoded answer."""

        async def once() -> dict[str, Any]:
            await self._bucket(action).acquire()
            return await self._send(action, params)

        return await call_with_retry(
            once,
            self._retry,
            sleep=self._sleep,
            rng=self._rng,
            clock=self._clock,
            context=self._context(action),
        )

    async def call_model(self, action: str, params: Mapping[str, object], model: type[M]) -> M:
        """Call ``action`` and validate its answer against ``model`` (else PayloadError)."""
        body = await self.call(action, params)
        try:
            return model.model_validate(body)
        except PARSE_ERRORS as err:
            if isinstance(err, ValidationError):
                first = err.errors()[0]
                where = ".".join(map(str, first["loc"]))
                detail = f"at {clean_label(where, 80)}: {first['msg']}"
            else:
                detail = type(err).__name__
            failure = PayloadError(
                f"{action}: unexpected answer {detail}",
                provider=self.PROVIDER,
                request_id=clean_label(str(body.get("RequestId") or ""), 64),
            )
            self.count_error(action, failure)
            raise failure from None

    async def walk(
        self,
        action: str,
        fetch: Callable[[Mapping[str, object]], Awaitable[Page[T]]],
        spec: PageSpec,
        key: Callable[[T], Hashable] | None = None,
    ) -> Rows[T]:
        """Paginate ``action``; errors of the walk itself (a shifting total) count as its errors."""
        try:
            return await paginate(fetch, spec, key=key)
        except SourceError as err:
            self.count_error(action, err)
            raise

    def _request(self, action: str, params: Mapping[str, object]) -> httpx.Request:
        """The request of one call of ``action`` (unsigned: ``auth`` signs it)."""
        raise NotImplementedError

    def _decode(self, action: str, response: httpx.Response) -> dict[str, Any]:
        """The answer's object; raises the mapped ``SourceError`` if it carries an error."""
        raise NotImplementedError

    async def _exchange(
        self, action: str, request: httpx.Request, auth: httpx.Auth
    ) -> httpx.Response:
        """Send ``request`` and read its answer within the deadline and the size cap.

        The body is streamed and decoded here (``read_capped``), never by httpx, so neither
        an endless body nor a gzip bomb can grow past the cap; the connection is released
        whatever happens. The answer comes back buffered and already decoded.
        """
        host = request.url.host
        try:
            async with asyncio.timeout(self._limits.request_deadline):
                response = await self._http.send(request, auth=auth, stream=True)
                try:
                    if response.is_stream_consumed:  # an in-memory answer (MockTransport)
                        raw, encoding = _replay(response.content), ""
                    else:
                        raw = response.aiter_raw()
                        encoding = response.headers.get("content-encoding", "")
                    body = await read_capped(
                        raw, encoding, self._limits.cap(action), action, self._budget
                    )
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException) as err:
            what = type(err).__name__ if isinstance(err, httpx.TimeoutException) else "deadline"
            raise UpstreamError(
                f"{action} timed out ({what}) host={host}", provider=self.PROVIDER, code="timeout"
            ) from err
        except httpx.HTTPError as err:
            cause = connection_cause(err)
            detail = " ".join(f"{k}={v}" for k, v in cause.items())
            raise UpstreamError(
                f"{action} failed: {type(err).__name__} host={host} {detail}",
                provider=self.PROVIDER,
                code="connect",
            ) from err
        headers = [(k, v) for k, v in response.headers.multi_items() if k not in _WIRE_HEADERS]
        return httpx.Response(response.status_code, headers=headers, content=body, request=request)

    async def _send(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        # Credentials that cannot be had (CredentialError, an AuthError) fail the call before
        # any request is sent or counted.
        auth = self._auth if isinstance(self._auth, httpx.Auth) else await self._auth()
        request = self._request(action, params)
        request.headers["accept-encoding"] = ACCEPT_ENCODING
        self._telemetry.inc("imagesec_api_requests", self._labels(action))
        started = time.monotonic()
        bucket = self._bucket(action)
        try:
            response = await self._exchange(action, request, auth)
            try:
                answer = self._decode(action, response)
            finally:
                if self._log.isEnabledFor(logging.DEBUG):
                    self._log.debug(
                        "api request",
                        extra={
                            **self._context(action),
                            "status": response.status_code,
                            "latency": round(time.monotonic() - started, 4),
                            "bytes": len(response.content),
                            "request_id": _request_id(locals().get("answer")),
                        },
                    )
        except SourceError as err:
            err.provider = err.provider or self.PROVIDER
            if isinstance(err, ThrottledError):
                bucket.throttled()
            self.count_error(action, err)
            if isinstance(err, AuthError) and self._on_auth_error is not None:
                self._on_auth_error(err, auth)
            raise
        bucket.succeeded()
        return answer

    def _json_body(self, action: str, response: httpx.Response) -> object:
        """The answer parsed as JSON whatever its Content-Type (else a retryable PayloadError:
        a truncated or garbled body is a transport fault, like a 5xx)."""
        try:
            return json.loads(response.content)
        except PARSE_ERRORS as err:
            ctype = clean_label(response.headers.get("content-type", "?"), 60)
            raise PayloadError(
                f"{action}: answer is not JSON ({type(err).__name__}, content-type {ctype})",
                provider=self.PROVIDER,
                retryable=True,
            ) from None

    def count_error(self, action: str, err: SourceError) -> None:
        """Count a failed request of ``action`` once, by its code, and log it."""
        if getattr(err, "counted", False):
            return
        err.counted = True  # type: ignore[attr-defined]
        self._telemetry.inc("imagesec_api_request_errors", (*self._labels(action), err.code))
        extra = {**self._context(action), "code": err.code, "error": err.message}
        if err.vendor_code != err.code:
            extra["vendor_code"] = clean_label(err.vendor_code, 80)
        if err.request_id:
            extra["request_id"] = err.request_id
        self._log.warning("api call failed", extra=extra)

    def invalid_row(self, action: str) -> Callable[[object, Exception], None]:
        """A callback that counts and logs one skipped row of ``action``."""

        def report(row: object, err: Exception) -> None:
            self._telemetry.inc("imagesec_invalid_rows", self._labels(action))
            first = err.errors()[0] if isinstance(err, ValidationError) else None
            detail = f"{first['loc']}: {first['msg']}" if first else type(err).__name__
            self._log.warning(
                "skipped invalid row",
                extra={**self._context(action), "error": clean_label(detail, 200)},
            )

        return report
