"""HTTP: /metrics, the landing page, /-/healthy, /-/ready and /-/reload, with TLS and basic auth.

A scrape never calls a cloud API and never renders the per-image families: those are rendered
once per change by ``ExpositionStore`` (exporter/exposition.py), so a scrape writes shared
immutable chunks plus a render of the small self-metrics.

The server is aiohttp's low-level HTTP/1.1 server on its own event loop in its own thread, so a
busy refresh loop cannot delay a scrape or a probe. TLS handshakes run inside that loop (never in
``accept()``) with a timeout; every connection has an idle and header timeout; established
connections and in-flight scrapes are bounded (the excess is closed or answered 503 and
counted); a body is written in bounded slices, each awaiting the socket, so a slow reader holds
at most a slice, not the exposition.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import itertools
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp.web_response
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import GCCollector, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import landing
from exporter.errors import ConfigError, ConfigProblem
from exporter.exposition import ExpositionStore, Inflating, Mapped, body_length
from exporter.landing import LandingLinks
from exporter.metrics import CATALOGUE
from exporter.model import Snapshot
from exporter.telemetry import Telemetry
from exporter.webconfig import (
    Authenticator,
    TokenBucket,
    Verdict,
    WebConfig,
    fingerprint,
    load_web_config,
    sans_of,
)

__all__ = [
    "ExpositionStore",
    "Limits",
    "ReloadStatus",
    "WebConfig",
    "WebServer",
    "landing_page",
    "load_web_config",
    "parse_listen_address",
]

log = logging.getLogger(__name__)

# The classic text format: every name we emit is a legacy-valid Prometheus name.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def landing_page(
    snapshot: Snapshot, telemetry_path: str, links: LandingLinks | None = None
) -> bytes:
    """The page at ``/`` now: exporter/landing.py renders it from the snapshot (no secrets)."""
    links = replace(links or LandingLinks(), telemetry_path=telemetry_path)
    return landing.render(snapshot, time.time(), links)


SERVER_HEADER = "imagesec-exporter"  # no version: scanners need not learn it
# aiohttp answers malformed requests itself and names its and Python's versions in ``Server``
# unless a response sets one; this module-level default is the one it falls back to.
aiohttp.web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]

REJECT_REASONS = (
    "max_connections",
    "max_requests",
    "rate_limit",
    "unauthorized",
    "password_too_long",
    "forbidden_san",
    "write_timeout",
    "accept_paused",
)
# asyncio's message when accept() fails for want of descriptors or memory (EMFILE, ENFILE,
# ENOBUFS, ENOMEM): it stops accepting for a second, and reports the failure once per pending
# connection it tried (up to the backlog), each with a traceback.
ACCEPT_FAILED = "socket.accept() out of system resource"
ACCEPT_LOG_EVERY = 60.0  # seconds between log lines about paused accepts
PROBE_PATHS = ("/-/healthy", "/-/ready")
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of the HTTP server (``--web.max-requests``, ``--web.max-connections``)."""

    max_requests: int = 40  # concurrent /metrics scrapes; 0: unbounded
    max_connections: int = 1024  # established connections; more are closed at once
    handshake_timeout: float = 10.0  # TLS handshake
    header_timeout: float = 15.0  # the first request's headers, from the connection's start
    idle_timeout: float = 60.0  # no complete request headers for this long: closed
    write_timeout: float = 60.0  # a response body not taken by the client within this: cut
    write_chunk: int = 64 * 1024  # bytes handed to the socket per await
    bcrypt_threads: int = 2
    inflate_threads: int = 2  # plain scrapes inflate here, off the event loop (zlib drops the GIL)
    inflate_batch: int = 16  # pieces (of at most 64 KiB of text) inflated and written at a time


@dataclass(slots=True)
class ReloadStatus:
    """Outcome of the last reload of each configuration file, as Prometheus exposes its own."""

    clock: Callable[[], float] = time.time
    ok: dict[str, bool] = field(default_factory=dict)
    last_success: dict[str, float] = field(default_factory=dict)

    def record(self, file: str, ok: bool) -> None:
        self.ok[file] = ok
        if ok:
            self.last_success[file] = self.clock()


class ServerCollector(Collector):
    """Connections and reload state::

    # HELP imagesec_http_connections Established HTTP connections to the exporter
    # TYPE imagesec_http_connections gauge
    imagesec_http_connections 3.0
    # HELP imagesec_config_last_reload_successful 1 if the last reload of the file succeeded
    # TYPE imagesec_config_last_reload_successful gauge
    imagesec_config_last_reload_successful{file="web_config"} 1.0
    """

    def __init__(self, connections: Callable[[], int], status: ReloadStatus) -> None:
        self._connections = connections
        self._status = status

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        spec = CATALOGUE["imagesec_http_connections"]
        yield GaugeMetricFamily(spec.name, spec.help, value=self._connections())
        ok = CATALOGUE["imagesec_config_last_reload_successful"]
        family = GaugeMetricFamily(ok.name, ok.help, labels=ok.labels)
        for file, value in sorted(self._status.ok.items()):
            family.add_metric((file,), 1.0 if value else 0.0)
        yield family
        ts = CATALOGUE["imagesec_config_last_reload_success_timestamp_seconds"]
        family = GaugeMetricFamily(ts.name, ts.help, labels=ts.labels)
        for file, when in sorted(self._status.last_success.items()):
            family.add_metric((file,), when)
        yield family


class ReloadableContext(ssl.SSLContext):
    """A server context whose every new handshake uses the newest loaded context.

    asyncio builds each connection's TLS object with ``wrap_bio`` on the context it was given;
    delegating that call lets a rotated certificate, CA or user list apply to the next
    handshake without re-binding the listener.
    """

    current: ssl.SSLContext

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self.current.wrap_bio(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class _Live:
    """The web config in force, with the state built from it (swapped as one on reload)."""

    config: WebConfig
    auth: Authenticator
    bucket: TokenBucket | None
    fingerprint: tuple[tuple[int, int, int], ...]


def parse_listen_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (host ``""``: every IPv4 and IPv6 address)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad listen address {address!r}: use HOST:PORT or :PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"bad listen address {address!r}: unbalanced brackets")
    return host.strip("[]"), int(port)


def listen_socket(address: str) -> socket.socket:
    """A listening socket for ``address``; ``:PORT`` is dual-stack where the kernel allows."""
    host, port = parse_listen_address(address)
    if not host:
        if socket.has_dualstack_ipv6():
            try:
                return socket.create_server(
                    ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=1024
                )
            except OSError as err:  # IPv6 switched off (some containers): IPv4 alone
                if err.errno == errno.EADDRINUSE:
                    raise
        return socket.create_server(("0.0.0.0", port), backlog=1024)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=1024)


def systemd_sockets(env: dict[str, str] | None = None) -> list[socket.socket]:
    """Sockets passed by systemd socket activation (``LISTEN_FDS`` from fd 3, for this PID)."""
    env = dict(os.environ) if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()):
        raise ValueError("--web.systemd-socket: LISTEN_PID is not this process")
    count = int(env.get("LISTEN_FDS", "0"))
    if count < 1:
        raise ValueError("--web.systemd-socket: no sockets passed (LISTEN_FDS)")
    return [socket.socket(fileno=fd) for fd in range(3, 3 + count)]


class _Server(web.Server):
    """aiohttp's server with a bound on established connections (the excess closed, counted)."""

    connections: list[RequestHandler]

    def __init__(
        self,
        *args: Any,
        limit: int,
        header_timeout: float,
        on_reject: Callable[[], None],
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.open = 0
        self._limit = limit
        self._header_timeout = header_timeout
        self._on_reject = on_reject

    @staticmethod
    def _first_headers_due(handler: RequestHandler, transport: asyncio.Transport) -> None:
        # aiohttp counts a request once its headers are parsed; none by now: a slow client.
        if getattr(handler, "_request_count", 1) == 0 and not transport.is_closing():
            transport.abort()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open += 1
        asyncio.get_running_loop().call_later(
            self._header_timeout, self._first_headers_due, handler, transport
        )
        if self._limit and self.open > self._limit:
            # Make room by closing the oldest connection with no request in progress (idle
            # keep-alive or still sending headers), as nginx reuses idle keep-alive slots, so a
            # crowd of idle clients cannot lock scrapers out; else refuse the newcomer.
            self._on_reject()
            for other in self.connections:
                victim = other.transport
                if (
                    other is not handler
                    and victim is not None
                    and not victim.is_closing()
                    and not getattr(other, "_request_in_progress", True)
                ):
                    victim.abort()
                    return
            transport.abort()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open -= 1


class WebServer:
    """The exporter's HTTP endpoint, served by aiohttp on its own loop in a background thread.

    The listening sockets are bound in the constructor (``OSError`` if an address is taken);
    ``start()`` serves, ``close()`` stops. ``reload`` (``POST /-/reload`` with lifecycle on) is
    awaited in the server's loop and returns None on success or the reason it failed.
    """

    def __init__(
        self,
        store: ExpositionStore,
        addresses: str | Sequence[str] = (),
        *,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
        web_config_file: Path | None = None,
        telemetry: Telemetry | None = None,
        limits: Limits = Limits(),
        probes_without_auth: bool = False,
        reload: Callable[[], Awaitable[str | None]] | None = None,
        reload_status: ReloadStatus | None = None,
        sockets: Sequence[socket.socket] = (),
        watch_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        links: LandingLinks | None = None,
    ) -> None:
        self._store = store
        self._telemetry_path = telemetry_path
        self._links = links
        self._web_config_file = web_config_file
        self._telemetry = telemetry or Telemetry()
        for reason in REJECT_REASONS:
            self._telemetry.declare("imagesec_http_rejected_requests", (reason,))
        self._limits = limits
        self._probes_without_auth = probes_without_auth
        self._reload = reload
        self.reload_status = reload_status or ReloadStatus()
        self._watch_interval = watch_interval
        self._clock = clock
        config = web_config or WebConfig()
        self._live = self._make_live(config)
        self._context: ReloadableContext | None = None
        if config.ssl_context is not None:
            self._context = ReloadableContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.current = config.ssl_context
        if isinstance(addresses, str):
            addresses = [addresses]
        self._sockets: list[socket.socket] = list(sockets)
        try:
            for address in addresses:
                self._sockets.append(listen_socket(address))
        except OSError:
            for sock in self._sockets:
                sock.close()
            raise
        self._in_flight = 0
        self._accept_burst = False
        self._accept_pauses = 0
        self._accept_logged: float | None = None
        self._bcrypt = concurrent.futures.ThreadPoolExecutor(
            limits.bcrypt_threads, thread_name_prefix="bcrypt"
        )
        self._inflater = concurrent.futures.ThreadPoolExecutor(
            limits.inflate_threads, thread_name_prefix="inflate"
        )
        # Process and GC metrics beside the exporter's own, on the same endpoint.
        self._collectors: list[Collector] = [
            ServerCollector(lambda: self._server.open if self._server else 0, self.reload_status),
            ProcessCollector(registry=None),
        ]
        for collector in self._collectors:
            store.health.register(collector)
        self._collectors.append(GCCollector(registry=store.health))
        self._server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._context is not None else "http"

    @property
    def addresses(self) -> list[str]:
        out = []
        for sock in self._sockets:
            host, port = sock.getsockname()[:2]
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    @property
    def address(self) -> str:
        return self.addresses[0]

    def _make_live(self, config: WebConfig) -> _Live:
        bucket = None
        if config.rate_limit is not None:
            bucket = TokenBucket(config.rate_limit.burst, config.rate_limit.interval, self._clock)
        return _Live(config, Authenticator(config.users), bucket, fingerprint(config.files))

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="http", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)
        for sock in self._sockets:
            sock.close()
        self._bcrypt.shutdown(wait=False, cancel_futures=True)
        self._inflater.shutdown(wait=False, cancel_futures=True)
        for collector in self._collectors:
            self._store.health.unregister(collector)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # reported to start(); the thread must not die silently
            self._error = err
            self._started.set()
            log.exception("web server failed")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(self._loop_exception)
        self._stop = asyncio.Event()
        self._server = _Server(
            self._handle,
            limit=self._limits.max_connections,
            header_timeout=self._limits.header_timeout,
            on_reject=lambda: self._reject("max_connections"),
            handler_cancellation=True,
            keepalive_timeout=self._limits.idle_timeout,
            access_log=None,
        )
        servers = [
            await self._loop.create_server(
                self._server,
                sock=sock,
                ssl=self._context,
                ssl_handshake_timeout=self._limits.handshake_timeout if self._context else None,
                backlog=1024,
            )
            for sock in self._sockets
        ]
        watcher = None
        if self._web_config_file is not None:
            watcher = asyncio.create_task(self._watch())
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
            for server in servers:
                server.close()
            await self._server.shutdown(timeout=5)

    # -- web config reload -------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            await self.reload_web_config(only_if_changed=True)

    def reload_web_config_soon(self) -> None:
        """Re-read the web config file from any thread (SIGHUP)."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.reload_web_config(), self._loop)

    async def reload_web_config(self, *, only_if_changed: bool = False) -> str | None:
        """Load the web config file again; keep the running one if the new one is invalid."""
        path = self._web_config_file
        if path is None:
            return None
        live = self._live
        seen = fingerprint(live.config.files)
        if only_if_changed and seen == live.fingerprint:
            return None
        try:
            config = await asyncio.to_thread(load_web_config, path)
            if (config.ssl_context is None) != (self._context is None):
                raise ConfigError(
                    [ConfigProblem(str(path), "switching TLS on or off needs a restart")]
                )
            new = await asyncio.to_thread(self._make_live, config)
        except ConfigError as err:
            # Remember what was seen, so a broken file is reported once, not every second.
            self._live = _Live(live.config, live.auth, live.bucket, seen)
            self.reload_status.record("web_config", False)
            log.error("web config reload failed", extra={"error": "; ".join(map(str, err.details))})
            return "; ".join(map(str, err.details))
        if self._context is not None and config.ssl_context is not None:
            self._context.current = config.ssl_context
        # What was on disk before the read, not after: a file rewritten while it was read is
        # loaded again on the next look. New files (another cert path) are looked at afresh.
        same_files = config.files == live.config.files
        self._live = _Live(new.config, new.auth, new.bucket, seen if same_files else ())
        self.reload_status.record("web_config", True)
        log.info("web config reloaded", extra={"users": len(config.users), "tls": config.tls})
        return None

    # -- requests ----------------------------------------------------------------------------

    def _reject(self, reason: str) -> None:
        self._telemetry.inc("imagesec_http_rejected_requests", (reason,))

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Count and rate-limit asyncio's accept failures; hand anything else to the default.

        Out of descriptors, asyncio reports one failure per connection waiting in the backlog
        (hundreds per second, each with a traceback): a log flood that can stall this thread on
        a full stderr pipe. One burst is one pause of the listener: counted once, and logged at
        most once a minute with the number of pauses since the last line.
        """
        if context.get("message") != ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        if self._accept_burst:
            return
        self._accept_burst = True
        loop.call_soon(self._end_accept_burst)  # the burst is one synchronous accept loop
        self._reject("accept_paused")
        self._accept_pauses += 1
        now = self._clock()
        if self._accept_logged is None or now - self._accept_logged >= ACCEPT_LOG_EVERY:
            err = context.get("exception")
            reason = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else err
            log.warning(
                "accepting connections paused for 1s: out of resources",
                extra={"err": reason, "pauses": self._accept_pauses},
            )
            self._accept_logged = now
            self._accept_pauses = 0

    def _end_accept_burst(self) -> None:
        self._accept_burst = False

    def _response(
        self, live: _Live, status: int, text: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        response = web.Response(status=status, text=text, content_type="text/plain")
        self._decorate(live, response, headers)
        return response

    @staticmethod
    def _decorate(live: _Live, response: web.StreamResponse, extra: dict[str, str] | None) -> None:
        response.headers["Server"] = SERVER_HEADER
        response.headers.update(live.config.headers)
        response.headers.update(extra or {})

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        live = self._live
        path = request.path
        if not (self._probes_without_auth and path in PROBE_PATHS):
            denied = await self._gate(live, request)
            if denied is not None:
                return denied
        try:
            if path == self._telemetry_path and request.method in ("GET", "HEAD"):
                return await self._metrics(live, request)
            if path == "/-/reload":
                return await self._lifecycle_reload(live, request)
            if request.method not in ("GET", "HEAD"):
                return self._response(live, 405, "Method not allowed\n", {"Allow": "GET, HEAD"})
            if path == "/-/healthy":
                return self._response(live, 200, "Healthy\n")
            if path == "/-/ready":
                if self._store.snapshot.ready():
                    return self._response(live, 200, "Ready\n")
                return self._response(live, 503, "Not ready: first refresh running\n")
            if path == "/":
                page = landing_page(self._store.snapshot, self._telemetry_path, self._links)
                response = web.Response(body=page, content_type="text/html", charset="utf-8")
                self._decorate(live, response, None)
                return response
            return self._response(live, 404, "Not found\n")
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("request failed", extra={"path": path})
            return self._response(live, 500, "Internal error\n")

    async def _gate(self, live: _Live, request: web.BaseRequest) -> web.StreamResponse | None:
        """Rate limit, client-certificate SANs and basic auth; a response if refused."""
        if live.bucket is not None and not live.bucket.allow():
            self._reject("rate_limit")
            return self._response(live, 429, "Too many requests\n")
        allowed = live.config.client_allowed_sans
        if allowed is not None:
            sans = sans_of(
                request.transport.get_extra_info("peercert") if request.transport else None
            )
            if not sans & set(allowed):
                self._reject("forbidden_san")
                return self._response(live, 403, "Client certificate SAN not allowed\n")
        if not live.auth.enabled:
            return None
        header = request.headers.get("Authorization")
        if live.auth.cached(header):
            return None
        verdict = await asyncio.get_running_loop().run_in_executor(
            self._bcrypt, live.auth.check, header
        )
        if verdict == Verdict.OK:
            return None
        challenge = {"WWW-Authenticate": 'Basic realm="imagesec-exporter", charset="UTF-8"'}
        if verdict == Verdict.TOO_LONG:
            self._reject("password_too_long")
            return self._response(
                live, 401, "Unauthorized: password longer than 72 bytes (bcrypt limit)\n", challenge
            )
        self._reject("unauthorized")
        return self._response(live, 401, "Unauthorized\n", challenge)

    async def _lifecycle_reload(self, live: _Live, request: web.BaseRequest) -> web.StreamResponse:
        if self._reload is None:
            return self._response(live, 403, "Lifecycle APIs are not enabled\n")
        if request.method not in ("POST", "PUT"):
            return self._response(live, 405, "Only POST or PUT requests allowed\n")
        web_error = await self.reload_web_config()
        error = await self._reload()
        problems = [e for e in (web_error, error) if e]
        if problems:
            return self._response(
                live, 500, "failed to reload config: " + "; ".join(problems) + "\n"
            )
        return self._response(live, 200, "Reloaded\n")

    async def _inflated(self, parts: Inflating) -> AsyncIterator[bytes]:
        """The plain text, inflated by the inflate threads a batch at a time and written as
        one piece: the event loop only writes, once per batch, so probes and other scrapes are
        not queued behind a plain scrape's inflating, and two plain scrapes inflate on two
        cores."""
        loop = asyncio.get_running_loop()
        pieces = iter(parts)
        batch = self._limits.inflate_batch
        while taken := await loop.run_in_executor(self._inflater, _take, pieces, batch):
            yield taken

    async def _write_body(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        parts: tuple[bytes | memoryview | Mapped, ...] | Inflating,
    ) -> None:
        """Plain: inflated off the loop. gzip: the shared file by sendfile where the transport
        allows, the rest (and the file through TLS) in slices of ``write_chunk``."""
        if isinstance(parts, Inflating):
            async for piece in self._inflated(parts):
                await response.write(piece)
            return
        step = self._limits.write_chunk
        for part in parts:
            if isinstance(part, Mapped) and await _sendfile(request, part):
                continue
            view = memoryview(part)
            for offset in range(0, len(view), step):
                await response.write(view[offset : offset + step])

    async def _metrics(self, live: _Live, request: web.BaseRequest) -> web.StreamResponse:
        limit = self._limits.max_requests
        if limit and self._in_flight >= limit:
            self._reject("max_requests")
            return self._response(
                live, 503, f"Too many concurrent scrapes (--web.max-requests={limit})\n"
            )
        self._in_flight += 1
        try:
            accept_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
            # Another scrape still being written: share its self-metrics (see health_text).
            parts = self._store.scrape_parts(accept_gzip, shared=self._in_flight > 1)
            response = web.StreamResponse()
            response.headers["Content-Type"] = CONTENT_TYPE
            if accept_gzip:
                response.headers["Content-Encoding"] = "gzip"
            self._decorate(live, response, None)
            response.content_length = body_length(parts)
            try:
                async with asyncio.timeout(self._limits.write_timeout):
                    await response.prepare(request)
                    if request.method != "HEAD":
                        await self._write_body(request, response, parts)
                    await response.write_eof()
            except TimeoutError:
                self._reject("write_timeout")
                if request.transport is not None:
                    request.transport.abort()
            except ConnectionError:
                # The scraper hung up mid-body (Prometheus at its scrape timeout): routine.
                log.debug("client hung up mid-scrape", extra={"path": request.path})
            except asyncio.CancelledError:
                # The same, noticed while awaiting (sendfile, inflating): the server cancels
                # the handler of a lost connection.
                if request.transport is None or request.transport.is_closing():
                    log.debug("client hung up mid-scrape", extra={"path": request.path})
                raise
            return response
        finally:
            self._in_flight -= 1


def _take(pieces: Iterator[bytes], n: int) -> bytes:
    """The next ``n`` pieces as one (empty at the end)."""
    return b"".join(itertools.islice(pieces, n))


async def _sendfile(request: web.BaseRequest, part: Mapped) -> bool:
    """Send ``part`` with sendfile: the kernel takes the pages, no copy, no GIL. False where
    the transport cannot (TLS), before any byte is sent: the caller writes it instead. Never
    asyncio's own fallback, which reads through the file position the scrapes share."""
    transport = request.transport
    if transport is None or transport.is_closing():  # as a write would say, not a RuntimeError
        raise ConnectionResetError("Cannot write to closing transport")
    if transport.get_extra_info("sslcontext") is not None:
        return False
    try:
        loop = asyncio.get_running_loop()
        # asyncio needs only fileno() and a binary mode of the file
        await loop.sendfile(transport, part.file, 0, len(part), fallback=False)  # type: ignore[arg-type]
    except asyncio.SendfileNotAvailableError:
        return False
    return True
