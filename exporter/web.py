"""HTTP: /metrics, the landing page, /-/healthy and /-/ready, with TLS and basic auth.

A scrape never calls a cloud API and never renders the per-image families: those are rendered
once per change by ``ExpositionStore`` (exporter/exposition.py), so a scrape writes shared
chunks plus a render (and compression) of the small self-metrics.
"""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter import __version__, landing
from exporter.errors import ConfigError, ConfigProblem
from exporter.exposition import ExpositionStore, body_length
from exporter.landing import LandingLinks

log = logging.getLogger(__name__)

# The classic text format: every name we emit is a legacy-valid Prometheus name.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The exporter-toolkit web config file: TLS and basic auth (bcrypt hashes)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    users: tuple[tuple[str, bytes], ...] = ()

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.cert_file is None or self.key_file is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def check(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        ok = False
        for name, hashed in self.users:
            match = hmac.compare_digest(name.encode(), user.encode())
            if match and bcrypt.checkpw(password.encode(), hashed):
                ok = True
        return ok


def load_web_config(path: Path) -> WebConfig:
    """Parse ``--web.config.file`` (tls_server_config, basic_auth_users)."""
    problems: list[ConfigProblem] = []
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError([ConfigProblem(str(path), f"cannot read web config: {err}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(str(path), "web config must be a YAML mapping")])
    for key in sorted(set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}):
        problems.append(ConfigProblem(f"{path}: {key}", "unknown key"))
    tls = data.get("tls_server_config") or {}
    cert = tls.get("cert_file") if isinstance(tls, dict) else None
    key = tls.get("key_file") if isinstance(tls, dict) else None
    if bool(cert) != bool(key):
        problems.append(
            ConfigProblem(f"{path}: tls_server_config", "set both cert_file and key_file")
        )
    for name in ("cert_file", "key_file"):
        value = tls.get(name) if isinstance(tls, dict) else None
        if value and not Path(value).is_file():
            problems.append(
                ConfigProblem(f"{path}: tls_server_config.{name}", f"no such file {value}")
            )
    users: list[tuple[str, bytes]] = []
    raw_users = data.get("basic_auth_users") or {}
    if not isinstance(raw_users, dict):
        problems.append(
            ConfigProblem(f"{path}: basic_auth_users", "must be a mapping user: bcrypt-hash")
        )
        raw_users = {}
    for user, hashed in raw_users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(ConfigProblem(f"{path}: basic_auth_users.{user}", "not a bcrypt hash"))
        else:
            users.append((str(user), hashed.encode()))
    if problems:
        raise ConfigError(problems)
    return WebConfig(Path(cert) if cert else None, Path(key) if key else None, tuple(users))


def make_handler(
    store: ExpositionStore,
    telemetry_path: str,
    web_config: WebConfig,
    links: LandingLinks | None = None,
) -> type[BaseHTTPRequestHandler]:
    links = replace(links or LandingLinks(), telemetry_path=telemetry_path)

    class Handler(BaseHTTPRequestHandler):
        server_version = f"imagesec-exporter/{__version__}"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

        def _send(
            self,
            status: int,
            body: bytes | Sequence[bytes],
            ctype: str,
            extra: dict[str, str] | None = None,
        ) -> None:
            parts = (body,) if isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(body_length(parts)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                for part in parts:  # shared immutable chunks, written without joining
                    self.wfile.write(part)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            if not web_config.check(self.headers.get("Authorization")):
                self._send(
                    401,
                    b"Unauthorized\n",
                    "text/plain; charset=utf-8",
                    {"WWW-Authenticate": 'Basic realm="imagesec-exporter"'},
                )
                return
            path = self.path.split("?", 1)[0]
            try:
                if path == telemetry_path:
                    accept_gzip = "gzip" in (self.headers.get("Accept-Encoding") or "")
                    body = store.scrape_parts(accept_gzip)
                    extra = {"Content-Encoding": "gzip"} if accept_gzip else {}
                    self._send(200, body, CONTENT_TYPE, extra)
                elif path == "/-/healthy":
                    self._send(200, b"Healthy\n", "text/plain; charset=utf-8")
                elif path == "/-/ready":
                    if store.snapshot.ready():
                        self._send(200, b"Ready\n", "text/plain; charset=utf-8")
                    else:
                        self._send(
                            503, b"Not ready: first refresh running\n", "text/plain; charset=utf-8"
                        )
                elif path == "/":
                    self._send(
                        200,
                        landing.render(store.snapshot, time.time(), links),
                        "text/html; charset=utf-8",
                    )
                else:
                    self._send(404, b"Not found\n", "text/plain; charset=utf-8")
            except Exception:
                log.exception("request failed path=%s", path)
                self._send(500, b"Internal error\n", "text/plain; charset=utf-8")

    return Handler


def parse_listen_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[::1]:PORT``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad listen address {address!r}: use HOST:PORT or :PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class WebServer:
    """A threaded HTTP server in a background thread."""

    def __init__(
        self,
        store: ExpositionStore,
        address: str,
        *,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
        links: LandingLinks | None = None,
    ) -> None:
        host, port = parse_listen_address(address)
        web_config = web_config or WebConfig()
        handler = make_handler(store, telemetry_path, web_config, links)
        server_class = ThreadingHTTPServer
        if ":" in host:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = V6
        self.httpd = server_class((host, port), handler)
        self.httpd.daemon_threads = True
        context = web_config.ssl_context()
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self.scheme = "https" if context else "http"

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
