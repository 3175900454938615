"""The credential holders of a running exporter: one HTTP client, kept across reloads, closed at
shutdown."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping

import httpx

from exporter import __version__
from exporter.config import Account, AccountId, Config
from exporter.credentials.chain import resolve_providers
from exporter.credentials.holder import CredentialHolder
from exporter.telemetry import Telemetry


def credentials_client() -> httpx.AsyncClient:
    """The HTTP client of STS, instance metadata and credentials URIs (its own pool)."""
    headers = {"user-agent": f"imagesec-exporter/{__version__}"}
    return httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0), headers=headers)


def _settings(account: Account) -> str:
    """What an account's credentials depend on in the config (a reload that keeps it keeps the
    holder, and so its current credentials)."""
    fields = ("provider", "credentials", "sts_endpoint", "metadata_endpoint")
    return account.model_dump_json(include=set(fields))


class CredentialHolders:
    """Holders by account, bound to one client and telemetry."""

    def __init__(self, http: httpx.AsyncClient, telemetry: Telemetry) -> None:
        self.http = http
        self.telemetry = telemetry
        self._live: dict[AccountId, tuple[str, CredentialHolder]] = {}
        self._retired: list[CredentialHolder] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, telemetry: Telemetry) -> AsyncIterator[CredentialHolders]:
        """Holders with their own HTTP client; renewals in flight are cancelled on exit."""
        async with credentials_client() as http:
            holders = cls(http, telemetry)
            try:
                yield holders
            finally:
                await holders.aclose()

    def adopt(self, config: Config, credentials: Mapping[AccountId, object]) -> None:
        """Bind the holders among ``credentials`` (built before the loop ran)."""
        for account in config.accounts:
            ident = (account.provider, account.name)
            holder = credentials.get(ident)
            if isinstance(holder, CredentialHolder):
                holder.bind(self.http, self.telemetry)
                self._live[ident] = (_settings(account), holder)

    def for_config(
        self, config: Config, env: Mapping[str, str] | None = None
    ) -> dict[AccountId, CredentialHolder]:
        """Holders of a (reloaded) config: an account whose credential settings did not change
        keeps its holder; the others get new ones.

        Raises:
            ConfigError: an account's credentials cannot be resolved.
        """
        resolved = resolve_providers(config, os.environ if env is None else env)
        live: dict[AccountId, tuple[str, CredentialHolder]] = {}
        for account in config.accounts:
            ident = (account.provider, account.name)
            settings = _settings(account)
            kept = self._live.get(ident)
            if kept is not None and kept[0] == settings:
                live[ident] = kept
                continue
            holder = CredentialHolder(resolved[ident].provider, cloud=ident[0], account=ident[1])
            holder.bind(self.http, self.telemetry)
            live[ident] = (settings, holder)
        self._retired += [
            h for i, (_, h) in self._live.items() if live.get(i, (0, None))[1] is not h
        ]
        self._live = live
        return {ident: holder for ident, (_, holder) in live.items()}

    async def aclose(self) -> None:
        for holder in [*self._retired, *(h for _, h in self._live.values())]:
            await holder.aclose()
