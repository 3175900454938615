"""Shared client plumbing: pagination, token bucket, retries."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from exporter.clouds.http import Page, PageSpec, RetryPolicy, TokenBucket, call_with_retry, paginate
from exporter.errors import AuthError, PayloadError, ThrottledError, UpstreamError
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


async def test_duplicates_dropped_by_key_and_changing_total_fails() -> None:
    data = {1: ([1, 2], 4), 2: ([2, 3], 4)}

    async def fetch(params: Mapping[str, object]) -> Page[int]:
        rows, total = data[int(str(params["CurrentPage"]))]
        return Page(rows, total)

    assert await paginate(fetch, PageSpec(page_size=2), key=lambda r: r) == [1, 2, 3]
    data[2] = ([3, 4], 5)
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
    assert len(clock.slept) == 2


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
