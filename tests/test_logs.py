"""Logs: valid logfmt and JSON (checked by parsers), every extra key, promslog level names."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import logfmtkv
import pytest

from exporter import logs
from exporter.errors import UpstreamError
from exporter.model import SourceData, SourceKey
from exporter.refresh import Refresher
from exporter.telemetry import Telemetry
from tests.conftest import FakeClock

AWKWARD = {
    "provider": "aliyun",
    "error": 'connect failed: [Errno 111] "Connection refused" host=tds.example',
    "path": "a=b\\c",
    "newline": "line one\nline two",
    "empty": "",
    "latency": 0.123456789,
    "attempt": 2,
    "flag": True,
    "unicode": "地域 ✓",
}


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, str]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream, "logfmt"
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _parse_logfmt(line: str) -> dict[str, object]:
    """Parse as go-logfmt does, refusing what it refuses (and repeated keys)."""
    return dict(logfmtkv.parse(line, strict=True, duplicates="error"))


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_every_extra_key_survives_a_parser(capture: tuple[io.StringIO, str], fmt: str) -> None:
    stream, _ = capture
    logs.configure("debug", fmt, stream)
    logging.getLogger("exporter.test").warning("request failed", extra=AWKWARD)
    (line,) = stream.getvalue().splitlines()
    fields = _parse_logfmt(line) if fmt == "logfmt" else json.loads(line)
    assert fields["level"] == "warn"
    assert fields["logger"] == "exporter.test"
    assert fields["msg"] == "request failed"
    assert fields["ts"].endswith("Z")  # type: ignore[union-attr]
    for key, value in AWKWARD.items():
        if fmt == "json":
            assert fields[key] == value, key
        elif key == "latency":
            assert fields[key] == "0.123457"
        elif key == "flag":
            assert fields[key] == "true"
        else:
            assert fields[key] == str(value), key


def test_exceptions_stay_on_one_parseable_line(capture: tuple[io.StringIO, str]) -> None:
    stream, _ = capture
    logs.configure("info", "logfmt", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("exporter.test").exception("refresh crashed", extra={"source": "s"})
    (line,) = stream.getvalue().splitlines()
    fields = _parse_logfmt(line)
    assert fields["level"] == "error" and fields["source"] == "s"
    assert "RuntimeError: boom" in str(fields["exception"])


@pytest.mark.parametrize(
    "text, level",
    [
        ("debug", logging.DEBUG),
        ("info", 20),
        ("warn", 30),
        ("WARN", 30),
        ("warning", 30),
        ("error", 40),
    ],
)
def test_levels_take_the_promslog_names(text: str, level: int) -> None:
    assert logs.parse_level(text) == level


def test_debug_lines_are_dropped_at_info(capture: tuple[io.StringIO, str]) -> None:
    stream, _ = capture
    logs.configure("warn", "json", stream)
    log = logging.getLogger("exporter.test")
    log.info("quiet")
    log.warning("loud")
    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose': use debug, info, warn"):
        logs.configure("verbose", "logfmt")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        logs.configure("info", "xml")


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_bad_level_from_the_environment_is_a_clear_error_not_a_traceback() -> None:
    result = _run("--demo", "--check-config", env={"IMAGESEC_LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "config error: IMAGESEC_LOG_LEVEL: unknown log level 'verbose': "
        "use debug, info, warn or error"
    )


def test_warn_and_json_on_the_command_line() -> None:
    result = _run("--demo", "--check-config", "--log.level", "warn", "--log.format", "json", env={})
    assert result.returncode == 0, result.stderr
    result = _run("--demo", "--check-config", "--log.format", "yaml", env={})
    assert result.returncode == 2
    assert "config error: --log.format: unknown log format 'yaml'" in result.stderr


class Failing:
    key = SourceKey("tencent", "prod", "ap-guangzhou", "tcss_images")
    interval = 60.0
    depends_on = None

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        raise UpstreamError("connect failed", provider="tencent", code="connect", request_id="r-1")


class Working:
    key = SourceKey("aliyun", "prod", "cn-shanghai", "sas_images")
    interval = 60.0
    depends_on = None

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        return SourceData()


async def test_each_refresh_line_names_provider_account_region_and_source(
    capture: tuple[io.StringIO, str], clock: FakeClock
) -> None:
    stream, _ = capture
    logs.configure("info", "logfmt", stream)
    refresher = Refresher([Failing(), Working()], telemetry=Telemetry(), clock=clock)
    await refresher.run_once()
    lines = [_parse_logfmt(line) for line in stream.getvalue().splitlines()]
    by_msg = {line["msg"]: line for line in lines if line["logger"] == "exporter.refresh"}
    failed, ok = by_msg["refresh failed"], by_msg["refresh ok"]
    assert (failed["provider"], failed["account"], failed["region"], failed["source"]) == (
        "tencent",
        "prod",
        "ap-guangzhou",
        "tcss_images",
    )
    assert failed["code"] == "connect" and failed["request_id"] == "r-1"
    assert (ok["provider"], ok["region"], ok["source"], ok["images"]) == (
        "aliyun",
        "cn-shanghai",
        "sas_images",
        "0",
    )
