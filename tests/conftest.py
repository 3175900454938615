"""Shared fixtures: fake clocks, a clean environment, vendor sample responses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# The instant whose scan state a simulator on the real (signing) clock serves in tests:
# 2028-02-29 15:59:50 UTC, at which the suite used to fail when the fleet followed the wall clock.
FLEET_NOW = 1_835_452_790.0


def fleet_now() -> float:
    """The pinned fleet clock: ``Simulator(fleet_clock=fleet_now)``."""
    return FLEET_NOW


def fixture_json(cloud: str, action: str) -> Any:
    """A vendor sample response copied from the API reference pages (tests/fixtures/)."""
    return json.loads((FIXTURES / cloud / f"{action}.json").read_text(encoding="utf-8"))


class FakeClock:
    """A controllable clock: ``clock()`` returns the time, ``advance`` moves it, ``sleep`` too."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No cloud credentials or IMAGESEC_* settings leak in from the machine."""
    import os

    for name in list(os.environ):
        if name.startswith(("ALIBABA_CLOUD_", "TENCENTCLOUD_", "IMAGESEC_")):
            monkeypatch.delenv(name)
    return monkeypatch


def require_tool(name: str) -> str:
    """Path of a tool the tests need; fail (never skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus package (scripts/test.sh does)")
    return path
