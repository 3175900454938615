"""The example Alertmanager config: amtool accepts it, and a real Alertmanager inhibits with it.

Debian's prometheus-alertmanager package provides ``prometheus-alertmanager`` and ``amtool``
(scripts/test.sh installs it; never skipped). Everything listens on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "alerts" / "alertmanager.yml"
PROD = ("provider=aliyun", "account=prod", "region=cn-shanghai")
STAGING = ("provider=tencent", "account=staging", "region=ap-guangzhou")

pytestmark = pytest.mark.promtool


def _alertmanager_binary() -> str:
    return shutil.which("prometheus-alertmanager") or require_tool("alertmanager")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_amtool_accepts_the_example() -> None:
    result = subprocess.run(
        [require_tool("amtool"), "check-config", str(CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("alertmanager")
    url = f"http://127.0.0.1:{_free_port()}"
    with (workdir / "alertmanager.log").open("wb") as log:
        process = subprocess.Popen(
            [
                _alertmanager_binary(),
                f"--config.file={CONFIG}",
                f"--storage.path={workdir}",
                f"--web.listen-address={url.removeprefix('http://')}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail((workdir / "alertmanager.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def _amtool(url: str, *args: str) -> str:
    result = subprocess.run(
        [require_tool("amtool"), f"--alertmanager.url={url}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _names(url: str, *flags: str) -> set[tuple[str, str]]:
    """(alertname, account) of the alerts amtool lists with ``flags``."""
    alerts = json.loads(_amtool(url, "alert", "query", "--output=json", *flags))
    return {(a["labels"]["alertname"], a["labels"]["account"]) for a in alerts}


def test_source_down_inhibits_the_finding_alerts_of_its_source_only(alertmanager: str) -> None:
    repo = ("repo_namespace=shop", "repo=cart", "severity=info")
    _amtool(alertmanager, "alert", "add", "ImagesecRepoCriticalOrHighVulnerabilities", *PROD, *repo)
    _amtool(alertmanager, "alert", "add", "ImagesecScansFailed", *PROD, "severity=warning")
    _amtool(
        alertmanager, "alert", "add", "ImagesecRepoCriticalOrHighVulnerabilities", *STAGING, *repo
    )
    both = {
        ("ImagesecRepoCriticalOrHighVulnerabilities", "prod"),
        ("ImagesecScansFailed", "prod"),
        ("ImagesecRepoCriticalOrHighVulnerabilities", "staging"),
    }
    assert _names(alertmanager) == both  # nothing inhibits them yet
    _amtool(alertmanager, "alert", "add", "ImagesecSourceDown", *PROD, "source=sas_vulnerabilities")
    deadline = time.monotonic() + 10
    while _names(alertmanager, "--inhibited") == set() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _names(alertmanager, "--inhibited") == {
        ("ImagesecRepoCriticalOrHighVulnerabilities", "prod"),
        ("ImagesecScansFailed", "prod"),
    }
    # Still paged: the source alert itself and the finding alert of the other account.
    assert _names(alertmanager, "--active") == {
        ("ImagesecSourceDown", "prod"),
        ("ImagesecRepoCriticalOrHighVulnerabilities", "staging"),
    }
