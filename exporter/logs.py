"""Logging: one line per event, as logfmt or JSON, with every ``extra`` key of the call.

The convention (README, "Logs"): the message is a short constant event phrase and the context
goes in ``extra`` with keys such as provider, account, region, source, action, code, error,
status, latency, request_id, attempt, wait, host, images (never secrets)::

    log.warning("refresh failed", extra={"provider": "aliyun", "account": "prod", ...})

renders as::

    ts=2026-12-02T07:41:24.795Z level=warn logger=exporter.refresh msg="refresh failed" provider=aliyun account=prod

Levels use the promslog spellings (``debug``, ``info``, ``warn``, ``error``; ``warning`` is
accepted too).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("logfmt", "json")
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}

# Attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_BARE = re.compile(r"^[^\s=\"\\\x00-\x1f\x7f]+$")
_KEY = re.compile(r"[^A-Za-z0-9_.\-]")


def parse_level(text: str) -> int:
    """The logging level of ``text`` (``warn`` or ``WARN``); ValueError names the choices."""
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"unknown log level {text!r}: use debug, info, warn or error")
    return level


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` keys of a record, in the order the call gave them."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    when = datetime.fromtimestamp(record.created, UTC)
    fields: dict[str, Any] = {
        "ts": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "level": _NAMES.get(record.levelno, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in extras(record).items():
        fields[key if key not in fields else f"extra_{key}"] = value
    if record.exc_info:
        fields["exception"] = formatter.formatException(record.exc_info)
    return fields


def logfmt_value(value: Any) -> str:
    """A logfmt value: bare when it can be, else double-quoted with ``\\``, ``"``, controls escaped."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    if _BARE.match(text):
        return text
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]  # \\ \" \n \t \uXXXX
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs: ts, level, logger, msg, then every extra key."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{_KEY.sub('_', key) or '_'}={logfmt_value(value)}"
            for key, value in _fields(record, self).items()
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), ensure_ascii=False, default=str)


_HANDLER = "imagesec-exporter"


class _StderrHandler(logging.StreamHandler[IO[str]]):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure(level: str, fmt: str = "logfmt", stream: IO[str] | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) in ``fmt`` at ``level``.

    Raises ValueError for an unknown level or format.
    """
    number = parse_level(level)
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use logfmt or json")
    handler: logging.Handler = logging.StreamHandler(stream) if stream else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER:  # ours from an earlier call; others' handlers stay
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    # httpx logs every request URL at INFO: too chatty, and URLs may carry signed parameters.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, number))
