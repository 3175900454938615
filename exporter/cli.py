"""Command line: flags, sub-commands (run, --once, --check-config, --demo, simulate) and wiring."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from exporter import __version__, logs
from exporter.config import (
    COLLECTORS,
    AccountId,
    Config,
    ResolvedCredentials,
    inspect_file,
    load_config,
    parse_config,
)
from exporter.cost import estimate
from exporter.credentials import CredentialHolder
from exporter.credentials.pool import CredentialHolders
from exporter.errors import ConfigError, ConfigProblem
from exporter.exposition import ExpositionStore
from exporter.landing import LandingLinks
from exporter.memory import fix_mmap_threshold
from exporter.metrics import metric_selection
from exporter.refresh import Refresher, Source
from exporter.sharding import Shard, ordinal
from exporter.sources import Pools, build_sources, check_collectors, http_limits
from exporter.telemetry import Telemetry
from exporter.web import (
    Limits,
    ReloadStatus,
    WebServer,
    parse_listen_address,
    systemd_sockets,
)
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")

DEFAULT_PORT = 9879
EXIT_CONFIG = 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"IMAGESEC_{name}") or default


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagesec-exporter",
        description="Prometheus exporter for container-image security findings of Alibaba Cloud "
        "Security Center (Sas) and Tencent Cloud TCSS. Every flag can also be set with the "
        "environment variable shown, e.g. IMAGESEC_WEB_LISTEN_ADDRESS.",
        epilog="Sub-command: 'imagesec-exporter simulate --help' runs the simulated clouds alone.",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default=_env("CONFIG_FILE"),
        help="YAML configuration file (IMAGESEC_CONFIG_FILE)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        action="append",
        default=None,
        help="address to serve on, repeatable; :PORT is every IPv4 and IPv6 address "
        f"(IMAGESEC_WEB_LISTEN_ADDRESS, comma-separated; default :{DEFAULT_PORT})",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default=_env("WEB_TELEMETRY_PATH", "/metrics"),
        help="path of the metrics (IMAGESEC_WEB_TELEMETRY_PATH, default /metrics)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=_env("WEB_CONFIG_FILE"),
        help="exporter-toolkit web config: TLS and basic auth (IMAGESEC_WEB_CONFIG_FILE)",
    )
    add_web_flags(parser)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run against the built-in simulated Sas and TCSS endpoints (no cloud account needed)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="refresh every source once, print the metrics and exit (1 if a source failed)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration and credentials, then exit (2 if invalid); no "
        "network unless --probe",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="with --check-config: fetch each account's credentials once and make one cheap "
        "API call (exit 1 if one fails)",
    )
    parser.add_argument(
        "--web.dashboard-url",
        dest="dashboard_url",
        default=_env("WEB_DASHBOARD_URL"),
        help="URL of the Grafana dashboard, linked from the landing page "
        "(IMAGESEC_WEB_DASHBOARD_URL)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default=_env("LOG_LEVEL", "info"),
        help="log level: debug, info, warn or error (IMAGESEC_LOG_LEVEL, default info)",
    )
    parser.add_argument(
        "--metric-allowlist",
        dest="metric_allowlist",
        default=_env("METRIC_ALLOWLIST"),
        help="comma-separated metric names or regexes to expose, nothing else "
        "(IMAGESEC_METRIC_ALLOWLIST; exclusive with --metric-denylist)",
    )
    parser.add_argument(
        "--metric-denylist",
        dest="metric_denylist",
        default=_env("METRIC_DENYLIST"),
        help="comma-separated metric names or regexes not to expose (IMAGESEC_METRIC_DENYLIST)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default=_env("LOG_FORMAT", "logfmt"),
        help="log line format: logfmt or json (IMAGESEC_LOG_FORMAT, default logfmt)",
    )
    parser.add_argument("--version", action=VersionAction, nargs=0, help="print version and exit")
    add_shard_flags(parser)
    group = parser.add_argument_group("collectors (default: on, or as the config file says)")
    for name, definition in COLLECTORS.items():
        group.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=definition.help,
        )
    return parser


class VersionAction(argparse.Action):
    """``--version``: version, Python, platform and git revision, then exit 0."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from exporter.version import version_text

        print(version_text())
        parser.exit(0)


def add_web_flags(parser: argparse.ArgumentParser) -> None:
    """The HTTP server's flags beyond the address and the web config file."""
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        default=_env("WEB_SYSTEMD_SOCKET") in ("1", "true"),
        help="serve on the sockets systemd passes (socket activation) instead of "
        "--web.listen-address (IMAGESEC_WEB_SYSTEMD_SOCKET)",
    )
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        type=int,
        default=int(_env("WEB_MAX_REQUESTS", "40") or 40),
        help="concurrent /metrics scrapes; more are answered 503; 0 means no limit "
        "(IMAGESEC_WEB_MAX_REQUESTS, default 40)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=int,
        default=int(_env("WEB_MAX_CONNECTIONS", "0") or 0),
        help="established HTTP connections; more are closed at once (IMAGESEC_WEB_MAX_CONNECTIONS, "
        "default: 1024, or less where the open-file limit is lower)",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        default=_env("WEB_ENABLE_LIFECYCLE") in ("1", "true"),
        help="enable POST /-/reload (IMAGESEC_WEB_ENABLE_LIFECYCLE)",
    )
    parser.add_argument(
        "--web.probes-without-auth",
        dest="probes_without_auth",
        action="store_true",
        default=_env("WEB_PROBES_WITHOUT_AUTH") in ("1", "true"),
        help="serve /-/healthy and /-/ready without basic auth, so container and Kubernetes "
        "probes need no password (IMAGESEC_WEB_PROBES_WITHOUT_AUTH)",
    )


def listen_addresses(args: argparse.Namespace) -> list[str]:
    """The repeated --web.listen-address values, else the environment's, else the default."""
    if args.listen_address:
        return list(args.listen_address)
    env = _env("WEB_LISTEN_ADDRESS")
    return [a.strip() for a in env.split(",") if a.strip()] if env else [f":{DEFAULT_PORT}"]


def add_shard_flags(parser: argparse.ArgumentParser) -> None:
    """``--shard I --total-shards N`` and ``--shard.auto`` (kube-state-metrics' convention)."""
    group = parser.add_argument_group(
        "sharding: N replicas with the same config split the (account, region) units"
    )
    group.add_argument(
        "--shard",
        type=int,
        default=_env("SHARD"),
        metavar="I",
        help="this replica's shard, 0..N-1 (IMAGESEC_SHARD, default 0)",
    )
    group.add_argument(
        "--total-shards",
        dest="total_shards",
        type=int,
        default=_env("TOTAL_SHARDS", "1"),
        metavar="N",
        help="number of replicas (IMAGESEC_TOTAL_SHARDS, default 1: no sharding)",
    )
    group.add_argument(
        "--shard.auto",
        dest="shard_auto",
        action="store_true",
        default=(_env("SHARD_AUTO") or "").lower() in ("1", "true"),
        help="take the shard from the StatefulSet ordinal the pod name ends with "
        "(POD_NAME, else the host name), e.g. imagesec-exporter-2 is shard 2 "
        "(IMAGESEC_SHARD_AUTO)",
    )


def shard_from_args(
    args: argparse.Namespace, env: dict[str, str] | None = None, hostname: str | None = None
) -> Shard:
    """This replica's shard; ValueError (one sentence) when the flags do not make one."""
    env = dict(os.environ) if env is None else env
    index = args.shard
    if args.shard_auto:
        if index is not None:
            raise ValueError("give either --shard or --shard.auto, not both")
        index = ordinal(env.get("POD_NAME") or hostname or socket.gethostname())
    return Shard(index or 0, args.total_shards)


def simulate_parser() -> argparse.ArgumentParser:
    from exporter import simulator

    creds = "\n".join(
        [
            f"ALIBABA_CLOUD_ACCESS_KEY_ID={simulator.DEMO_ALIYUN_ACCESS_KEY_ID}",
            f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={simulator.DEMO_ALIYUN_ACCESS_KEY_SECRET}",
            f"TENCENTCLOUD_SECRET_ID={simulator.DEMO_TENCENT_SECRET_ID}",
            f"TENCENTCLOUD_SECRET_KEY={simulator.DEMO_TENCENT_SECRET_KEY}",
        ]
    )
    from exporter.simulator import identity

    roles = "\n".join(
        [
            f"ALIBABA_CLOUD_ROLE_ARN={identity.DEMO_ALIYUN_ROLE_ARN}",
            f"ALIBABA_CLOUD_OIDC_PROVIDER_ARN={identity.DEMO_ALIYUN_OIDC_PROVIDER_ARN}",
            f"TKE_ROLE_ARN={identity.DEMO_TENCENT_ROLE_ARN}",
            f"TKE_PROVIDER_ID={identity.DEMO_TENCENT_PROVIDER_ID}",
            "TKE_REGION=ap-guangzhou",
        ]
    )
    parser = argparse.ArgumentParser(
        prog="imagesec-exporter simulate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the simulated Alibaba Sas and Tencent TCSS endpoints on their own.",
        epilog="Demo credentials the simulator accepts:\n\n"
        + creds
        + "\n\nDemo roles: STS (AssumeRole, AssumeRoleWithOIDC, AssumeRoleWithWebIdentity) "
        "answers on the same\nlisteners (set sts_endpoint to them), instance metadata under "
        f"/latest/ (metadata_endpoint;\nrole {identity.DEMO_INSTANCE_ROLE}):\n\n"
        + roles
        + f"\n\nThe OIDC token both accept (write it to the token file): {identity.DEMO_OIDC_TOKEN}",
    )
    parser.add_argument("--aliyun.listen-address", dest="aliyun", default="127.0.0.1:18080")
    parser.add_argument("--tencent.listen-address", dest="tencent", default="127.0.0.1:18081")
    parser.add_argument(
        "--aliyun.international-listen-address",
        dest="aliyun_international",
        default=None,
        help="also serve the Sas international site (ap-southeast-1) as its own endpoint; "
        "without it the Sas listener serves the China site",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic fleet")
    parser.add_argument("--images-per-region", type=int, default=24)
    return parser


def configure_logging(level: str, fmt: str = "logfmt") -> None:
    """Logs to stderr (exporter/logs.py); ValueError for an unknown level or format."""
    logs.configure(level, fmt)


def demo_config(
    aliyun_urls: dict[str, str], tencent_url: str
) -> tuple[Config, dict[AccountId, ResolvedCredentials]]:
    """A config pointing at simulated clouds, refreshing often so graphs move."""
    from pydantic import SecretStr

    from exporter import simulator

    config = parse_config(
        {
            "accounts": [
                {
                    "name": "demo",
                    "provider": "aliyun",
                    "regions": list(aliyun_urls),
                    "endpoint": aliyun_urls,
                },
                {
                    "name": "demo",
                    "provider": "tencent",
                    "regions": list(simulator.DEMO_TENCENT_REGIONS),
                    "endpoint": tencent_url,
                },
            ],
            "collectors": {name: {"interval": "15s"} for name in COLLECTORS},
            "refresh": {"timeout": "60s"},
        }
    )
    creds: dict[AccountId, ResolvedCredentials] = {
        ("aliyun", "demo"): ResolvedCredentials(
            simulator.DEMO_ALIYUN_ACCESS_KEY_ID,
            SecretStr(simulator.DEMO_ALIYUN_ACCESS_KEY_SECRET),
            None,
            "demo",
        ),
        ("tencent", "demo"): ResolvedCredentials(
            simulator.DEMO_TENCENT_SECRET_ID,
            SecretStr(simulator.DEMO_TENCENT_SECRET_KEY),
            None,
            "demo",
        ),
    }
    return config, creds


@contextlib.contextmanager
def demo_clouds() -> Iterator[tuple[dict[str, str], str]]:
    """Start the simulated clouds on free loopback ports: one Sas endpoint per site, as the
    real service has, and one TCSS endpoint. Yield {Sas region: URL} and the TCSS URL."""
    from exporter.simulator import DEMO_ALIYUN_REGIONS, Simulator, SimulatorServer

    sim = Simulator()
    with contextlib.ExitStack() as stack:
        sas = {
            region: stack.enter_context(SimulatorServer(sim, "aliyun", site=region))
            for region in DEMO_ALIYUN_REGIONS
        }
        tencent = stack.enter_context(SimulatorServer(sim, "tencent"))
        urls = {region: f"http://{server.address}" for region, server in sas.items()}
        log.info(
            "demo clouds started",
            extra={"aliyun": ",".join(urls.values()), "tencent": tencent.address},
        )
        yield urls, f"http://{tencent.address}"


Credentials = Mapping[AccountId, ResolvedCredentials | CredentialHolder]


async def serve(
    config: Config,
    credentials: Credentials,
    args: argparse.Namespace,
    overrides: dict[str, bool],
    web_config: WebConfig,
    shard: Shard | None = None,
) -> int:
    """Run the refresh loop and the web server until SIGINT/SIGTERM, or refresh once."""
    telemetry = Telemetry()
    # The HTTP threads share the GIL with the refresh loop and the render thread: a 1 ms switch
    # interval (default 5 ms) bounds how long a probe waits each time it needs the GIL back.
    sys.setswitchinterval(0.001)
    fix_mmap_threshold()  # big transient buffers are unmapped when freed (exporter/memory.py)
    headers = {"user-agent": f"imagesec-exporter/{__version__}"}
    async with (
        Pools(http_limits(config.http), headers) as http,
        CredentialHolders.open(telemetry) as holders,
    ):
        holders.adopt(config, credentials)
        sources = build_sources(
            config, credentials, telemetry, http, overrides=overrides, shard=shard
        )
        log_cost(config, sources, shard or Shard())
        refresher = Refresher(
            sources,
            telemetry=telemetry,
            timeout=config.refresh.timeout,
            max_age=config.refresh.max_age,
        )
        families = metric_selection(args.metric_allowlist, args.metric_denylist)
        store = ExpositionStore(refresher.snapshot, telemetry, families=families)
        if args.once:
            snapshot = await refresher.run_once()
            store.update(snapshot)
            sys.stdout.buffer.write(store.scrape(accept_gzip=False))
            sys.stdout.flush()
            failed = sorted(str(k) for k, s in snapshot.sources.items() if not s.up)
            if failed:
                log.error("sources failed", extra={"sources": ",".join(failed)})
            return 1 if failed else 0
        refresher.on_snapshot = store.update
        store.start()
        status = ReloadStatus()

        def build(new: Config) -> list[Source]:
            """Sources of a reloaded config, with credential holders bound like the first ones."""
            return build_sources(
                new, holders.for_config(new), telemetry, http, overrides=overrides, shard=shard
            )

        reloader = ConfigReloader(
            None if args.demo else Path(args.config_file),
            config,
            overrides,
            refresher,
            build,
            status,
        )
        # Before the server answers: a SIGTERM right after the first response is a clean stop.
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            server = start_web(args, store, web_config, telemetry, status, reloader)
        except (OSError, ValueError) as err:
            log.error(
                "cannot listen",
                extra={"address": ",".join(listen_addresses(args)), "error": str(err)},
            )
            store.stop()
            return 1
        log.info(
            "listening",
            extra={
                "address": ",".join(f"{server.scheme}://{a}" for a in server.addresses),
                "path": args.telemetry_path,
                "sources": len(sources),
            },
        )
        loop.add_signal_handler(signal.SIGHUP, reloader.on_sighup, server)
        try:
            await refresher.run()
        except asyncio.CancelledError:
            log.info("shutting down")
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            server.close()
            store.stop()
    return 0


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (as Go does at start); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def start_web(
    args: argparse.Namespace,
    store: ExpositionStore,
    web_config: WebConfig,
    telemetry: Telemetry,
    status: ReloadStatus,
    reloader: ConfigReloader,
) -> WebServer:
    """Bind the listeners (or take systemd's sockets) and start the HTTP server thread."""
    files = raise_open_file_limit()
    # Half the descriptors for clients: the rest stay for cloud calls, files and the loop.
    max_connections = args.max_connections or min(1024, max(8, files // 2))
    main_loop = asyncio.get_running_loop()

    async def reload() -> str | None:
        future = asyncio.run_coroutine_threadsafe(reloader.reload(), main_loop)
        return await asyncio.wrap_future(future)

    if args.web_config_file:
        status.record("web_config", True)
    server = WebServer(
        store,
        [] if args.systemd_socket else listen_addresses(args),
        sockets=systemd_sockets() if args.systemd_socket else (),
        telemetry_path=args.telemetry_path,
        web_config=web_config,
        web_config_file=Path(args.web_config_file) if args.web_config_file else None,
        telemetry=telemetry,
        limits=Limits(max_requests=args.max_requests, max_connections=max_connections),
        probes_without_auth=args.probes_without_auth,
        reload=reload if args.enable_lifecycle else None,
        reload_status=status,
        links=LandingLinks(dashboard_url=args.dashboard_url, demo=args.demo),
    )
    server.start()
    return server


class ConfigReloader:
    """SIGHUP and ``POST /-/reload``: re-read the config file and swap the sources.

    Sources of accounts whose settings did not change keep running with their data; changed
    ones are rebuilt (keeping their last good data until they refresh); added ones start;
    removed ones stop. An invalid file is refused, logged and counted, and the running config
    stays.
    """

    def __init__(
        self,
        path: Path | None,
        config: Config,
        overrides: dict[str, bool],
        refresher: Refresher,
        build: Callable[[Config], list[Source]],
        status: ReloadStatus,
    ) -> None:
        self._path = path
        self._config = config
        self._overrides = overrides
        self._refresher = refresher
        self._build = build
        self._status = status
        self._lock = asyncio.Lock()
        status.record("config", True)

    def on_sighup(self, server: WebServer) -> None:
        log.info("reload requested", extra={"signal": "SIGHUP"})
        server.reload_web_config_soon()
        asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> str | None:
        """Reload the config file; None on success, else the reason (the old config stays)."""
        async with self._lock:
            if self._path is None:  # --demo: the config is built in, nothing to re-read
                self._status.record("config", True)
                return None
            try:
                config = await asyncio.to_thread(load_config, self._path)
                problems = check_collectors(config, self._overrides)
                if problems:
                    raise ConfigError(problems)
                sources = self._build(config)
            except ConfigError as err:
                reason = "; ".join(str(d) for d in err.details)
                self._status.record("config", False)
                log.error("config reload failed", extra={"error": reason})
                return reason
            kept = self._unchanged_accounts(config)
            current = {s.key: s for s in self._refresher.sources}
            merged = [
                current[s.key]
                if s.key in current and (s.key.provider, s.key.account) in kept
                else s
                for s in sources
            ]
            self._refresher.reconfigure(merged, timeout=config.refresh.timeout)
            self._config = config
            self._status.record("config", True)
            log.info(
                "config reloaded",
                extra={
                    "sources": len(merged),
                    "kept": sum(1 for s in merged if s in current.values()),
                },
            )
            return None

    def _unchanged_accounts(self, config: Config) -> set[AccountId]:
        """Accounts whose settings (credentials' fields and files included) are as before."""
        if (config.collectors, config.refresh) != (self._config.collectors, self._config.refresh):
            return set()
        old = {(a.provider, a.name): a for a in self._config.accounts}
        return {(a.provider, a.name) for a in config.accounts if old.get((a.provider, a.name)) == a}


def log_cost(config: Config, sources: Sequence[Source], shard: Shard) -> None:
    """Log the shard and what its sources will cost in API calls (exporter/cost.py)."""
    cost = estimate(sources, config.refresh.estimated_images)
    log.info(
        "api cost estimate",
        extra={
            "shard": shard.index,
            "total_shards": shard.total,
            "sources": len(sources),
            "calls_per_day": cost.per_day,
            "first_pass_calls": cost.first_pass,
            "images": cost.images_per_source,
            "images_assumed": cost.assumed,
            "rescans_per_image_per_day": 1,
        },
    )
    if cost.assumed:
        log.info(
            "api cost estimate assumes the fleet size",
            extra={"images": cost.images_per_source, "setting": "refresh.estimated_images"},
        )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        sim_args = simulate_parser().parse_args(argv[1:])
        configure_logging("info")
        from exporter.simulator import serve_forever

        serve_forever(
            sim_args.aliyun,
            sim_args.tencent,
            seed=sim_args.seed,
            images_per_region=sim_args.images_per_region,
            aliyun_international_address=sim_args.aliyun_international,
        )
        return 0
    parser = run_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(args.log_level, args.log_format)
    except ValueError as err:
        flag = "--log.format" if "format" in str(err) else "--log.level"
        given = any(a == flag or a.startswith(f"{flag}=") for a in argv)
        source = flag if given else f"IMAGESEC_{flag[2:].replace('.', '_').upper()}"
        print(f"config error: {source}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    overrides = {
        name: value
        for name in COLLECTORS
        if (value := getattr(args, f"collector_{name}")) is not None
    }
    try:
        shard = shard_from_args(args)
    except ValueError as err:
        print(f"config error: --shard: {err}", file=sys.stderr)
        return EXIT_CONFIG
    args.resolved_shard = shard
    try:
        if args.demo:
            with demo_clouds() as (aliyun_urls, tencent_url):
                demo, demo_credentials = demo_config(aliyun_urls, tencent_url)
                problems: list[ConfigProblem] = []
                web_config = _web_config(args, problems)
                _check(demo, overrides, problems, args)
                if args.check_config:
                    print("demo configuration is valid")
                    return 0
                return _run(demo, demo_credentials, args, overrides, web_config)
        if not args.config_file:
            parser.error("--config.file is required (or --demo)")
        found = inspect_file(Path(args.config_file))
        config, problems = found.config, list(found.problems)
        credentials: dict[AccountId, ResolvedCredentials | CredentialHolder] = {}
        origins: dict[AccountId, str] = {}
        for ident, resolved in found.credentials.items():
            credentials[ident] = CredentialHolder(
                resolved.provider, cloud=ident[0], account=ident[1]
            )
            origins[ident] = f"{resolved.provider.kind} ({resolved.origin})"
        web_config = _web_config(args, problems)
        _check(config, overrides, problems, args)
        assert config is not None  # _check raised otherwise
        if args.check_config:
            print(f"configuration is valid: {len(config.accounts)} account(s)")
            for (provider, name), origin in origins.items():
                print(f"  {provider}/{name}: credentials {origin}")
            if args.probe:
                return asyncio.run(_probe(config, credentials))
            return 0
        if args.probe:
            parser.error("--probe needs --check-config")
        return _run(config, credentials, args, overrides, web_config)
    except ConfigError as err:
        for detail in err.details:
            print(f"config error: {detail}", file=sys.stderr)
        return EXIT_CONFIG


def _web_config(args: argparse.Namespace, problems: list[ConfigProblem]) -> WebConfig | None:
    """Load --web.config.file (certificates, keys and hashes included); problems are appended."""
    if not args.web_config_file:
        return None
    try:
        return load_web_config(Path(args.web_config_file))
    except ConfigError as err:
        problems += err.details
        return None


def _check(
    config: Config | None,
    overrides: dict[str, bool],
    problems: list[ConfigProblem],
    args: argparse.Namespace,
) -> None:
    """Raise every problem found so far plus the collector and flag problems."""
    if config is not None:
        problems = problems + check_collectors(config, overrides)
    for address in [] if args.systemd_socket else listen_addresses(args):
        try:
            parse_listen_address(address)
        except ValueError as err:
            problems.append(ConfigProblem("--web.listen-address", str(err)))
    if args.max_requests < 0 or args.max_connections < 0:
        problems.append(ConfigProblem("--web.max-requests", "must be 0 (no limit) or more"))
    path = args.telemetry_path
    if not path.startswith("/") or path in ("/", "/-/healthy", "/-/ready", "/-/reload"):
        problems.append(
            ConfigProblem(
                "--web.telemetry-path",
                f"{path!r} must be a path starting with '/' other than /, /-/healthy, /-/ready "
                f"and /-/reload (e.g. /{path.strip('/') or 'metrics'})",
            )
        )
    try:
        metric_selection(args.metric_allowlist, args.metric_denylist)
    except ValueError as err:
        flag = "--metric-allowlist" if args.metric_allowlist else "--metric-denylist"
        problems.append(ConfigProblem(flag, str(err)))
    if problems:
        raise ConfigError(problems)


async def _probe(config: Config, credentials: Credentials) -> int:
    from exporter.credentials.probe import probe

    telemetry = Telemetry()
    holders = {k: v for k, v in credentials.items() if isinstance(v, CredentialHolder)}
    async with CredentialHolders.open(telemetry) as bound, httpx.AsyncClient() as http:
        bound.adopt(config, credentials)
        results = await probe(config, holders, http, telemetry)
    for result in results:
        print(result)
    return 0 if all(r.ok for r in results) else 1


def _run(
    config: Config,
    credentials: Credentials,
    args: argparse.Namespace,
    overrides: dict[str, bool],
    web_config: WebConfig | None = None,
) -> int:
    try:
        return asyncio.run(
            serve(
                config,
                credentials,
                args,
                overrides,
                web_config or WebConfig(),
                args.resolved_shard,
            )
        )
    except KeyboardInterrupt:
        return 0
