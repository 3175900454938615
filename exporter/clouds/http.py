"""Shared async plumbing for every cloud: rate limiting, retries with backoff, pagination."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from exporter.errors import PayloadError, SourceError

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """Token bucket: ``rate`` requests per second on average, bursts up to ``burst``.

    The default burst of 1 spaces requests evenly: the vendor's own bucket (which allows a
    burst) then absorbs network jitter instead of rejecting a request that arrived 5 ms early.
    Waiters are served in arrival order (the lock is FIFO).
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else 1.0
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Take a token, sleeping until it is due (a debt, not a poll: no spinning on float time)."""
        async with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            if self._tokens < 0:
                await self._sleep(-self._tokens / self.rate)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered exponential backoff ("full jitter"), honouring a server's retry-after hint."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int, error: SourceError, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempts count from 1)."""
        backoff = rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if error.retry_after is not None:
            return min(self.max_delay, max(backoff, error.retry_after))
        return backoff


async def call_with_retry(
    send: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``send`` until it succeeds, a non-retryable error occurs, or attempts run out."""
    rng = rng or random.Random()
    attempt = 1
    while True:
        try:
            return await send()
        except SourceError as err:
            if not err.retryable or attempt >= policy.max_attempts:
                raise
            wait = policy.delay(attempt, err, rng)
            log.info("retrying code=%s attempt=%d wait=%.2fs", err.code, attempt, wait)
            await sleep(wait)
            attempt += 1


@dataclass(frozen=True, slots=True)
class PageSpec:
    """How one action pages: CurrentPage/PageSize (1-based) or Offset/Limit."""

    style: Literal["page", "offset"] = "page"
    page_size: int = 20
    max_pages: int = 1000
    page_param: str = "CurrentPage"
    size_param: str = "PageSize"
    size_as_str: bool = False  # Sas DescribeAffectedMaliciousFileImages types PageSize as a string

    def params(self, index: int) -> dict[str, object]:
        """Request parameters for the page with 0-based ``index``."""
        size: object = str(self.page_size) if self.size_as_str else self.page_size
        if self.style == "page":
            return {self.page_param: index + 1, self.size_param: size}
        return {"Offset": index * self.page_size, "Limit": size}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page: its valid rows, the total the server claims, and how many rows it carried.

    ``count`` includes rows that were skipped as invalid, so they do not look like a short page.
    """

    items: Sequence[T]
    total: int | None
    count: int | None = None

    @property
    def size(self) -> int:
        return len(self.items) if self.count is None else self.count


async def paginate(
    fetch: Callable[[Mapping[str, object]], Awaitable[Page[T]]],
    spec: PageSpec,
    *,
    key: Callable[[T], Hashable] | None = None,
) -> list[T]:
    """Walk every page; stop on the total (else a short page), an empty page or the page cap.

    Rows whose ``key`` was already seen are dropped (vendors repeat rows across pages when the
    data shifts during the walk). A total that changes mid-walk means the pages do not describe
    one consistent list, so the walk fails rather than export a mix.
    """
    rows: list[T] = []
    seen: set[Hashable] = set()
    total: int | None = None
    for index in range(spec.max_pages):
        page = await fetch(spec.params(index))
        if page.total is not None:
            if total is not None and page.total != total:
                raise PayloadError(
                    f"TotalCount changed during pagination ({total} -> {page.total})"
                )
            total = page.total
        for item in page.items:
            if key is not None:
                k = key(item)
                if k in seen:
                    continue
                seen.add(k)
            rows.append(item)
        if page.size == 0:
            return rows
        if total is None and page.size < spec.page_size:
            return rows
        if total is not None and (index + 1) * spec.page_size >= total:
            return rows
    log.warning(
        "pagination stopped at the page cap max_pages=%d rows=%d", spec.max_pages, len(rows)
    )
    return rows
