"""The live tests are opt-in, and opting in without keys is an error, not a silent skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIVE_TESTS = "tests/test_live.py"
CREDENTIAL_PREFIXES = ("ALIBABA_CLOUD_", "TENCENTCLOUD_", "IMAGESEC_")


def run_live_tests(**env: str) -> subprocess.CompletedProcess[str]:
    """Run tests/test_live.py in a fresh pytest with no cloud credentials but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_PREFIXES)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", LIVE_TESTS],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_live_tests_are_skipped_unless_opted_in() -> None:
    result = run_live_tests()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout and "failed" not in result.stdout
    assert "opt in with IMAGESEC_LIVE=1" in result.stdout


def test_opting_in_without_keys_fails_naming_the_missing_variables() -> None:
    # Only the Alibaba key id is set (to a dummy): nothing may reach a network before failing.
    result = run_live_tests(IMAGESEC_LIVE="1", ALIBABA_CLOUD_ACCESS_KEY_ID="LTAI-dummy")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 failed" in result.stdout and "skipped" not in result.stdout
    assert "IMAGESEC_LIVE=1 but ALIBABA_CLOUD_ACCESS_KEY_SECRET not set" in result.stdout
    assert (
        "IMAGESEC_LIVE=1 but TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY not set"
        in result.stdout
    )
