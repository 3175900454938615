"""Long-lived keys (and STS tokens handed over as-is) from config values, files or variables.

Files are re-read when they change, so a rotated Kubernetes secret is picked up without a
restart; an access key id, secret and token read from files are always read together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.credentials.base import Credential, CredentialError, Fetch, WatchedFile


@dataclass(frozen=True, slots=True)
class Value:
    """One credential value: a literal (config field or environment variable) or a file."""

    literal: str | None = field(default=None, repr=False)
    file: WatchedFile | None = None

    def read(self) -> str | None:
        if self.file is not None:
            return self.file.read()
        return self.literal

    def changed(self) -> bool:
        return self.file is not None and self.file.changed()

    def check(self) -> list[str]:
        return self.file.check() if self.file is not None else []


class StaticProvider:
    """``access_key`` / ``sts_token`` (Alibaba), ``secret`` / ``sts_token`` (Tencent)."""

    def __init__(self, kind: str, key_id: Value, secret: Value, token: Value | None) -> None:
        self.kind = kind
        self._values = (key_id, secret, token)

    def _read(self) -> Credential:
        key_id, secret, token = (v.read() if v is not None else None for v in self._values)
        if not key_id or not secret:
            raise CredentialError(f"{self.kind}: key id or secret is empty", code="token_file")
        return Credential(key_id, secret, token or None)

    async def fetch(self, ctx: Fetch) -> Credential:
        return self._read()

    def changed(self) -> bool:
        return any(v.changed() for v in self._values if v is not None)

    def check(self) -> list[str]:
        return [p for v in self._values if v is not None for p in v.check()]
