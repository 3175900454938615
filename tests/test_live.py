"""Live checks against the real clouds: the same provider calls the simulator answers in CI.

They run only with ``IMAGESEC_LIVE=1`` and the vendor's credentials in the environment, in a
manual or scheduled job (no machine of this project's CI can reach the clouds). A failure here
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
    "aliyun": ("ALIBABA_CLOUD_ACCESS_KEY_ID", "IMAGESEC_LIVE_ALIYUN_REGION", "cn-shanghai"),
    "tencent": ("TENCENTCLOUD_SECRET_ID", "IMAGESEC_LIVE_TENCENT_REGION", "ap-guangzhou"),
}


@pytest.mark.live
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_every_collector_refreshes_against_the_real_cloud(provider: str) -> None:
    key_var, region_var, default_region = PROVIDERS[provider]
    if not (LIVE and os.environ.get(key_var)):
        pytest.skip(f"live test: set IMAGESEC_LIVE=1 and {key_var}")
    region = os.environ.get(region_var, default_region)
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
