"""Render docs/landing-page.png: the landing page of a 16-source fleet with 3 sources down.

    python scripts/landing_preview.py   # needs Debian's chromium

The snapshot is made up (two Sas sites, two TCSS regions, every collector), rendered by the same
exporter.landing.render the server calls, at a fixed time, and screenshotted by headless Chromium.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from exporter.config import COLLECTORS
from exporter.landing import LandingLinks, render
from exporter.model import ImageKey, ImageRef, Snapshot, SourceData, SourceKey, SourceState

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "landing-page.png"
NOW = 1_800_000_000.0
REGIONS = {"aliyun": ("cn-shanghai", "ap-southeast-1"), "tencent": ("ap-guangzhou", "ap-singapore")}
DOWN = {
    ("aliyun", "ap-southeast-1", "sas_vulnerabilities"): (
        "Throttling.User: Request was denied due to user flow control. code=Throttling.User "
        "request_id=6F2C1B9E-1A2B-4C3D-9E8F-0123456789AB"
    ),
    ("tencent", "ap-singapore", "tcss_images"): (
        "connect failed host=tcss.intl.tencentcloudapi.com: [Errno 111] Connection refused "
        "code=connect"
    ),
    ("tencent", "ap-singapore", "tcss_image_detail"): "no data yet from tcss_images "
    "code=upstream_unavailable",
}


def snapshot() -> Snapshot:
    states = {}
    for name, definition in COLLECTORS.items():
        for region in REGIONS[definition.provider]:
            key = SourceKey(definition.provider, "prod", region, name)
            images = tuple(
                ImageRef(
                    ImageKey(key.provider, "prod", region, "shop", f"r{i}", "1", str(i)), "", ""
                )
                for i in range(24 if name != "sas_image_risk" else 7)
            )
            error = DOWN.get((key.provider, region, name))
            states[key] = SourceState(
                key,
                definition.interval,
                data=None if "detail" in name and error else SourceData(images=images),
                up=error is None,
                attempted=True,
                last_success=NOW - (3 * 3600 + 240 if error else 95),
                last_attempt=NOW - 35,
                duration=2.1,
                last_error=error,
            )
    return Snapshot(states)


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.stderr.write("chromium not found: apt-get install chromium\n")
        return 1
    links = LandingLinks(
        dashboard_url="https://grafana.example.com/d/imagesec-exporter/imagesec-exporter"
    )
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "landing.html"
        page.write_bytes(render(snapshot(), NOW, links))
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp}/profile",
                f"--screenshot={OUTPUT}",
                "--window-size=1280,900",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    sys.stdout.write(f"wrote {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
