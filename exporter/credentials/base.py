"""Credential values, the provider protocol, file watching and the credential error vocabulary."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from exporter.errors import AuthError

CREDENTIAL_ERROR_CODES: tuple[str, ...] = (
    "token_file",  # a key, token or OIDC token file is missing, unreadable or empty
    "timeout",  # STS, metadata or credentials URI did not answer in time
    "connect",  # ... could not be reached
    "http_4xx",  # ... answered 4xx without a vendor error code
    "http_5xx",  # ... answered 5xx
    "rejected",  # ... answered with a vendor error code (logged, not a label: unbounded)
    "bad_payload",  # ... answered something that is not a credentials document
    "internal",  # a bug in a provider (logged with its traceback)
)
"""The ``code`` values of ``imagesec_credential_refresh_failures_total`` (why one fetch or
renewal failed); all of them are in the shared table, ``exporter.errors.CODES``."""

SOURCE_DOWN_CODES: tuple[str, ...] = (
    "credentials_unavailable",  # none could be obtained yet (the first fetch keeps failing)
    "credentials_expired",  # renewal kept failing until the current credentials expired
)
"""The codes with which an account's sources go down (``imagesec_up`` 0, counted in
``imagesec_refresh_failures_total{code}``) when its credentials fail."""


class CredentialError(AuthError):
    """Credentials could not be obtained; ``code`` is one of ``CREDENTIAL_ERROR_CODES``."""


@dataclass(frozen=True, slots=True)
class Credential:
    """One set of credentials ready to sign with; ``repr`` never shows the secret or token.

    ``expiration`` is Unix seconds for temporary credentials, None for long-lived keys.
    """

    key_id: str
    secret: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expiration: float | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    """What a provider needs to fetch: an HTTP client and the wall clock (Unix seconds)."""

    http: httpx.AsyncClient
    clock: Callable[[], float]


class Provider(Protocol):
    """One kind of credential source (``kind`` is the config ``type``)."""

    kind: str

    async def fetch(self, ctx: Fetch) -> Credential:
        """Obtain fresh credentials; raise ``CredentialError`` on failure."""
        ...

    def changed(self) -> bool:
        """True when an input the current credentials came from (a key file) has changed."""
        ...

    def check(self) -> list[str]:
        """Problems found without the network: missing files, unreadable files, bad profiles."""
        ...


class WatchedFile:
    """A file read at most once per change of its (mtime, size, inode)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._stamp: tuple[int, int, int] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        """Whether the file differs from the last :meth:`read` (Kubernetes swaps a symlink)."""
        return self._stat() != self._stamp

    def read(self) -> str:
        """The file's text, surrounding whitespace (a trailing newline) stripped."""
        stamp = self._stat()
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or type(err).__name__
            raise CredentialError(
                f"{self.what}: cannot read {self.path}: {reason}", code="token_file"
            ) from None
        if not text:
            raise CredentialError(f"{self.what}: {self.path} is empty", code="token_file")
        self._stamp = stamp
        return text

    def check(self) -> list[str]:
        """The problem with this file, if any, without reading more than a byte."""
        try:
            with open(self.path, "rb") as handle:
                if not handle.read(1):
                    return [f"{self.what}: {self.path} is empty"]
        except OSError as err:
            return [f"{self.what}: cannot read {self.path}: {err.strerror}"]
        return []


def parse_iso8601(value: object) -> float:
    """``2024-01-02T03:04:05Z`` (the vendors' Expiration) as Unix seconds."""
    if not isinstance(value, str):
        raise ValueError(f"expiration is {type(value).__name__}, not a string")
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def iso8601(seconds: float) -> str:
    """Unix seconds as ``2024-01-02T03:04:05Z``."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
