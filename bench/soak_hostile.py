"""Soak: the real exporter process against a hostile cloud beside healthy simulated accounts.

Starts the simulated Sas and TCSS (``imagesec-exporter simulate``, its own process), a hostile
fake (tests/hostile.py, in this process) that switches to another hostile answer every few
seconds, and the exporter (its own process) configured with one healthy and one hostile account
per cloud; scrapes /metrics continuously over HTTP. Prints one table: scrapes, non-200 answers,
worst scrape latency, the exporter's RSS at start, end and peak, the scrapes that showed a
healthy source down (and which), and the error codes counted for the hostile accounts.

    python bench/soak_hostile.py [--seconds 300] [--switch 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
)
from tests.hostile import MODES, HostileCloud


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run_hostile(
    cloud: HostileCloud,
    ready: threading.Event,
    stop: threading.Event,
    switch: float,
    urls: list[str],
    skip: list[str],
) -> None:
    async def main() -> None:
        urls.append(await cloud.start())
        ready.set()
        rng = random.Random(1)
        modes = [m for m in MODES if m != "healthy" and m not in skip]
        while not stop.is_set():
            cloud.set(rng.choice(modes))
            await asyncio.sleep(switch)
        await cloud.stop()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--switch", type=float, default=5)
    parser.add_argument(
        "--skip", action="append", default=[], choices=MODES, help="leave out a hostile answer"
    )
    args = parser.parse_args()

    cloud = HostileCloud(images=20, delay=30)
    ready, stop = threading.Event(), threading.Event()
    urls: list[str] = []
    thread = threading.Thread(
        target=run_hostile, args=(cloud, ready, stop, args.switch, urls, args.skip)
    )
    thread.start()
    ready.wait()
    try:
        measure(args, cloud, urls[0])
    finally:
        stop.set()
        thread.join()


def measure(args: argparse.Namespace, cloud: HostileCloud, hostile: str) -> None:
    """Run the exporter against the clouds for ``args.seconds`` and print the table."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        sas, tcss = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "simulate",
                "--aliyun.listen-address",
                sas,
                "--tencent.listen-address",
                tcss,
                "--images-per-region",
                "20",
            ],
            stdout=subprocess.DEVNULL,
        )
        stack.callback(sim.wait, 30)
        stack.callback(sim.terminate)
        every = {"interval": "5s"}
        config = {
            "accounts": [
                {
                    "name": "good-a",
                    "provider": "aliyun",
                    "regions": ["cn-shanghai"],
                    "endpoint": f"http://{sas}",
                },
                {
                    "name": "good-t",
                    "provider": "tencent",
                    "regions": ["ap-guangzhou"],
                    "endpoint": f"http://{tcss}",
                },
                {
                    "name": "bad-a",
                    "provider": "aliyun",
                    "regions": ["cn-shanghai"],
                    "endpoint": hostile,
                    "rate_limit": 100,
                    "credentials": {
                        "access_key_id": "LTAIhostile01",
                        "access_key_secret": "s3cr3t-v",
                    },
                },
                {
                    "name": "bad-t",
                    "provider": "tencent",
                    "regions": ["ap-guangzhou", "ap-shanghai", "ap-beijing", "ap-chengdu"],
                    "endpoint": hostile,
                    "rate_limit": 100,
                    "credentials": {"secret_id": "AKIDhostile01", "secret_key": "s3cr3t-v"},
                },
            ],
            "collectors": {
                name: every
                for name in (
                    "sas_images",
                    "sas_baseline",
                    "sas_vulnerabilities",
                    "sas_malicious",
                    "sas_image_risk",
                    "tcss_images",
                    "tcss_image_detail",
                )
            },
            "refresh": {"timeout": "60s", "max_attempts": 3},
            "http": {
                "max_response_bytes": 8 << 20,
                "request_deadline": "5s",
                "retry_deadline": "15s",
                "max_connections": 4,
            },
        }
        path = Path(tempfile.mkdtemp()) / "config.yml"
        path.write_text(yaml.safe_dump(config))
        env = os.environ | {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ALIYUN_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ALIYUN_ACCESS_KEY_SECRET,
            "TENCENTCLOUD_SECRET_ID": DEMO_TENCENT_SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": DEMO_TENCENT_SECRET_KEY,
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(path),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--log.level",
                "error",
            ],
            env=env,
        )
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        url = f"http://127.0.0.1:{port}/metrics"
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get(url).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("exporter did not start")
                time.sleep(0.2)
            time.sleep(6)  # one refresh of every source
            rss_start = peak = rss(proc.pid)
            scrapes = non_200 = 0
            worst = 0.0
            healthy_down = 0
            down_sources: set[str] = set()
            end = time.monotonic() + args.seconds
            text = ""
            while time.monotonic() < end:
                started = time.monotonic()
                try:
                    response = client.get(url)
                    status, text = response.status_code, response.text
                except httpx.HTTPError:
                    status = 0
                worst = max(worst, time.monotonic() - started)
                scrapes += 1
                non_200 += status != 200
                peak = max(peak, rss(proc.pid))
                down = [
                    line.split("{", 1)[1].split("}", 1)[0]
                    for line in text.splitlines()
                    if line.startswith("imagesec_up{")
                    and 'account="good-' in line
                    and line.endswith(" 0.0")
                ]
                healthy_down += bool(down)
                down_sources.update(down)
                time.sleep(0.2)
            rss_end = rss(proc.pid)
        codes: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("imagesec_api_request_errors_total{") and 'account="bad-' in line:
                code = line.split('code="', 1)[1].split('"', 1)[0]
                codes[code] = codes.get(code, 0) + float(line.rsplit(" ", 1)[1])
    mib = 1 << 20
    rows = [
        ("seconds", f"{args.seconds:g}"),
        ("scrapes", str(scrapes)),
        ("non-200 answers", str(non_200)),
        ("worst scrape latency", f"{worst * 1000:.0f} ms"),
        (
            "exporter RSS start / end / peak",
            f"{rss_start / mib:.0f} / {rss_end / mib:.0f} / {peak / mib:.0f} MiB",
        ),
        ("scrapes showing a healthy source down", str(healthy_down)),
        ("healthy sources ever down", "; ".join(sorted(down_sources)) or "none"),
        ("hostile requests", str(cloud.requests)),
        (
            "error codes (hostile accounts)",
            ", ".join(f"{k}={v:g}" for k, v in sorted(codes.items())),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
