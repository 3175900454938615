"""What the Sas and TCSS clients share: rate limits, retries, request and error counting, validation.

A subclass names its provider and says how a request is built (``_request``) and how an answer
is decoded or mapped onto the error tree (``_decode``); everything else lives here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from exporter.clouds.http import Page, PageSpec, RetryPolicy, TokenBucket, call_with_retry, paginate
from exporter.errors import PayloadError, SourceError, UpstreamError
from exporter.telemetry import Telemetry

T = TypeVar("T")
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
    ) -> None:
        """Create a client.

        Args:
            auth: a signer, or a coroutine function returning one signed with the account's
                current credentials (awaited before each request, so signing stays I/O-free).
            rate: requests per second and action; ``DEFAULT_RATE`` when None.
            clock: the rate limiter's clock; tests pair it with ``sleep``.
            buckets: rate limiters by action, to share with other clients.
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
        self._log = logging.getLogger(type(self).__module__)

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

        return await call_with_retry(once, self._retry, sleep=self._sleep, rng=self._rng)

    async def call_model(self, action: str, params: Mapping[str, object], model: type[M]) -> M:
        """Call ``action`` and validate its answer against ``model`` (else PayloadError)."""
        body = await self.call(action, params)
        try:
            return model.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"]))
            failure = PayloadError(
                f"{action}: unexpected answer at {where}: {first['msg']}",
                provider=self.PROVIDER,
                request_id=str(body.get("RequestId") or ""),
            )
            self.count_error(action, failure)
            raise failure from None

    async def walk(
        self,
        action: str,
        fetch: Callable[[Mapping[str, object]], Awaitable[Page[T]]],
        spec: PageSpec,
        key: Callable[[T], Hashable] | None = None,
    ) -> list[T]:
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

    async def _send(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        # Credentials that cannot be had (CredentialError, an AuthError) fail the call before
        # any request is sent or counted.
        auth = self._auth if isinstance(self._auth, httpx.Auth) else await self._auth()
        request = self._request(action, params)
        self._telemetry.inc("imagesec_api_requests", self._labels(action))
        try:
            try:
                response = await self._http.send(request, auth=auth)
            except httpx.TimeoutException as err:
                raise UpstreamError(
                    f"{action} timed out", provider=self.PROVIDER, code="timeout"
                ) from err
            except httpx.HTTPError as err:
                raise UpstreamError(
                    f"{action} failed: {type(err).__name__}", provider=self.PROVIDER, code="connect"
                ) from err
            return self._decode(action, response)
        except SourceError as err:
            self.count_error(action, err)
            raise

    def _json_body(self, action: str, response: httpx.Response) -> object:
        """The answer parsed as JSON whatever its Content-Type (else PayloadError)."""
        try:
            return json.loads(response.content)
        except ValueError:
            ctype = response.headers.get("content-type", "?")
            raise PayloadError(
                f"{action}: answer is not JSON (content-type {ctype})", provider=self.PROVIDER
            ) from None

    def count_error(self, action: str, err: SourceError) -> None:
        """Count a failed request of ``action`` once, by its code, and log it."""
        if getattr(err, "counted", False):
            return
        err.counted = True  # type: ignore[attr-defined]
        self._telemetry.inc("imagesec_api_request_errors", (*self._labels(action), err.code))
        self._log.warning(
            "api call failed provider=%s account=%s region=%s action=%s code=%s "
            "request_id=%s error=%s",
            self.PROVIDER,
            self.account,
            self.region,
            action,
            err.code,
            err.request_id,
            err.message,
        )

    def invalid_row(self, action: str) -> Callable[[object, Exception], None]:
        """A callback that counts and logs one skipped row of ``action``."""

        def report(row: object, err: Exception) -> None:
            self._telemetry.inc("imagesec_invalid_rows", self._labels(action))
            first = err.errors()[0] if isinstance(err, ValidationError) else None
            detail = f"{first['loc']}: {first['msg']}" if first else str(err)
            self._log.warning(
                "skipped invalid row provider=%s action=%s problem=%s",
                self.PROVIDER,
                action,
                detail,
            )

        return report
