"""Shared async plumbing for every cloud: bounded reads, rate limiting, retries, pagination."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from exporter.errors import PayloadError, ResponseTooLarge, SourceError, ThrottledError

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds of one exchange with a cloud API (the ``http:`` config section).

    ``max_response_bytes`` caps an answer after decompression; ``max_response_bytes_per_action``
    overrides it per action. ``request_deadline`` bounds one request from sending to the last
    byte (a body dripped a byte a second cannot hold a source longer); ``retry_deadline``
    bounds a call with all its retries. Connections are pooled per account and endpoint, at
    most ``max_connections`` each, and the answers being read from one pool hold at most
    ``max_buffered_bytes`` between them (``ByteBudget``): concurrency cannot multiply the
    per-answer cap past what one account may hold.
    """

    max_response_bytes: int = 16 * MiB
    max_response_bytes_per_action: Mapping[str, int] = field(default_factory=dict)
    max_buffered_bytes: int = 64 * MiB
    request_deadline: float = 60.0
    retry_deadline: float = 180.0
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    max_connections: int = 8

    def cap(self, action: str) -> int:
        """The size cap of ``action``'s answers."""
        return self.max_response_bytes_per_action.get(action, self.max_response_bytes)


class ByteBudget:
    """Bytes that answers being read may hold together (one per account and endpoint).

    Only the event loop's thread touches it, so a plain counter is enough.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, amount: int) -> bool:
        """Reserve ``amount`` bytes; False (nothing reserved) if that would pass the limit."""
        if self.used + amount > self.limit:
            return False
        self.used += amount
        return True

    def give(self, amount: int) -> None:
        self.used -= amount


_PIECE = 64 * 1024

# Accept-Encoding we send: only what ``read_capped`` can decompress with a bound.
ACCEPT_ENCODING = "gzip, deflate"


async def read_capped(
    raw: AsyncIterator[bytes],
    content_encoding: str,
    cap: int,
    action: str = "",
    budget: ByteBudget | None = None,
) -> bytes:
    """Read a (possibly gzip/deflate) body to at most ``cap`` decoded bytes.

    Decompression is bounded too (``max_length``): a gzip bomb stops at ``cap + 1`` bytes of
    output however small its input. Raises ``ResponseTooLarge`` past the cap, or when the
    ``budget`` shared with the other answers in flight runs out, and a retryable
    ``PayloadError`` for a truncated or corrupt compressed stream or an unknown encoding.
    The budget is given back when the read ends (the caller owns the returned bytes).
    """
    held = [0]
    try:
        return await _read_capped(raw, content_encoding, cap, action, budget, held)
    finally:
        if budget is not None:
            budget.give(held[0])


async def _read_capped(
    raw: AsyncIterator[bytes],
    content_encoding: str,
    cap: int,
    action: str,
    budget: ByteBudget | None,
    held: list[int],
) -> bytes:
    encoding = content_encoding.strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # gzip or zlib header
    elif encoding not in ("", "identity"):
        raise PayloadError(f"{action}: unsupported content-encoding {encoding[:40]!r}")
    # Pieces of at most _PIECE bytes, joined once at the end: an answer dropped at the cap never
    # needs one large block (which the allocator would keep from the process afterwards).
    pieces: list[bytes] = []
    size = received = 0
    too_large = ResponseTooLarge(f"{action}: answer larger than {cap} bytes")
    try:
        async for chunk in raw:
            received += len(chunk)
            if received > cap:  # the compressed input alone is too much
                raise too_large
            if decoder is None:
                pieces.append(chunk)
                size += len(chunk)
            else:
                data = chunk
                while data:
                    piece = decoder.decompress(data, min(_PIECE, cap + 1 - size))
                    pieces.append(piece)
                    size += len(piece)
                    if size > cap:
                        raise too_large
                    data = decoder.unconsumed_tail
            if size > cap:
                raise too_large
            if budget is not None and size > held[0]:
                if not budget.take(size - held[0]):
                    raise ResponseTooLarge(  # the pressure may pass: worth another attempt
                        f"{action}: answers in flight exceed {budget.limit} bytes for the account",
                        retryable=True,
                    )
                held[0] = size
    except zlib.error as err:
        raise PayloadError(f"{action}: corrupt compressed answer: {err}", retryable=True) from None
    if decoder is not None and not decoder.eof:
        raise PayloadError(f"{action}: truncated compressed answer", retryable=True)
    return b"".join(pieces)


class TokenBucket:
    """Token bucket: ``rate`` requests per second on average, bursts up to ``burst``.

    The default burst of 1 spaces requests evenly: the vendor's own bucket (which allows a
    burst) then absorbs network jitter instead of rejecting a request that arrived 5 ms early.
    Waiters are served in arrival order (the lock is FIFO).

    Pacing adapts (AIMD): every throttled answer halves the rate (down to ``rate / 64``),
    every success adds back a tenth of the configured rate. Sustained throttling thus slows
    the source to what the vendor accepts instead of failing its pass.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not rate > 0:  # NaN too
            raise ValueError("rate must be positive")
        if burst is not None and not burst >= 1:
            raise ValueError("burst must be at least one request")
        self.rate = rate
        self.max_rate = rate
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

    def throttled(self) -> None:
        """The vendor refused a request for flow control: halve the pace."""
        self.rate = max(self.max_rate / 64, self.rate / 2)

    def succeeded(self) -> None:
        """A request went through: recover a tenth of the configured pace."""
        if self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate + self.max_rate / 10)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered exponential backoff ("full jitter"), honouring a server's retry-after hint.

    A retryable error is tried up to ``max_attempts`` times in all, throttling up to
    ``throttled_attempts`` times (default three times as many: the bucket slows down
    meanwhile, so patience is what gets through). No retry starts whose wait would end past
    ``deadline`` seconds after the first attempt.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    deadline: float = 180.0
    throttled_attempts: int | None = None

    def attempts(self, error: SourceError) -> int:
        """How many attempts in all ``error``'s kind gets."""
        if isinstance(error, ThrottledError):
            return self.throttled_attempts or 3 * self.max_attempts
        return self.max_attempts

    def delay(self, attempt: int, error: SourceError, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempts count from 1)."""
        backoff = rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** min(attempt - 1, 30)))
        if error.retry_after is not None:
            return min(self.max_delay, max(backoff, error.retry_after))
        return backoff


async def call_with_retry(
    send: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    context: Mapping[str, object] | None = None,
) -> T:
    """Run ``send`` until it succeeds, a non-retryable error occurs, attempts or the deadline
    run out. ``context`` (provider, account, region, action) goes into the retry log lines."""
    rng = rng or random.Random()
    started = clock()
    attempt = 1
    while True:
        try:
            return await send()
        except SourceError as err:
            if not err.retryable or attempt >= policy.attempts(err):
                raise
            wait = policy.delay(attempt, err, rng)
            if clock() + wait - started > policy.deadline:
                raise
            log.info(
                "retrying",
                extra={**(context or {}), "code": err.code, "attempt": attempt, "wait": wait},
            )
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


class Rows(list[T]):
    """The rows of a walk; ``truncated`` says why the list may be incomplete ("" if it is not).

    ``page_cap``: the walk stopped at ``PageSpec.max_pages``. ``shifting``: the list changed
    during the walk and fewer distinct rows were seen than the last total claims (rows that
    moved in the list while it was walked, or a server that claims rows it never sends).
    """

    truncated: str = ""


MAX_SHIFTS = 8
"""Total changes a walk absorbs; past that the list is too unstable to describe."""


async def paginate(
    fetch: Callable[[Mapping[str, object]], Awaitable[Page[T]]],
    spec: PageSpec,
    *,
    key: Callable[[T], Hashable] | None = None,
) -> Rows[T]:
    """Walk every page; stop on the total (else a short page), an empty page or the page cap.

    Rows whose ``key`` was already seen are dropped (vendors repeat rows across pages when the
    data shifts during the walk). An image added or removed during the walk changes the total:
    the pages before the one that showed the change are read again (a removal slides rows back
    across that boundary), and the walk carries on. It fails only when the total keeps changing
    (more than ``MAX_SHIFTS`` times); rows it could not see make it ``truncated``.
    """
    rows: Rows[T] = Rows()
    seen: set[Hashable] = set()
    total: int | None = None
    listed = 0  # distinct rows seen, invalid ones included
    shifts = 0

    def take(page: Page[T]) -> None:
        nonlocal listed
        listed += page.size - len(page.items)
        for item in page.items:
            if key is not None:
                k = key(item)
                if k in seen:
                    continue
                seen.add(k)
            rows.append(item)
            listed += 1

    for index in range(spec.max_pages):
        page = await fetch(spec.params(index))
        take(page)
        if page.total is not None:
            if total is not None and page.total != total:
                shifts += 1
                if shifts > MAX_SHIFTS:
                    raise PayloadError(
                        f"TotalCount changed {shifts} times during pagination "
                        f"(now {page.total}): the list is too unstable to walk"
                    )
                log.info(
                    "list changed during pagination",
                    extra={"total": page.total, "previous": total, "page": index},
                )
                # Re-read as many pages before this one as the change could have slid rows
                # back across (one per page_size rows removed, at least one).
                back = max(1, -(-abs(page.total - total) // spec.page_size))
                for previous in range(index - 1, max(-1, index - 1 - back), -1):
                    take(await fetch(spec.params(previous)))
            total = page.total
        if page.size == 0:
            break
        if total is None and page.size < spec.page_size:
            break
        if total is not None and (index + 1) * spec.page_size >= total:
            break
    else:
        log.warning(
            "pagination stopped at the page cap",
            extra={"max_pages": spec.max_pages, "rows": len(rows)},
        )
        rows.truncated = "page_cap"
        return rows
    if shifts and total is not None and listed < total:
        rows.truncated = "shifting"
    return rows
