"""Build the sources (collector x account x region) from a validated config."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

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
from exporter.clouds.client import ApiClient
from exporter.clouds.http import ByteBudget, HttpLimits, RetryPolicy, TokenBucket
from exporter.clouds.tencent.api import TcssClient
from exporter.clouds.tencent.endpoints import tcss_host
from exporter.clouds.tencent.signing import TC3Auth, utc_now_seconds
from exporter.clouds.tencent.source import TcssImageDetailSource, TcssImagesSource
from exporter.config import (
    COLLECTORS,
    Account,
    AccountId,
    Config,
    HttpSettings,
    ResolvedCredentials,
)
from exporter.credentials import CredentialHolder
from exporter.credentials.static import StaticProvider, Value
from exporter.errors import AuthError, ConfigError, ConfigProblem
from exporter.filters import ImageFilter
from exporter.model import SourceKey
from exporter.refresh import Source
from exporter.sharding import Shard
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)


def http_limits(settings: HttpSettings) -> HttpLimits:
    """The client-side bounds of the ``http:`` config section."""
    return HttpLimits(
        max_response_bytes=settings.max_response_bytes,
        max_response_bytes_per_action=dict(settings.max_response_bytes_per_action),
        max_buffered_bytes=settings.max_buffered_bytes,
        request_deadline=settings.request_deadline,
        retry_deadline=settings.retry_deadline,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_connections=settings.max_connections,
    )


class Pools:
    """One ``httpx.AsyncClient`` per (provider, account, endpoint): a slow or failing endpoint
    of one account exhausts only its own connections and pool timeouts, never another's.

    Use as an async context manager; every client is closed on exit.
    """

    def __init__(self, limits: HttpLimits, headers: Mapping[str, str] | None = None) -> None:
        self.limits = limits
        self._headers = dict(headers or {})
        self._clients: dict[tuple[str, str, str], httpx.AsyncClient] = {}
        self._budgets: dict[tuple[str, str, str], ByteBudget] = {}

    def budget(self, provider: str, account: str, base_url: str) -> ByteBudget:
        """The bytes the answers in flight of (provider, account, endpoint) may hold."""
        ident = (provider, account, base_url)
        if ident not in self._budgets:
            self._budgets[ident] = ByteBudget(self.limits.max_buffered_bytes)
        return self._budgets[ident]

    def client(self, provider: str, account: str, base_url: str) -> httpx.AsyncClient:
        """The pool of (provider, account, endpoint), created on first use."""
        ident = (provider, account, base_url)
        client = self._clients.get(ident)
        if client is None:
            limits = self.limits
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    limits.read_timeout, connect=limits.connect_timeout, pool=limits.read_timeout
                ),
                limits=httpx.Limits(
                    max_connections=limits.max_connections,
                    max_keepalive_connections=limits.max_connections,
                ),
                headers=self._headers,
            )
            self._clients[ident] = client
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def __aenter__(self) -> Pools:
        return self

    async def __aexit__(self, *exc: object) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


@dataclass
class Context:
    """What a collector factory gets: the account, its region and clients shared per pair."""

    config: Config
    account: Account
    region: str
    credentials: CredentialHolder
    telemetry: Telemetry
    http: httpx.AsyncClient | Pools
    clients: dict[tuple[str, str, str], object] = field(default_factory=dict)
    clock: Callable[[], float] = utc_now_seconds  # signing time, Unix seconds

    def key(self, collector: str) -> SourceKey:
        return SourceKey(self.account.provider, self.account.name, self.region, collector)

    def depends(self, collector: str) -> SourceKey | None:
        upstream = COLLECTORS[collector].depends_on
        return self.key(upstream) if upstream else None

    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.config.refresh.max_attempts,
            deadline=self.config.http.retry_deadline,
        )

    def limits(self) -> HttpLimits:
        return self.http.limits if isinstance(self.http, Pools) else http_limits(self.config.http)

    def pool(self, provider: str, base: str) -> httpx.AsyncClient:
        """The HTTP client of this account and endpoint (a test's single client, if given one)."""
        if isinstance(self.http, Pools):
            return self.http.client(provider, self.account.name, base)
        return self.http

    def budget(self, provider: str, base: str) -> ByteBudget | None:
        """The byte budget of this account and endpoint (None: each client has its own)."""
        if isinstance(self.http, Pools):
            return self.http.budget(provider, self.account.name, base)
        return None

    def filters(self) -> ImageFilter:
        """The account's image filters (``accounts[].images``)."""
        return ImageFilter(**self.account.images.model_dump())


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def base_url(endpoint: str | None, default_host: str) -> str:
    """``host:port`` means HTTPS; a URL is used as given (e.g. ``http://127.0.0.1:18080``)."""
    if endpoint is None:
        return f"https://{default_host}"
    return endpoint if "://" in endpoint else f"https://{endpoint}"


C = TypeVar("C", bound=ApiClient)


def shared_client(
    ctx: Context,
    cls: type[C],
    auth: httpx.Auth | Callable[[], Awaitable[httpx.Auth]],
    host: str,
    buckets: dict[str, TokenBucket] | None = None,
    on_auth_error: Callable[[AuthError, httpx.Auth], None] | None = None,
) -> C:
    """The ``cls`` client of (account, region), shared by its collectors (and their rate limits).

    ``host`` is the provider's default endpoint host; the account's endpoint overrides it.
    """
    ident = (cls.PROVIDER, ctx.account.name, ctx.region)
    client = ctx.clients.get(ident)
    if client is None:
        base = base_url(ctx.account.endpoint_for(ctx.region), host)
        client = cls(
            ctx.pool(cls.PROVIDER, base),
            auth,
            base_url=base,
            account=ctx.account.name,
            region=ctx.region,
            telemetry=ctx.telemetry,
            rate=ctx.account.rate_limit,
            retry=ctx.retry(),
            buckets=buckets,
            limits=ctx.limits(),
            on_auth_error=on_auth_error,
            budget=ctx.budget(cls.PROVIDER, base),
        )
        ctx.clients[ident] = client
    assert isinstance(client, cls)
    return client


def refused(holder: CredentialHolder) -> Callable[[AuthError, httpx.Auth], None]:
    """Tell ``holder`` which key the cloud refused, and why."""

    def report(err: AuthError, auth: httpx.Auth) -> None:
        if isinstance(auth, ACS3Auth | TC3Auth):
            holder.refused(auth.key_id, err.code)

    return report


def sas_client(ctx: Context) -> SasClient:
    """The Sas client of (account, region): rate limits per (account, region, action)."""
    holder = ctx.credentials
    wall = ctx.clock
    clock = utc_now if wall is utc_now_seconds else lambda: _utc(wall())

    async def auth() -> httpx.Auth:
        creds = await holder.get()
        return ACS3Auth(creds.key_id, creds.secret, creds.token, clock=clock, nonce=default_nonce)

    return shared_client(
        ctx, SasClient, auth, sas_endpoint(ctx.region), on_auth_error=refused(holder)
    )


def tcss_client(ctx: Context) -> TcssClient:
    """The TCSS client of (account, region): rate limits per (account, action)."""
    holder = ctx.credentials

    async def auth() -> httpx.Auth:
        creds = await holder.get()
        return TC3Auth(creds.key_id, creds.secret, token=creds.token, clock=ctx.clock)

    # One quota per account and action, whatever X-TC-Region says: the regions share it.
    buckets = ctx.clients.setdefault(("tencent", ctx.account.name, "*rate-limits*"), {})
    assert isinstance(buckets, dict)
    return shared_client(
        ctx,
        TcssClient,
        auth,
        tcss_host(ctx.account.site),
        buckets=buckets,
        on_auth_error=refused(holder),
    )


Factory = Callable[[Context, str, float], Source]


def per_image(cls: type[SasBaselineSource] | type[SasVulnerabilitiesSource]) -> Factory:
    """The factory of a Sas collector that makes one cached lookup per inventory image."""
    return lambda ctx, name, interval: cls(
        ctx.key(name),
        interval,
        sas_client(ctx),
        ctx.telemetry,
        depends_on=ctx.depends(name),
        concurrency=ctx.config.refresh.concurrency,
        publish_every=ctx.config.refresh.progress_interval,
    )


FACTORIES: dict[str, Factory] = {
    "sas_images": lambda ctx, name, interval: SasImagesSource(
        ctx.key(name), interval, sas_client(ctx), ctx.filters()
    ),
    "sas_baseline": per_image(SasBaselineSource),
    "sas_vulnerabilities": per_image(SasVulnerabilitiesSource),
    "sas_malicious": lambda ctx, name, interval: SasMaliciousSource(
        ctx.key(name),
        interval,
        sas_client(ctx),
        depends_on=ctx.depends(name),
        filters=ctx.filters(),
    ),
    "sas_image_risk": lambda ctx, name, interval: SasImageRiskSource(
        ctx.key(name), interval, sas_client(ctx), ctx.filters()
    ),
    "tcss_images": lambda ctx, name, interval: TcssImagesSource(
        ctx.key(name), interval, tcss_client(ctx), ctx.filters()
    ),
    "tcss_image_detail": lambda ctx, name, interval: TcssImageDetailSource(
        ctx.key(name),
        interval,
        tcss_client(ctx),
        depends_on=ctx.depends(name),
        telemetry=ctx.telemetry,
        concurrency=ctx.config.refresh.concurrency,
        stage_floor=ctx.config.refresh.stage_floor,
        publish_every=ctx.config.refresh.progress_interval,
    ),
}


def enabled_collectors(
    config: Config, account: Account, overrides: Mapping[str, bool] | None = None
) -> list[str]:
    """The collectors that run for ``account``; ``overrides`` (the CLI flags) win over the file."""
    overrides = overrides or {}
    return [
        name
        for name, definition in COLLECTORS.items()
        if definition.provider == account.provider
        and overrides.get(name, config.collector(account, name)[0])
    ]


def check_collectors(
    config: Config, overrides: Mapping[str, bool] | None = None
) -> list[ConfigProblem]:
    """A collector enabled without the one it builds on (e.g. sas_baseline without sas_images)
    could never succeed: one problem per such collector and account."""
    problems = []
    for index, account in enumerate(config.accounts):
        names = enabled_collectors(config, account, overrides)
        for name in names:
            upstream = COLLECTORS[name].depends_on
            if upstream is not None and upstream not in names:
                problems.append(
                    ConfigProblem(
                        f"accounts[{index}] ({account.name})",
                        f"collector {name} needs {upstream}, which is disabled",
                    )
                )
    return problems


def static_holder(
    account: AccountId, creds: ResolvedCredentials, http: httpx.AsyncClient
) -> CredentialHolder:
    """A holder of already resolved long-lived credentials (tests, the demo)."""
    token = Value(creds.token.get_secret_value()) if creds.token else None
    provider = StaticProvider(
        "sts_token" if token else "access_key",
        Value(creds.key_id),
        Value(creds.secret.get_secret_value()),
        token,
    )
    return CredentialHolder(provider, cloud=account[0], account=account[1], http=http)


def build_sources(
    config: Config,
    credentials: Mapping[AccountId, ResolvedCredentials | CredentialHolder],
    telemetry: Telemetry,
    http: httpx.AsyncClient | Pools,
    *,
    overrides: Mapping[str, bool] | None = None,
    clock: Callable[[], float] = utc_now_seconds,
    shard: Shard | None = None,
) -> list[Source]:
    """One source per enabled collector, account and region (``check_collectors`` first).

    ``credentials`` holds one holder per account, shared by all its sources (resolved static
    credentials are wrapped in one). ``clock`` (Unix seconds) dates the signatures. With
    ``shard``, only the (account, region) units this replica owns (exporter/sharding.py).

    ``http`` is normally ``Pools`` (one connection pool per account and endpoint); a single
    ``httpx.AsyncClient`` (tests, with a mock transport) serves every account.
    """
    problems = check_collectors(config, overrides)
    if problems:
        raise ConfigError(problems)
    sources: list[Source] = []
    shared: dict[tuple[str, str, str], object] = {}
    for account in config.accounts:
        names = enabled_collectors(config, account, overrides)
        ident = (account.provider, account.name)
        given = credentials[ident]
        if isinstance(given, CredentialHolder):
            holder = given
        else:  # static credentials never fetch: the pool is only a formality
            plain = http if isinstance(http, httpx.AsyncClient) else http.client(*ident, "static")
            holder = static_holder(ident, given, plain)
        for region in account.regions:
            if shard is not None and not shard.owns(account.provider, account.name, region):
                continue
            ctx = Context(
                config,
                account,
                region,
                holder,
                telemetry,
                http,
                shared,
                clock,
            )
            for name in names:
                sources.append(FACTORIES[name](ctx, name, config.collector(account, name)[1]))
    return sources
