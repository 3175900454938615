"""The exporter-toolkit web config (``--web.config.file``): TLS, HTTP headers, rate limit, users.

Every key of prometheus/exporter-toolkit's format is either applied or refused with the reason
(README, "Web configuration"); nothing is silently ignored. Loading builds the ``ssl.SSLContext``
(so certificates and keys are read and checked) and checks every bcrypt hash, which is exactly
what ``--check-config`` runs. Relative paths are relative to the web config file, as in Go.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from exporter.config import Duration
from exporter.errors import ConfigError, ConfigProblem

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's crypto/tls names (tls.CipherSuites()) -> OpenSSL names. Like Go, the list applies to TLS
# 1.0-1.2 only; TLS 1.3 suites are not configurable in Go either.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

# exporter-toolkit's curve names -> OpenSSL group names.
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

# exporter-toolkit's allow-list of response headers (web/handler.go), with the values it allows.
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# A bcrypt hash: $2a$/$2b$/$2y$, a two-digit cost 04-31, 53 characters of salt and digest.
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$")

ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert: str | None = None
    key: SecretStr | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_ca: str | None = None
    client_ca_file: str | None = None
    client_auth_type: ClientAuth | None = None
    cipher_suites: list[str] | None = None
    curve_preferences: list[str] | None = None
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: list[str] | None = None

    @model_validator(mode="after")
    def _rules(self) -> TlsServerConfig:
        if self.cert and self.cert_file:
            raise ValueError("set cert or cert_file, not both")
        if self.key and self.key_file:
            raise ValueError("set key or key_file, not both")
        if not (self.cert or self.cert_file):
            raise ValueError("missing one of cert or cert_file")
        if not (self.key or self.key_file):
            raise ValueError("missing one of key or key_file")
        if self.client_ca and self.client_ca_file:
            raise ValueError("set client_ca or client_ca_file, not both")
        if self.client_auth_type in UNVERIFIED_CLIENT_AUTH:
            raise ValueError(
                f"client_auth_type {self.client_auth_type} is not supported: Python's ssl verifies "
                "every certificate a client sends and cannot accept unverified ones; use "
                "VerifyClientCertIfGiven or RequireAndVerifyClientCert with a client CA"
            )
        has_ca = bool(self.client_ca or self.client_ca_file)
        verifies = self.client_auth_type in (
            "VerifyClientCertIfGiven",
            "RequireAndVerifyClientCert",
        )
        if has_ca and not verifies:
            raise ValueError("client CA's have been configured without a Client Auth Policy")
        if verifies and not has_ca:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if self.client_allowed_sans is not None and not verifies:
            raise ValueError("client_allowed_sans needs a client_auth_type that verifies certs")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is above max_version")
        for name in self.cipher_suites or ():
            if name in TLS13_SUITES:
                raise ValueError(
                    f"cipher suite {name}: TLS 1.3 suites are not configurable (nor in Go)"
                )
            if name not in CIPHER_SUITES:
                raise ValueError(f"unknown or insecure cipher suite {name}")
        curves = self.curve_preferences or []
        for name in curves:
            if name not in CURVES:
                raise ValueError(f"unknown curve {name}")
        if len(curves) > 1:
            raise ValueError(
                "Python's ssl can restrict the key exchange (TLS 1.2 and 1.3) to one curve "
                f"only, not an ordered list: list one of {sorted(CURVES)}"
            )
        return self


class HttpServerConfig(_Strict):
    http2: bool = False
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _rules(self) -> HttpServerConfig:
        if self.http2:
            raise ValueError("http2 is not supported: the server speaks HTTP/1.1 (set false)")
        for name, value in self.headers.items():
            if name not in ALLOWED_HEADERS:
                raise ValueError(f"HTTP header {name!r} can not be configured")
            allowed = ALLOWED_HEADERS[name]
            if allowed and value not in allowed:
                raise ValueError(f"invalid value for {name}: expected one of {list(allowed)}")
        return self


class RateLimit(_Strict):
    burst: int = Field(ge=0)
    interval: Duration


BcryptHash = Annotated[str, Field(pattern=BCRYPT_HASH.pattern)]


class WebConfigFile(_Strict):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    rate_limit: RateLimit | None = None
    basic_auth_users: dict[str, BcryptHash] = {}


def _load_chain(context: ssl.SSLContext, cert: str, key: str, password: str | None = None) -> None:
    """``load_cert_chain`` from PEM text: Python's ssl reads files only, so write a private
    temporary directory (0700) and remove it at once."""
    with tempfile.TemporaryDirectory(prefix="imagesec-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, text in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
        context.load_cert_chain(cert_path, key_path, password)


def _resolve(base: Path, name: str | None) -> Path | None:
    if not name:
        return None
    path = Path(name)
    return path if path.is_absolute() else base / path


def build_ssl_context(tls: TlsServerConfig, base: Path) -> tuple[ssl.SSLContext, list[Path]]:
    """The server context for ``tls``, and the files it was built from (watched for changes)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.cipher_suites:
        context.set_ciphers(":".join(CIPHER_SUITES[name] for name in tls.cipher_suites))
    if tls.curve_preferences:
        context.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
    files: list[Path] = []
    cert_path, key_path = _resolve(base, tls.cert_file), _resolve(base, tls.key_file)
    cert = cert_path.read_text(encoding="utf-8") if cert_path else tls.cert or ""
    key = key_path.read_text(encoding="utf-8") if key_path else ""
    if tls.key is not None:
        key = tls.key.get_secret_value()
    files += [p for p in (cert_path, key_path) if p is not None]
    _load_chain(context, cert, key)
    ca_path = _resolve(base, tls.client_ca_file)
    if ca_path is not None:
        context.load_verify_locations(cafile=str(ca_path))
        files.append(ca_path)
    elif tls.client_ca:
        context.load_verify_locations(cadata=tls.client_ca)
    if tls.client_auth_type == "RequireAndVerifyClientCert":
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.client_auth_type == "VerifyClientCertIfGiven":
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context, files


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A loaded web config: the TLS context (None: plain HTTP), headers, users, rate limit."""

    ssl_context: ssl.SSLContext | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, bytes] = field(default_factory=dict)
    rate_limit: RateLimit | None = None
    client_allowed_sans: tuple[str, ...] | None = None
    files: tuple[Path, ...] = ()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


def _problems(err: ValidationError, path: Path) -> list[ConfigProblem]:
    out = []
    for e in err.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "string_pattern_mismatch":
            message = "not a bcrypt hash ($2a$/$2b$/$2y$, cost 04-31)"
        elif e["type"] == "model_type":
            message = "must be a mapping of settings"
        elif e["type"] == "extra_forbidden":
            message = "unknown key (not part of the exporter-toolkit web config)"
        out.append(ConfigProblem(f"{path}: {where}" if where else str(path), message))
    return out


def load_web_config(path: Path) -> WebConfig:
    """Parse, validate and load ``--web.config.file``; every problem is one ``ConfigProblem``."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError([ConfigProblem(str(path), f"cannot read web config: {err}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(str(path), "web config must be a YAML mapping")])
    try:
        parsed = WebConfigFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems(err, path)) from None
    context: ssl.SSLContext | None = None
    files = [path]
    tls = parsed.tls_server_config
    if tls is not None:
        try:
            context, tls_files = build_ssl_context(tls, path.parent)
        except (OSError, ssl.SSLError, ValueError) as err:
            message = getattr(err, "strerror", None) or str(err)
            raise ConfigError(
                [ConfigProblem(f"{path}: tls_server_config", f"cannot load: {message}")]
            ) from None
        files += tls_files
    users = {name: hashed.encode() for name, hashed in parsed.basic_auth_users.items()}
    return WebConfig(
        ssl_context=context,
        headers=dict(parsed.http_server_config.headers),
        users=users,
        rate_limit=parsed.rate_limit,
        client_allowed_sans=tuple(tls.client_allowed_sans)
        if tls is not None and tls.client_allowed_sans is not None
        else None,
        files=tuple(files),
    )


def fingerprint(files: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    """What changes when any of ``files`` is rewritten, replaced or removed (cheap: stat only)."""
    out = []
    for path in files:
        try:
            st = path.stat()
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


def sans_of(peercert: Mapping[str, Any] | None) -> set[str]:
    """The SAN values of a verified peer certificate as Go lists them (DNS, email, IP, URI)."""
    if not peercert:
        return set()
    return {str(value) for _kind, value in peercert.get("subjectAltName", ())}


MAX_PASSWORD_BYTES = 72  # bcrypt reads only the first 72 bytes; longer is refused, not truncated


class Verdict:
    OK = "ok"
    MISSING = "missing"
    BAD = "bad"
    TOO_LONG = "too_long"


class Authenticator:
    """Basic auth against bcrypt hashes: cheap when repeated, even when the user is unknown.

    A successful check is cached under a SHA-256 of the header (never the header itself), so a
    scraper costs one bcrypt per process and password; failures are never cached. An unknown
    user is checked against a dummy hash of the same cost, so timing does not reveal which users
    exist. ``check`` is blocking (bcrypt): run it in a worker thread.
    """

    def __init__(self, users: Mapping[str, bytes], *, cache_size: int = 1024) -> None:
        self._users = dict(users)
        cost = max((int(h[4:6]) for h in self._users.values()), default=4)
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))
        self._cache: dict[bytes, str] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()  # checks run in several worker threads
        self.bcrypt_calls = 0

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    @staticmethod
    def _key(header: str) -> bytes:
        return hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()

    def cached(self, header: str | None) -> bool:
        """True if ``header`` is a known-good credential (no bcrypt needed)."""
        return header is not None and self._key(header) in self._cache

    def check(self, header: str | None) -> str:
        """A ``Verdict`` for an ``Authorization`` header value."""
        if not header or not header.startswith("Basic "):
            return Verdict.MISSING
        key = self._key(header)
        if key in self._cache:
            return Verdict.OK
        try:
            decoded = base64.b64decode(header[6:], validate=True)
        except ValueError:
            return Verdict.BAD
        user_raw, sep, password = decoded.partition(b":")
        if not sep:
            return Verdict.BAD
        if len(password) > MAX_PASSWORD_BYTES:
            return Verdict.TOO_LONG
        user = user_raw.decode("utf-8", "replace")
        hashed = self._users.get(user)
        self.bcrypt_calls += 1
        ok = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        if not ok or hashed is None:
            return Verdict.BAD
        with self._lock:
            if len(self._cache) >= self._cache_size:  # drop the oldest entry
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[key] = user
        return Verdict.OK


class TokenBucket:
    """exporter-toolkit's ``rate_limit``: ``burst`` requests at once, one more per ``interval``."""

    def __init__(self, burst: int, interval: float, clock: Callable[[], float]) -> None:
        self._burst = float(burst)
        self._interval = interval
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
