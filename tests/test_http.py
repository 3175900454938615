"""Shared client plumbing: pagination, token bucket, retries."""

from __future__ import annotations

import asyncio
import gzip
import random
import zlib
from collections.abc import AsyncIterator, Mapping

import pytest

from exporter.clouds.http import (
    ByteBudget,
    Page,
    PageSpec,
    RetryPolicy,
    TokenBucket,
    call_with_retry,
    paginate,
    read_capped,
)
from exporter.errors import (
    AuthError,
    PayloadError,
    ResponseTooLarge,
    ThrottledError,
    UpstreamError,
)
from tests.conftest import FakeClock


def pages_of(
    rows: list[int], size: int, total: int | None
) -> tuple[list[Mapping[str, object]], object]:
    seen: list[Mapping[str, object]] = []

    async def fetch(params: Mapping[str, object]) -> Page[int]:
        seen.append(params)
        if "CurrentPage" in params:
            start = (int(str(params["CurrentPage"])) - 1) * size
        else:
            start = int(str(params["Offset"]))
        return Page(rows[start : start + size], total)

    return seen, fetch


async def test_page_style_stops_on_total() -> None:
    seen, fetch = pages_of(list(range(40)), 20, 40)
    assert await paginate(fetch, PageSpec(page_size=20)) == list(range(40))  # type: ignore[arg-type]
    assert [p["CurrentPage"] for p in seen] == [1, 2]  # no third, empty page


async def test_offset_style_with_short_last_page_and_no_total() -> None:
    seen, fetch = pages_of(list(range(250)), 100, None)
    spec = PageSpec(style="offset", page_size=100)
    assert len(await paginate(fetch, spec)) == 250  # type: ignore[arg-type]
    assert [(p["Offset"], p["Limit"]) for p in seen] == [(0, 100), (100, 100), (200, 100)]


async def test_page_size_sent_as_string_when_the_action_types_it_so() -> None:
    seen, fetch = pages_of([1], 20, 1)
    await paginate(fetch, PageSpec(page_size=20, size_as_str=True))  # type: ignore[arg-type]
    assert seen[0]["PageSize"] == "20"


async def test_page_cap_bounds_a_runaway_walk() -> None:
    calls = 0

    async def fetch(params: Mapping[str, object]) -> Page[int]:
        nonlocal calls
        calls += 1
        return Page([calls], 10**9)  # a total that never comes

    rows = await paginate(fetch, PageSpec(page_size=1, max_pages=5))
    assert rows == [1, 2, 3, 4, 5]
    assert calls == 5
    assert rows.truncated == "page_cap"  # the exporter says the list is incomplete


async def test_duplicates_dropped_by_key() -> None:
    data = {1: ([1, 2], 4), 2: ([2, 3], 4)}

    async def fetch(params: Mapping[str, object]) -> Page[int]:
        rows, total = data[int(str(params["CurrentPage"]))]
        return Page(rows, total)

    rows = await paginate(fetch, PageSpec(page_size=2), key=lambda r: r)
    assert rows == [1, 2, 3] and not rows.truncated


async def test_a_shifted_total_rereads_the_previous_page_and_carries_on() -> None:
    fleet = [1, 2, 3, 4, 5, 6]
    seen: list[int] = []

    async def fetch(params: Mapping[str, object]) -> Page[int]:
        page = int(str(params["CurrentPage"]))
        seen.append(page)
        if seen == [1, 2]:
            fleet.remove(1)  # removed after page 1 was read: 3 slides back onto page 1
        return Page(fleet[(page - 1) * 2 : page * 2], len(fleet))

    rows = await paginate(fetch, PageSpec(page_size=2), key=lambda r: r)
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert seen == [1, 2, 1, 3] and not rows.truncated


async def test_rows_missed_by_a_shift_make_the_walk_truncated() -> None:
    fleet = list(range(10))

    async def fetch(params: Mapping[str, object]) -> Page[int]:
        page = int(str(params["CurrentPage"]))
        total = 10 if page == 1 else 11  # an 11th row appears but is never listed
        return Page(fleet[(page - 1) * 2 : page * 2], total)

    rows = await paginate(fetch, PageSpec(page_size=2), key=lambda r: r)
    assert sorted(rows) == fleet and rows.truncated == "shifting"


async def test_removals_larger_than_a_page_reread_enough_pages() -> None:
    fleet = list(range(10))
    seen: list[int] = []

    async def fetch(params: Mapping[str, object]) -> Page[int]:
        page = int(str(params["CurrentPage"]))
        seen.append(page)
        if len(seen) == 3:
            del fleet[0:3]  # 4 slides back two pages, past the page just read
        return Page(fleet[(page - 1) * 2 : page * 2], len(fleet))

    rows = await paginate(fetch, PageSpec(page_size=2), key=lambda r: r)
    assert sorted(rows) == list(range(10)) and seen[:5] == [1, 2, 3, 2, 1]


async def test_a_total_that_never_settles_fails() -> None:
    async def fetch(params: Mapping[str, object]) -> Page[int]:
        page = int(str(params["CurrentPage"]))
        return Page([page * 10, page * 10 + 1], 1000 + page)

    with pytest.raises(PayloadError, match="TotalCount changed"):
        await paginate(fetch, PageSpec(page_size=2))


async def test_invalid_rows_do_not_look_like_a_short_page() -> None:
    async def fetch(params: Mapping[str, object]) -> Page[int]:
        page = int(str(params["CurrentPage"]))
        return Page([page], None, count=2 if page < 3 else 1)  # one row per page was invalid

    assert await paginate(fetch, PageSpec(page_size=2)) == [1, 2, 3]


async def test_token_bucket_spaces_requests_at_the_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=1, clock=clock, sleep=clock.sleep)
    for _ in range(11):
        await bucket.acquire()
    assert clock.now - 1_700_000_000.0 == pytest.approx(1.0)


async def test_retry_until_success_and_no_retry_for_auth(clock: FakeClock) -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise UpstreamError("boom", code="http_5xx")
        return "ok"

    assert await call_with_retry(flaky, RetryPolicy(max_attempts=4), sleep=clock.sleep) == "ok"
    assert len(attempts) == 3 and len(clock.slept) == 2

    async def denied() -> str:
        attempts.append(1)
        raise AuthError("no", code="SignatureDoesNotMatch")

    attempts.clear()
    with pytest.raises(AuthError):
        await call_with_retry(denied, RetryPolicy(max_attempts=4), sleep=clock.sleep)
    assert len(attempts) == 1


async def test_retries_give_up_after_max_attempts(clock: FakeClock) -> None:
    async def throttled() -> str:
        raise ThrottledError("slow down", code="Throttling.User")

    with pytest.raises(ThrottledError):
        await call_with_retry(throttled, RetryPolicy(max_attempts=3), sleep=clock.sleep)
    assert len(clock.slept) == 8  # throttling: three times max_attempts

    async def failing() -> str:
        raise UpstreamError("boom", code="http_5xx")

    clock.slept.clear()
    with pytest.raises(UpstreamError):
        await call_with_retry(failing, RetryPolicy(max_attempts=3), sleep=clock.sleep)
    assert len(clock.slept) == 2


async def test_every_retry_path_has_a_total_deadline(clock: FakeClock) -> None:
    async def throttled() -> str:
        raise ThrottledError("slow down", code="Throttling.User", retry_after=4.0)

    policy = RetryPolicy(max_attempts=10, max_delay=5.0, deadline=10.0)
    with pytest.raises(ThrottledError):
        await call_with_retry(throttled, policy, sleep=clock.sleep, clock=clock)
    assert sum(clock.slept) <= 10.0 and len(clock.slept) == 2


def test_the_bucket_halves_its_pace_when_throttled_and_recovers_additively() -> None:
    bucket = TokenBucket(10.0)
    for _ in range(3):
        bucket.throttled()
    assert bucket.rate == 1.25
    for _ in range(20):
        bucket.throttled()
    assert bucket.rate == 10.0 / 64  # floor
    for _ in range(5):
        bucket.succeeded()
    assert bucket.rate == pytest.approx(10.0 / 64 + 5.0)
    for _ in range(20):
        bucket.succeeded()
    assert bucket.rate == 10.0


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def endless(part: bytes) -> AsyncIterator[bytes]:
    while True:
        yield part


async def test_read_capped_passes_bodies_within_the_cap() -> None:
    body = b'{"a": 1}' * 100
    assert await read_capped(chunks(body[:10], body[10:]), "", len(body)) == body
    assert await read_capped(chunks(gzip.compress(body)), "gzip", len(body)) == body
    assert await read_capped(chunks(zlib.compress(body)), "deflate", len(body)) == body


async def test_read_capped_stops_an_endless_body_at_the_cap() -> None:
    with pytest.raises(ResponseTooLarge) as caught:
        await read_capped(endless(b"x" * 65536), "", 1_000_000, "DescribeImageInstances")
    assert caught.value.code == "response_too_large" and not caught.value.retryable


def gzip_bomb(megabytes: int) -> bytes:
    """A gzip body of a few KB per inflated MB of zeros (built without holding the zeros)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(megabytes)) + packer.flush()


async def test_read_capped_bounds_decompression_of_a_gzip_bomb() -> None:
    bomb = gzip_bomb(50)
    assert len(bomb) < 100_000
    with pytest.raises(ResponseTooLarge):
        await read_capped(chunks(bomb), "gzip", 1_000_000)


@pytest.mark.parametrize(
    ("parts", "encoding"),
    [
        ((gzip.compress(b"x" * 1000)[:-12],), "gzip"),  # truncated
        ((b"not gzip at all",), "gzip"),
        ((b"{}",), "br"),
    ],
)
async def test_read_capped_rejects_broken_encodings_as_payload_errors(
    parts: tuple[bytes, ...], encoding: str
) -> None:
    with pytest.raises(PayloadError):
        await read_capped(chunks(*parts), encoding, 1_000_000)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    rng = random.Random(7)
    err = UpstreamError("x")
    for attempt in range(1, 8):
        for _ in range(50):
            assert 0 <= policy.delay(attempt, err, rng) <= min(5.0, 2 ** (attempt - 1))
    hinted = ThrottledError("x", retry_after=3.0)
    assert policy.delay(1, hinted, rng) == 3.0
    assert policy.delay(1, ThrottledError("x", retry_after=60.0), rng) == 5.0


async def test_answers_in_flight_share_the_accounts_byte_budget() -> None:
    budget = ByteBudget(3_000_000)
    first = await read_capped(chunks(b"x" * 1_000_000), "", 2_000_000, budget=budget)
    assert len(first) == 1_000_000 and budget.used == 0  # given back when the read ends

    gate = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        await gate.wait()

    reading = asyncio.create_task(read_capped(held(), "", 2_500_000, budget=budget))
    await asyncio.sleep(0)
    assert budget.used == 2_000_000
    with pytest.raises(ResponseTooLarge) as caught:  # a second answer finds the budget spent
        await read_capped(chunks(b"y" * 1_500_000), "", 2_500_000, budget=budget)
    assert caught.value.retryable and budget.used == 2_000_000
    gate.set()
    assert len(await reading) == 2_000_000 and budget.used == 0


@pytest.mark.parametrize("size", [1, 65_536, 10_000_000])
async def test_read_capped_decodes_large_compressible_bodies_whatever_the_chunking(
    size: int,
) -> None:
    body = bytes(3_000_000) + b'{"rows": []}' * 1000
    packed = gzip.compress(body)
    parts = [packed[i : i + size] for i in range(0, len(packed), size)]
    assert await read_capped(chunks(*parts), "gzip", len(body)) == body
