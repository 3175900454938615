"""Live checks against the real clouds: the same provider calls the simulator answers in CI.

They are opt-in: skipped unless ``IMAGESEC_LIVE=1``, which then requires the vendor's keys in the
environment (opting in without them fails, naming the missing variables, rather than skipping
and passing). They run in a manual or scheduled job (no machine of this project's CI can reach
the clouds). A failure here
means the simulator or a fixture has drifted from the vendor: refresh the fixture and open an
issue. Regions: ``IMAGESEC_LIVE_ALIYUN_REGION`` (default cn-shanghai),
``IMAGESEC_LIVE_TENCENT_REGION`` (default ap-guangzhou).
"""

from __future__ import annotations

import os

import httpx
import pytest

from exporter.config import parse_config, resolve_all
from exporter.refresh import Refresher
from exporter.sources import build_sources
from exporter.telemetry import Telemetry

LIVE = os.environ.get("IMAGESEC_LIVE") == "1"
PROVIDERS = {
    "aliyun": (
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        "IMAGESEC_LIVE_ALIYUN_REGION",
        "cn-shanghai",
    ),
    "tencent": (
        ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"),
        "IMAGESEC_LIVE_TENCENT_REGION",
        "ap-guangzhou",
    ),
}


def live_region(provider: str) -> str:
    """The region to call; skip unless opted in, fail when opted in without the keys."""
    keys, region_var, default_region = PROVIDERS[provider]
    if not LIVE:
        pytest.skip(f"live test: opt in with IMAGESEC_LIVE=1 and {', '.join(keys)}")
    missing = [name for name in keys if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"IMAGESEC_LIVE=1 but {', '.join(missing)} not set: export the {provider} keys "
            f"(or unset IMAGESEC_LIVE)",
            pytrace=False,
        )
    return os.environ.get(region_var, default_region)


@pytest.mark.live
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_every_collector_refreshes_against_the_real_cloud(provider: str) -> None:
    region = live_region(provider)
    config = parse_config(
        {"accounts": [{"name": "live", "provider": provider, "regions": [region]}]}
    )
    telemetry = Telemetry()
    async with httpx.AsyncClient(timeout=30) as http:
        sources = build_sources(config, resolve_all(config), telemetry, http)
        snapshot = await Refresher(sources, telemetry=telemetry).run_once()
    failed = {str(k): s.last_error for k, s in snapshot.sources.items() if not s.up}
    assert failed == {}
    invalid = {k: v for k, v in telemetry.values("imagesec_invalid_rows").items() if v}
    assert invalid == {}  # every row the vendor sent fits our models
