"""Build the sources (collector x account x region) from a validated config."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from exporter.clouds.aliyun.api import DEFAULT_RATE as SAS_RATE
from exporter.clouds.aliyun.api import SasClient
from exporter.clouds.aliyun.endpoints import sas_endpoint
from exporter.clouds.aliyun.findings import (
    SasBaselineSource,
    SasImageRiskSource,
    SasMaliciousSource,
    SasVulnerabilitiesSource,
)
from exporter.clouds.aliyun.signing import ACS3Auth, default_nonce, utc_now
from exporter.clouds.aliyun.source import SasImagesSource
from exporter.clouds.http import RetryPolicy
from exporter.clouds.tencent.api import DEFAULT_RATE as TCSS_RATE
from exporter.clouds.tencent.api import TcssClient
from exporter.clouds.tencent.endpoints import tcss_host
from exporter.clouds.tencent.signing import TC3Auth, utc_now_seconds
from exporter.clouds.tencent.source import TcssImageDetailSource, TcssImagesSource
from exporter.config import COLLECTORS, Account, AccountId, Config, ResolvedCredentials
from exporter.model import SourceKey
from exporter.refresh import Source
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a collector factory gets: the account, its region and clients shared per pair."""

    config: Config
    account: Account
    region: str
    credentials: ResolvedCredentials
    telemetry: Telemetry
    http: httpx.AsyncClient
    clients: dict[tuple[str, str, str], object] = field(default_factory=dict)

    def key(self, collector: str) -> SourceKey:
        return SourceKey(self.account.provider, self.account.name, self.region, collector)

    def depends(self, collector: str) -> SourceKey | None:
        upstream = COLLECTORS[collector].depends_on
        return self.key(upstream) if upstream else None

    def retry(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.config.refresh.max_attempts)


def base_url(endpoint: str | None, default_host: str) -> str:
    """``host:port`` means HTTPS; a URL is used as given (e.g. ``http://127.0.0.1:18080``)."""
    if endpoint is None:
        return f"https://{default_host}"
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def sas_client(ctx: Context) -> SasClient:
    """The Sas client of (account, region), shared by its collectors (and their rate limits)."""
    ident = ("aliyun", ctx.account.name, ctx.region)
    client = ctx.clients.get(ident)
    if client is None:
        creds = ctx.credentials
        auth = ACS3Auth(
            creds.key_id,
            creds.secret.get_secret_value(),
            creds.token.get_secret_value() if creds.token else None,
            clock=utc_now,
            nonce=default_nonce,
        )
        client = SasClient(
            ctx.http,
            auth,
            base_url=base_url(ctx.account.endpoint_for(ctx.region), sas_endpoint(ctx.region)),
            account=ctx.account.name,
            region=ctx.region,
            telemetry=ctx.telemetry,
            rate=ctx.account.rate_limit or SAS_RATE,
            retry=ctx.retry(),
        )
        ctx.clients[ident] = client
    assert isinstance(client, SasClient)
    return client


def tcss_client(ctx: Context) -> TcssClient:
    """The TCSS client of (account, region), shared by its collectors (and their rate limits)."""
    ident = ("tencent", ctx.account.name, ctx.region)
    client = ctx.clients.get(ident)
    if client is None:
        creds = ctx.credentials
        # One quota per account and action, whatever X-TC-Region says: the regions share it.
        buckets = ctx.clients.setdefault(("tencent", ctx.account.name, "*rate-limits*"), {})
        assert isinstance(buckets, dict)
        auth = TC3Auth(
            creds.key_id,
            creds.secret.get_secret_value(),
            token=creds.token.get_secret_value() if creds.token else None,
            clock=utc_now_seconds,
        )
        client = TcssClient(
            ctx.http,
            auth,
            base_url=base_url(ctx.account.endpoint_for(ctx.region), tcss_host(ctx.account.site)),
            account=ctx.account.name,
            region=ctx.region,
            telemetry=ctx.telemetry,
            rate=ctx.account.rate_limit or TCSS_RATE,
            retry=ctx.retry(),
            buckets=buckets,
        )
        ctx.clients[ident] = client
    assert isinstance(client, TcssClient)
    return client


Factory = Callable[[Context, str, float], Source]

FACTORIES: dict[str, Factory] = {
    "sas_images": lambda ctx, name, interval: SasImagesSource(
        ctx.key(name), interval, sas_client(ctx)
    ),
    "sas_baseline": lambda ctx, name, interval: SasBaselineSource(
        ctx.key(name),
        interval,
        sas_client(ctx),
        ctx.telemetry,
        depends_on=ctx.depends(name),
        concurrency=ctx.config.refresh.concurrency,
    ),
    "sas_vulnerabilities": lambda ctx, name, interval: SasVulnerabilitiesSource(
        ctx.key(name),
        interval,
        sas_client(ctx),
        ctx.telemetry,
        depends_on=ctx.depends(name),
        concurrency=ctx.config.refresh.concurrency,
    ),
    "sas_malicious": lambda ctx, name, interval: SasMaliciousSource(
        ctx.key(name), interval, sas_client(ctx), depends_on=ctx.depends(name)
    ),
    "sas_image_risk": lambda ctx, name, interval: SasImageRiskSource(
        ctx.key(name), interval, sas_client(ctx)
    ),
    "tcss_images": lambda ctx, name, interval: TcssImagesSource(
        ctx.key(name), interval, tcss_client(ctx)
    ),
    "tcss_image_detail": lambda ctx, name, interval: TcssImageDetailSource(
        ctx.key(name),
        interval,
        tcss_client(ctx),
        depends_on=ctx.depends(name),
        telemetry=ctx.telemetry,
        concurrency=ctx.config.refresh.concurrency,
    ),
}


def build_sources(
    config: Config,
    credentials: Mapping[AccountId, ResolvedCredentials],
    telemetry: Telemetry,
    http: httpx.AsyncClient,
    *,
    overrides: Mapping[str, bool] | None = None,
) -> list[Source]:
    """One source per enabled collector, account and region.

    ``overrides`` are the ``--collector.X`` / ``--no-collector.X`` flags; they win over the file.
    """
    overrides = overrides or {}
    sources: list[Source] = []
    shared: dict[tuple[str, str, str], object] = {}
    for account in config.accounts:
        for region in account.regions:
            ctx = Context(
                config,
                account,
                region,
                credentials[(account.provider, account.name)],
                telemetry,
                http,
                shared,
            )
            for name, definition in COLLECTORS.items():
                if definition.provider != account.provider:
                    continue
                enabled, interval = config.collector(account, name)
                enabled = overrides.get(name, enabled)
                if not enabled:
                    continue
                factory = FACTORIES.get(name)
                if factory is None:
                    log.debug("collector not available collector=%s", name)
                    continue
                source = factory(ctx, name, interval)
                if source.depends_on is not None:
                    upstream_enabled = overrides.get(
                        source.depends_on.source,
                        config.collector(account, source.depends_on.source)[0],
                    )
                    if not upstream_enabled:
                        log.warning(
                            "collector needs its upstream collector=%s upstream=%s",
                            name,
                            source.depends_on.source,
                        )
                sources.append(source)
    return sources
