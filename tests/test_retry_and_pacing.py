"""Retry backoff, retry-after and request pacing: the documented behaviour, held through public calls.

README ("Hostile answers", "Configuration", "How it works"): requests are spaced evenly by a
token bucket at the documented quota (Sas 10/s, TCSS 20/s per action); retryable errors are
retried with jittered exponential backoff ("full jitter": a wait drawn between 0 and 0.5 s
doubling per attempt, at most 20 s) up to ``refresh.max_attempts`` (4) attempts, throttling three
times as many, all within ``http.retry_deadline`` (3m); Sas ``x-acs-retry-after`` is honoured.
Waits go through an injected ``sleep`` and clock: nothing here sleeps for real.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import statistics

import httpx
import pytest

from exporter.clouds.aliyun.api import SasClient
from exporter.clouds.aliyun.signing import ACS3Auth
from exporter.clouds.http import HttpLimits, RetryPolicy, TokenBucket, call_with_retry
from exporter.clouds.tencent.api import TcssClient
from exporter.clouds.tencent.signing import TC3Auth
from exporter.config import parse_config
from exporter.errors import SourceError, ThrottledError, UpstreamError
from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    Fault,
    Simulator,
)
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

# The documented backoff: the first retry waits up to BASE, each further one up to twice the
# previous bound, never more than CAP.
BASE, CAP = 0.5, 20.0


async def retry_waits(
    policy: RetryPolicy, error: SourceError, seed: int, failures: int
) -> tuple[list[float], int]:
    """The waits ``call_with_retry`` sleeps while ``send`` fails ``failures`` times, and the
    number of attempts it made."""
    clock = FakeClock()
    attempts = 0

    async def send() -> str:
        nonlocal attempts
        attempts += 1
        if attempts <= failures:
            raise error
        return "ok"

    try:
        await call_with_retry(send, policy, sleep=clock.sleep, rng=random.Random(seed), clock=clock)
    except SourceError:
        pass
    return clock.slept, attempts


# -- backoff --------------------------------------------------------------------------------


async def test_backoff_grows_exponentially_between_its_bounds_with_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=9, base_delay=BASE, max_delay=CAP, deadline=1e9)
    per_retry: list[list[float]] = [[] for _ in range(8)]
    for seed in range(400):
        waits, attempts = await retry_waits(policy, UpstreamError("x", code="http_5xx"), seed, 8)
        assert attempts == 9 and len(waits) == 8
        for i, wait in enumerate(waits):
            per_retry[i].append(wait)
    for retry, samples in enumerate(per_retry, start=1):
        bound = min(CAP, BASE * 2 ** (retry - 1))  # 0.5, 1, 2, 4, 8, 16, 20, 20
        assert all(0.0 <= w <= bound for w in samples), retry  # jitter stays in range
        assert max(samples) > 0.95 * bound, retry  # the bound itself grows (and is reached)
        assert min(samples) < 0.05 * bound, retry  # full jitter: down to no wait at all
        assert statistics.fmean(samples) == pytest.approx(bound / 2, rel=0.1), retry
    # The draws come from the injected rng: the same seed, the same waits; another, others.
    error = UpstreamError("x", code="http_5xx")
    assert (await retry_waits(policy, error, 1, 3))[0] == (await retry_waits(policy, error, 1, 3))[
        0
    ]
    assert (await retry_waits(policy, error, 1, 3))[0] != (await retry_waits(policy, error, 2, 3))[
        0
    ]


async def test_a_retry_after_hint_is_waited_at_least_and_capped() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=BASE, max_delay=CAP, deadline=1e9)
    for seed in range(50):
        hinted = ThrottledError("slow down", code="Throttling.User", retry_after=3.0)
        waits, _ = await retry_waits(policy, hinted, seed, 1)
        assert len(waits) == 1 and 3.0 <= waits[0] <= CAP
        huge = ThrottledError("slow down", code="Throttling.User", retry_after=600.0)
        assert (await retry_waits(policy, huge, seed, 1))[0] == [CAP]


def test_production_retry_defaults_are_the_documented_ones() -> None:
    config = parse_config(
        {"accounts": [{"name": "a", "provider": "aliyun", "regions": ["cn-shanghai"]}]}
    )
    assert config.refresh.max_attempts == 4
    assert config.http.retry_deadline == 180.0
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.deadline) == (4, 180.0)
    limits = HttpLimits()
    assert (limits.request_deadline, limits.retry_deadline) == (60.0, 180.0)
    assert (policy.base_delay, policy.max_delay) == (BASE, CAP)


async def test_the_default_policy_retries_4_times_and_throttling_12() -> None:
    policy = RetryPolicy()
    waits, attempts = await retry_waits(policy, UpstreamError("x", code="http_5xx"), 3, 100)
    assert attempts == 4 and len(waits) == 3
    assert all(w <= min(CAP, BASE * 2**i) for i, w in enumerate(waits))
    waits, attempts = await retry_waits(policy, ThrottledError("x", code="Throttling"), 3, 100)
    assert attempts == 12 and sum(waits) <= 180.0


# -- the Sas client against the simulator --------------------------------------------------


def sas_client(sim: Simulator, clock: FakeClock, **kwargs: object) -> SasClient:
    nonces = itertools.count()
    auth = ACS3Auth(
        DEMO_ALIYUN_ACCESS_KEY_ID,
        DEMO_ALIYUN_ACCESS_KEY_SECRET,
        clock=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC),
        nonce=lambda: f"nonce-{next(nonces)}",
    )
    return SasClient(
        httpx.AsyncClient(transport=sim.transport("aliyun")),
        auth,
        base_url="https://tds.cn-shanghai.aliyuncs.com",
        account="demo",
        region="cn-shanghai",
        telemetry=Telemetry(),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(5),
        **kwargs,  # type: ignore[arg-type]
    )


def tcss_client(sim: Simulator, clock: FakeClock) -> TcssClient:
    return TcssClient(
        httpx.AsyncClient(transport=sim.transport("tencent")),
        TC3Auth(DEMO_TENCENT_SECRET_ID, DEMO_TENCENT_SECRET_KEY, clock=clock),
        base_url="https://tcss.tencentcloudapi.com",
        account="demo",
        region="ap-guangzhou",
        telemetry=Telemetry(),
        sleep=clock.sleep,
        clock=clock,
    )


PAGE = {"CurrentPage": 1, "PageSize": 20}


@pytest.mark.parametrize("hint_ms", [1500, 7000])
async def test_sas_x_acs_retry_after_is_honoured(hint_ms: int) -> None:
    clock = FakeClock()
    sim = Simulator(images_per_region=3, clock=clock, rate_limit=False)
    sim.faults.add(Fault(kind="throttle", cloud="aliyun", times=1, retry_after_ms=hint_ms))
    client = sas_client(sim, clock)
    body = await client.call("DescribeImageInstances", PAGE)
    assert body["PageInfo"]["TotalCount"] == 3
    assert sim.request_counts[("aliyun", "DescribeImageInstances")] == 2
    assert max(clock.slept) >= hint_ms / 1000  # the retry waited the server's hint
    # Without the hint, the first retry waits at most the first backoff bound.
    clock = FakeClock()
    sim = Simulator(images_per_region=3, clock=clock, rate_limit=False)
    sim.faults.add(Fault(kind="throttle", cloud="aliyun", times=1))
    client = sas_client(sim, clock)
    await client.call("DescribeImageInstances", PAGE)
    assert sim.request_counts[("aliyun", "DescribeImageInstances")] == 2
    assert max(clock.slept) <= BASE


# -- pacing -----------------------------------------------------------------------------------


async def test_sas_requests_are_spaced_at_the_documented_10_per_second() -> None:
    clock = FakeClock()
    start = clock.now
    sim = Simulator(images_per_region=3, clock=clock, rate_limit=False)
    client = sas_client(sim, clock)
    for _ in range(21):
        await client.call("DescribeImageInstances", PAGE)
    assert clock.now - start == pytest.approx(2.0)  # 20 gaps of 1/10 s
    assert clock.slept == pytest.approx([0.1] * 20, abs=1e-6)
    # Each action has its own bucket: another action does not wait for this one's.
    clock.slept.clear()
    await client.call("ListImageRisk", PAGE)
    assert clock.slept == []


async def test_tcss_requests_are_spaced_at_the_documented_20_per_second() -> None:
    clock = FakeClock()
    start = clock.now
    sim = Simulator(images_per_region=3, clock=clock, rate_limit=False)
    client = tcss_client(sim, clock)
    for _ in range(21):
        await client.call("DescribeAssetImageList", {"Limit": 10, "Offset": 0})
    assert clock.now - start == pytest.approx(1.0)  # 20 gaps of 1/20 s
    assert clock.slept == pytest.approx([0.05] * 20, abs=1e-6)


async def test_a_burst_passes_at_once_then_the_rate_holds() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await bucket.acquire()
    assert clock.slept == []  # the burst
    await bucket.acquire()
    assert clock.slept == pytest.approx([0.1])
    # A long idle time refills the burst, not more.
    clock.advance(3600)
    clock.slept.clear()
    for _ in range(7):
        await bucket.acquire()
    assert clock.slept == pytest.approx([0.1, 0.1])


async def test_the_default_burst_is_one_request() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, clock=clock, sleep=clock.sleep)
    clock.advance(60)
    for _ in range(3):
        await bucket.acquire()
    assert clock.slept == pytest.approx([0.25, 0.25])
    # The spacing counts from the previous request: time already passed is not waited again.
    clock.advance(0.1)
    clock.slept.clear()
    await bucket.acquire()
    assert clock.slept == pytest.approx([0.15])


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan])
def test_a_rate_that_is_not_positive_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate)


@pytest.mark.parametrize("burst", [0.0, 0.5, -1.0, math.nan])
def test_a_burst_below_one_request_is_refused(burst: float) -> None:
    # A burst below 1 could never hold the token a request needs.
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(10.0, burst=burst)
