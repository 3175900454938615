"""Simulator plumbing: request/response values, routing, control plane, transports and servers."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl

import httpx

from exporter.simulator.faults import Fault, FaultPlan
from exporter.simulator.fleet import ALIYUN_SITE_INTL, Fleet

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Fixed demo credentials: public by design, accepted only by the simulator.
DEMO_ALIYUN_ACCESS_KEY_ID = "LTAI5tImagesecDemoKey01"
DEMO_ALIYUN_ACCESS_KEY_SECRET = "imagesecDemoAliyunSecret0000000"
DEMO_TENCENT_SECRET_ID = "AKIDimagesecDemoSecretId0000000000"
DEMO_TENCENT_SECRET_KEY = "imagesecDemoTencentSecretKey0000"

Cloud = Literal["aliyun", "tencent"]
CLOUDS: tuple[Cloud, ...] = ("aliyun", "tencent")


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One HTTP request as the simulator sees it: the wire values, nothing re-encoded."""

    method: str
    path: str
    query: str = ""  # the raw query string as sent, without "?"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    site: str | None = None  # the Sas site of the listener it arrived on, if it serves one

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SimRequest:
        """Build from a request target (``/path?query``) and headers."""
        path, _, query = target.partition("?")
        items = headers.items() if isinstance(headers, Mapping) else headers
        return cls(method.upper(), path or "/", query, tuple(items), body)

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def header_map(self) -> dict[str, str]:
        """Return the headers keyed by lower-case name (first value wins)."""
        out: dict[str, str] = {}
        for key, value in self.headers:
            out.setdefault(key.lower(), value)
        return out

    def query_pairs(self) -> list[tuple[str, str]]:
        """Return the decoded query parameters in wire order, empty values kept."""
        return parse_qsl(self.query, keep_blank_values=True)

    def form_pairs(self) -> list[tuple[str, str]]:
        """Return the decoded form-body parameters (only for form-encoded bodies)."""
        content_type = (self.header("content-type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded" or not self.body:
            return []
        return parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True)


@dataclass(slots=True)
class SimResponse:
    """One HTTP response; ``delay`` is latency the transport or server applies before sending."""

    status: int
    headers: dict[str, str]
    body: bytes
    delay: float = 0.0

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)

    @classmethod
    def of_json(
        cls, status: int, payload: Any, content_type: str, headers: Mapping[str, str] | None = None
    ) -> SimResponse:
        """Serialise ``payload`` compactly with the given content type."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls(status, {"Content-Type": content_type, **(headers or {})}, body)


def html_error_page(status: int = 502) -> SimResponse:
    """The kind of page a load balancer in front of an API sends when the backend is down."""
    body = (
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>Tengine</center>\r\n"
        b"</body>\r\n</html>\r\n"
    )
    return SimResponse(status, {"Content-Type": "text/html"}, body)


# -- pagination: the same table shape the clients declare (STYLE.md habit 11) -------------


@dataclass(frozen=True, slots=True)
class PageSpec:
    """How one action pages: parameter names, default and maximum size, where totals go."""

    style: Literal["page", "offset"]
    list_field: str
    size_param: str
    index_param: str
    default_size: int
    max_size: int
    total_path: tuple[str, ...]


def page_slice(items: Sequence[T], spec: PageSpec, index: int, size: int) -> list[T]:
    """Return the items of one page: ``index`` is 1-based for "page", an offset for "offset"."""
    start = (index - 1) * size if spec.style == "page" else index
    return list(items[start : start + size])


# -- rate limiting, nonces ------------------------------------------------------------------


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens per second, bursts up to ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, ...], tuple[float, float]] = {}

    def allow(self, key: tuple[str, ...], now: float) -> bool:
        """Take one token for ``key`` at ``now``; False when the bucket is empty."""
        if self.rate == float("inf"):
            return True
        with self._lock:
            tokens, last = self._buckets.get(key, (self.rate, now))
            tokens = min(self.rate, tokens + max(0.0, now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True

    def reset(self) -> None:
        """Refill every bucket."""
        with self._lock:
            self._buckets.clear()


class NonceCache:
    """Remembers signature nonces for ``ttl`` seconds to reject replays.

    Nonces are kept in the order they were used and forgotten from the oldest end once
    expired: O(1) per request. (Rebuilding the whole table once it held 10,000 nonces made each
    request cost O(nonces) above about 11 requests/s, and a big fleet's first pass was bound by
    the simulator, not by the rate limits.)
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()

    def use(self, key: tuple[str, str], now: float) -> bool:
        """Record ``key``; False if it was already used within the TTL."""
        with self._lock:
            seen = self._seen
            while seen and now - next(iter(seen.values())) >= self.ttl:
                seen.popitem(last=False)
            if key in seen and now - seen[key] < self.ttl:
                return False
            seen[key] = now
            seen.move_to_end(key)
            return True

    def __len__(self) -> int:
        return len(self._seen)

    def reset(self) -> None:
        """Forget every nonce."""
        with self._lock:
            self._seen.clear()


class Service(Protocol):
    """One simulated cloud API."""

    def handle(self, request: SimRequest) -> SimResponse: ...

    def reset(self) -> None: ...


@dataclass(slots=True)
class _Config:
    seed: int
    images_per_region: int
    faults: list[Fault] = field(default_factory=list)


class Simulator:
    """Simulated Sas and TCSS endpoints over one deterministic fleet, with no sockets.

    ``handle(cloud, request)`` answers one request; :meth:`transport` wraps that for httpx and
    :class:`SimulatorServer` for real HTTP. Paths under ``/_sim/`` are the unauthenticated
    control plane (see :meth:`control`).

    Args:
        clock: Unix seconds; drives signature windows, nonces and flow control. The official
            SDKs sign with the real time, so against them this must stay the real clock.
        fleet_clock: Unix seconds; the instant whose scan state the fleet serves (defaults to
            ``clock``). Tests pin it so the fleet they see does not depend on the wall clock.
        rate_limit: False turns the vendors' flow control off (for tests that walk a lot).
        state_cache: cheap mode for big fleets: scan state moves in steps of this many seconds
            and each site's states are computed once per step (0: exact, the default).
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        images_per_region: int = 24,
        clock: Callable[[], float] = time.time,
        fleet_clock: Callable[[], float] | None = None,
        faults: FaultPlan | None = None,
        rate_limit: bool = True,
        state_cache: float = 0.0,
    ) -> None:
        from exporter.simulator import aliyun, sts, tencent  # the cloud modules import core
        from exporter.simulator.identity import IdentityStore

        self._initial = _Config(seed, images_per_region)
        self.clock = clock
        self.fleet_clock = clock if fleet_clock is None else fleet_clock
        self.fleet = Fleet(
            seed=seed,
            images_per_region=images_per_region,
            clock=self.fleet_clock,
            state_cache=state_cache,
        )
        self.faults = faults if faults is not None else FaultPlan(seed=seed)
        self.request_counts: collections.Counter[tuple[str, str]] = collections.Counter()
        # Known credentials (key id -> secret); tests may add more.
        self.aliyun_keys: dict[str, str] = {
            DEMO_ALIYUN_ACCESS_KEY_ID: DEMO_ALIYUN_ACCESS_KEY_SECRET
        }
        self.tencent_keys: dict[str, str] = {DEMO_TENCENT_SECRET_ID: DEMO_TENCENT_SECRET_KEY}
        # Roles, OIDC tokens and the temporary keys STS and instance metadata issue.
        self.identity = IdentityStore(clock)
        self.metadata_tokens: dict[str, float] = {}  # ECS IMDSv2 token -> expiry
        self.aliyun_sts = sts.AliyunSts(self)
        self.tencent_sts = sts.TencentSts(self)
        self._counts_lock = threading.Lock()
        self.aliyun = aliyun.AliyunService(self)
        self.tencent = tencent.TencentService(self)
        if not rate_limit:
            self.aliyun.limiter.rate = self.tencent.limiter.rate = float("inf")

    def _service(self, cloud: str) -> Service:
        if cloud == "aliyun":
            return self.aliyun
        if cloud == "tencent":
            return self.tencent
        raise ValueError(f"unknown cloud {cloud!r}")

    def count(self, cloud: str, action: str) -> None:
        """Record one request received for (cloud, action), rejected ones included."""
        with self._counts_lock:
            self.request_counts[(cloud, action)] += 1

    def handle(self, cloud: Cloud, request: SimRequest) -> SimResponse:
        """Answer one request to ``cloud``'s endpoint."""
        from exporter.simulator.sts import route

        if request.path.startswith("/_sim/"):
            return self.control(request)
        try:
            credentials = route(self, cloud, request)  # STS and instance metadata
            if credentials is not None:
                return credentials
            return self._service(cloud).handle(request)
        except Exception:  # a simulator bug must look like a server fault, not kill a thread
            logger.exception("simulator failed cloud=%s path=%s", cloud, request.path)
            return SimResponse(500, {"Content-Type": "text/plain"}, b"simulator internal error")

    def transport(self, cloud: Cloud) -> SimTransport:
        """Return an httpx transport (sync and async) answering from this simulator."""
        self._service(cloud)
        return SimTransport(self, cloud)

    # -- control plane ----------------------------------------------------------------------

    def reseed(self, seed: int, images_per_region: int | None = None) -> None:
        """Replace the fleet by the one of ``seed`` (overrides forgotten)."""
        ipr = self.fleet.images_per_region if images_per_region is None else images_per_region
        self.fleet = Fleet(
            seed=seed,
            images_per_region=ipr,
            clock=self.fleet_clock,
            state_cache=self.fleet.state_cache,
        )

    def reset(self) -> None:
        """Back to the constructor's seed: no faults, overrides, counts, nonces or throttling."""
        self.reseed(self._initial.seed, self._initial.images_per_region)
        self.faults.clear()
        with self._counts_lock:
            self.request_counts.clear()
        self.aliyun.reset()
        self.tencent.reset()
        self.identity.reset()
        self.metadata_tokens.clear()

    def stats(self) -> dict[str, Any]:
        """Request counts per cloud and action, and the fleet's parameters."""
        with self._counts_lock:
            counts = sorted(self.request_counts.items())
        out: dict[str, dict[str, int]] = {cloud: {} for cloud in CLOUDS}
        for (cloud, action), n in counts:
            out.setdefault(cloud, {})[action] = n
        return {
            "requests": out,
            "seed": self.fleet.seed,
            "images_per_region": self.fleet.images_per_region,
            "faults": [f.to_dict() for f in self.faults.faults()],
        }

    def control(self, request: SimRequest) -> SimResponse:
        """Serve the control plane.

        ``POST /_sim/reset``; ``POST /_sim/seed`` ``{"seed", "images_per_region"}``;
        ``POST /_sim/faults`` (a list of fault objects, appended), ``DELETE /_sim/faults``,
        ``GET /_sim/faults``; ``POST /_sim/rescan`` ``{"cloud", "count", "region"?}``;
        ``POST /_sim/remove`` ``{"cloud", "image_id"}``; ``GET /_sim/stats``.
        """
        route = (request.method, request.path.rstrip("/"))
        try:
            data: Any = json.loads(request.body) if request.body.strip() else {}
            result = self._route(route, data)
        except (ValueError, TypeError, KeyError) as exc:
            return SimResponse.of_json(400, {"error": str(exc)}, "application/json")
        if result is None:
            return SimResponse.of_json(404, {"error": "no such route"}, "application/json")
        return SimResponse.of_json(200, result, "application/json")

    def _route(self, route: tuple[str, str], data: Any) -> dict[str, Any] | None:
        match route:
            case ("POST", "/_sim/reset"):
                self.reset()
                return {"ok": True}
            case ("POST", "/_sim/seed"):
                self.reseed(int(data["seed"]), _opt_int(data.get("images_per_region")))
                return {"ok": True, "seed": self.fleet.seed}
            case ("POST", "/_sim/faults"):
                items = data if isinstance(data, list) else [data]
                faults = [Fault.from_dict(item) for item in items]
                for fault in faults:
                    self.faults.add(fault)
                return {"ok": True, "faults": len(self.faults)}
            case ("DELETE", "/_sim/faults"):
                self.faults.clear()
                return {"ok": True}
            case ("GET", "/_sim/faults"):
                return {"faults": [f.to_dict() for f in self.faults.faults()]}
            case ("POST", "/_sim/rescan"):
                cloud = _cloud(data["cloud"])
                keys = self.fleet.rescan(cloud, int(data["count"]), site=data.get("region"))
                return {"ok": True, "images": keys}
            case ("POST", "/_sim/remove"):
                removed = self.fleet.remove(_cloud(data["cloud"]), str(data["image_id"]))
                return {"ok": removed}
            case ("GET", "/_sim/stats"):
                return self.stats()
        return None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _cloud(value: Any) -> Cloud:
    if value == "aliyun":
        return "aliyun"
    if value == "tencent":
        return "tencent"
    raise ValueError(f"unknown cloud {value!r}")


class SimTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport answering from a :class:`Simulator`, like ``httpx.MockTransport``.

    Injected latency is slept for real (``time.sleep`` / ``asyncio.sleep``) so client timeouts
    trigger as they would over the network.
    """

    def __init__(self, simulator: Simulator, cloud: Cloud) -> None:
        self.simulator = simulator
        self.cloud: Cloud = cloud

    @staticmethod
    def _to_sim(request: httpx.Request, body: bytes) -> SimRequest:
        target = request.url.raw_path.decode("ascii")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        return SimRequest.build(request.method, target, headers, body)

    @staticmethod
    def _to_httpx(response: SimResponse) -> httpx.Response:
        return httpx.Response(response.status, headers=response.headers, content=response.body)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.simulator.handle(self.cloud, self._to_sim(request, request.read()))
        if response.delay > 0:
            time.sleep(response.delay)
        return self._to_httpx(response)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        response = self.simulator.handle(self.cloud, self._to_sim(request, body))
        if response.delay > 0:
            await asyncio.sleep(response.delay)
        return self._to_httpx(response)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], simulator: Simulator, cloud: Cloud, site: str | None
    ) -> None:
        self.simulator = simulator
        self.cloud: Cloud = cloud
        self.site = site
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is normal here (latency faults); say so quietly.
        logger.debug("simulator connection error cloud=%s", self.cloud, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle on, a keep-alive client's delayed ACK holds
    # the body back ~40 ms per request (a stall no real endpoint has).
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        request = SimRequest.build(self.command, self.path, list(self.headers.items()), body)
        if self.server.site is not None:
            request = dataclasses.replace(request, site=self.server.site)
        response = self.server.simulator.handle(self.server.cloud, request)
        if response.delay > 0:
            time.sleep(response.delay)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry signed query strings (V1 signatures); keep them out of the logs.
        logger.debug("simulator http cloud=%s status=%s", self.server.cloud, args[1:2])


class SimulatorServer:
    """Serve one cloud of a :class:`Simulator` over real HTTP on a background thread."""

    def __init__(
        self,
        simulator: Simulator,
        cloud: Cloud,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        site: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``site`` makes a Sas listener one site's endpoint (as tds.<site>.aliyuncs.com is);
        ``ssl_context`` serves HTTPS (for clients that speak nothing else, e.g. the vendors'
        credential libraries talking to STS)."""
        simulator._service(cloud)
        self.simulator = simulator
        self.cloud: Cloud = cloud
        self.site = site
        self.ssl_context = ssl_context
        self._bind = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``host:port`` actually bound (after :meth:`start`)."""
        if self._server is None:
            return f"{self._bind[0]}:{self._bind[1]}"
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        """Bind and start serving in a daemon thread."""
        if self._server is not None:
            return
        self._server = _Server(self._bind, self.simulator, self.cloud, self.site)
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sim-{self.cloud}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` allowed); an empty host means 127.0.0.1."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def serve_forever(
    aliyun_address: str,
    tencent_address: str,
    *,
    seed: int = 1,
    images_per_region: int = 24,
    stop: threading.Event | None = None,
    started: Callable[[str, str], None] | None = None,
    aliyun_international_address: str | None = None,
) -> None:
    """Serve both simulated clouds until KeyboardInterrupt, SIGTERM or ``stop`` is set.

    ``started(aliyun_address, tencent_address)`` is called once both listen (port 0 binds a
    free port; this says which). The Sas listener at ``aliyun_address`` is the China site's
    endpoint unless a request names an international ``RegionId``; with
    ``aliyun_international_address`` a second listener is the international site's endpoint.
    """
    simulator = Simulator(seed=seed, images_per_region=images_per_region)
    servers = [
        SimulatorServer(simulator, "aliyun", *parse_address(aliyun_address)),
        SimulatorServer(simulator, "tencent", *parse_address(tencent_address)),
    ]
    if aliyun_international_address:
        servers.append(
            SimulatorServer(
                simulator,
                "aliyun",
                *parse_address(aliyun_international_address),
                site=ALIYUN_SITE_INTL,
            )
        )
    stop = stop if stop is not None else threading.Event()
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for server in servers:
            server.start()
        logger.info(
            "simulator serving aliyun=%s tencent=%s seed=%d images_per_region=%d "
            "aliyun_access_key_id=%s tencent_secret_id=%s",
            servers[0].address,
            servers[1].address,
            seed,
            images_per_region,
            DEMO_ALIYUN_ACCESS_KEY_ID,
            DEMO_TENCENT_SECRET_ID,
        )
        if started is not None:
            started(servers[0].address, servers[1].address)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logger.info("simulator stopped")


# -- faults that rewrite a successful answer ------------------------------------------------


def _field_holder(payload: dict[str, Any], name: str) -> dict[str, Any]:
    # Sas puts TotalCount in PageInfo for most actions and at the top for DescribeImageVulList.
    if name not in payload and isinstance(payload.get("PageInfo"), dict):
        page_info: dict[str, Any] = payload["PageInfo"]
        if name in page_info:
            return page_info
    return payload


def mutate_payload(payload: dict[str, Any], fired: Sequence[Fault], list_field: str | None) -> bool:
    """Apply the mutating faults to ``payload`` in place; True if the body must be truncated."""
    truncate = False
    for fault in fired:
        if fault.kind == "malformed_json":
            truncate = True
        elif fault.kind == "missing_list" and list_field:
            payload.pop(list_field, None)
        elif fault.kind == "wrong_type":
            _field_holder(payload, fault.field)[fault.field] = fault.value
        elif fault.kind == "total_count_drift":
            holder = _field_holder(payload, "TotalCount")
            if isinstance(holder.get("TotalCount"), int):
                holder["TotalCount"] += fault.delta
        elif fault.kind == "short_page" and list_field:
            items = payload.get(list_field)
            if isinstance(items, list):
                keep = len(items) // 2 if fault.keep is None else fault.keep
                payload[list_field] = items[:keep]
                page_info = payload.get("PageInfo")
                if isinstance(page_info, dict) and "Count" in page_info:
                    page_info["Count"] = len(payload[list_field])
    return truncate


def truncated(response: SimResponse) -> SimResponse:
    """Cut the body in half: JSON that no parser accepts."""
    response.body = response.body[: max(1, len(response.body) // 2)]
    return response
