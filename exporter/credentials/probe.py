"""``--check-config --probe``: per account, one credential fetch and one cheap API call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from exporter.config import AccountId, Config
from exporter.credentials.base import iso8601
from exporter.credentials.holder import CredentialHolder
from exporter.errors import SourceError
from exporter.telemetry import Telemetry

# The cheapest call of each provider: the first inventory row.
PROBES = {
    "aliyun": ("DescribeImageInstances", {"CurrentPage": 1, "PageSize": 1}),
    "tencent": ("DescribeAssetImageList", {"Limit": 1, "Offset": 0}),
}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    account: AccountId
    ok: bool
    detail: str  # never a secret: kind, expiry, action, error code

    def __str__(self) -> str:
        provider, name = self.account
        return f"probe {'ok' if self.ok else 'failed'}: {provider}/{name}: {self.detail}"


async def probe(
    config: Config,
    holders: Mapping[AccountId, CredentialHolder],
    http: httpx.AsyncClient,
    telemetry: Telemetry,
) -> list[ProbeResult]:
    """Fetch each account's credentials once and make one call in its first region."""
    from exporter.sources import Context, sas_client, tcss_client

    results = []
    for account in config.accounts:
        ident = (account.provider, account.name)
        holder = holders[ident]
        try:
            creds = await holder.get()
        except SourceError as err:
            results.append(ProbeResult(ident, False, f"{holder.kind}: {err}"))
            continue
        expiry = f", expire {iso8601(creds.expiration)}" if creds.expiration else ""
        ctx = Context(config, account, account.regions[0], holder, telemetry, http)
        client = sas_client(ctx) if account.provider == "aliyun" else tcss_client(ctx)
        action, params = PROBES[account.provider]
        try:
            await client.call(action, params)
        except SourceError as err:
            results.append(
                ProbeResult(ident, False, f"{holder.kind}{expiry}; {action}: {err.code or err}")
            )
            continue
        results.append(ProbeResult(ident, True, f"{holder.kind}{expiry}; {action} ok"))
    return results
