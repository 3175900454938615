"""Tencent Cloud API 3.0 request signing: TC3-HMAC-SHA256."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Generator

import httpx

_ALGORITHM = "TC3-HMAC-SHA256"
# The official SDK signs exactly these two headers; the docs allow more but nothing needs them.
_SIGNED_HEADERS = "content-type;host"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"

_AUTHORIZATION = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^\s,/]+)/(?P<date>\d{4}-\d{2}-\d{2})/"
    r"(?P<service>[^\s,/]+)/tc3_request,\s*"
    rf"SignedHeaders=(?P<signed>{_TOKEN}(?:;{_TOKEN})*),\s*"
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def canonical_request_tc3(
    method: str, canonical_query: str, content_type: str, host: str, payload: bytes
) -> str:
    """Assemble the TC3 CanonicalRequest, signing ``content-type`` and ``host``.

    Args:
        canonical_query: "" for POST; the URL query string exactly as sent for GET.
        content_type: the Content-Type header exactly as sent (a charset changes the signature).
    """
    # Tencent API 3.0 "Signature v3", step 1 "Concatenate the CanonicalRequest string":
    #   HTTPRequestMethod \n CanonicalURI ("/") \n CanonicalQueryString \n CanonicalHeaders \n
    #   SignedHeaders \n HashedRequestPayload (lower-case hex SHA-256 of the body; "" for GET).
    # CanonicalHeaders ends in "\n", hence the blank line before SignedHeaders.
    canonical_headers = f"content-type:{content_type}\nhost:{host}\n"
    return "\n".join(
        [method, "/", canonical_query, canonical_headers, _SIGNED_HEADERS, _sha256_hex(payload)]
    )


def _utc_date(timestamp: int) -> str:
    # Tencent "Signature v3", step 2: the date is the UTC date of X-TC-Timestamp; a local
    # timezone makes calls fail around midnight.
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")


def credential_scope(timestamp: int, service: str) -> str:
    """Return ``Date/service/tc3_request`` with the UTC date of ``timestamp``."""
    # Tencent "Signature v3", step 2 "CredentialScope".
    return f"{_utc_date(timestamp)}/{service}/tc3_request"


def string_to_sign_tc3(timestamp: int, service: str, canonical_request: str) -> str:
    """Build the TC3 StringToSign."""
    # Tencent "Signature v3", step 2 "Concatenate the string to sign":
    #   Algorithm \n RequestTimestamp \n CredentialScope \n HashedCanonicalRequest
    hashed = _sha256_hex(canonical_request.encode("utf-8"))
    return f"{_ALGORITHM}\n{timestamp}\n{credential_scope(timestamp, service)}\n{hashed}"


def signature_tc3(secret_key: str, timestamp: int, service: str, canonical_request: str) -> str:
    """Return the lower-case hex TC3 signature."""
    # Tencent "Signature v3", step 3 "Calculate the signature": derive
    #   SecretDate = HMAC("TC3" + SecretKey, Date); SecretService = HMAC(SecretDate, Service);
    #   SecretSigning = HMAC(SecretService, "tc3_request"); sign StringToSign with SecretSigning.
    k_date = _hmac_sha256(f"TC3{secret_key}".encode(), _utc_date(timestamp))
    k_service = _hmac_sha256(k_date, service)
    k_signing = _hmac_sha256(k_service, "tc3_request")
    string_to_sign = string_to_sign_tc3(timestamp, service, canonical_request)
    return hmac.new(k_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_tc3(secret_id: str, timestamp: int, service: str, signature: str) -> str:
    """Format the TC3 ``Authorization`` header value."""
    # Tencent "Signature v3", step 4: fields separated by ", " (comma AND space, unlike Alibaba).
    scope = credential_scope(timestamp, service)
    return (
        f"{_ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={_SIGNED_HEADERS}, Signature={signature}"
    )


def parse_authorization_tc3(value: str) -> tuple[str, str, str, list[str], str]:
    """Split a TC3 ``Authorization`` into (secret id, date, service, signed headers, signature).

    Raises:
        ValueError: the value is not a well-formed TC3-HMAC-SHA256 authorization.
    """
    match = _AUTHORIZATION.fullmatch(value.strip())
    if match is None:
        raise ValueError("malformed TC3-HMAC-SHA256 Authorization header")
    date = match["date"]
    datetime.date.fromisoformat(date)  # raises ValueError for e.g. 2024-02-30
    return match["id"], date, match["service"], match["signed"].split(";"), match["sig"]


def _query_and_payload(request: httpx.Request) -> tuple[str, bytes]:
    # Tencent "Signature v3", step 1: for POST the CanonicalQueryString is the fixed empty string
    # and the payload is the body; for GET it is the URL query string as sent (already
    # URL-encoded) and the payload is the empty string.
    if request.method == "POST":
        return "", request.content
    if request.method == "GET":
        return request.url.query.decode("ascii"), b""
    raise ValueError(f"TC3 signs only GET and POST requests, not {request.method}")


def utc_now_seconds() -> float:
    """Return the current Unix time in seconds; the production ``clock`` for :class:`TC3Auth`."""
    return time.time()


class TC3Auth(httpx.Auth):
    """Sign requests with TC3-HMAC-SHA256.

    The caller sets ``Content-Type``, ``X-TC-Action``, ``X-TC-Version`` (and ``X-TC-Region``
    where wanted); this adds ``X-TC-Timestamp``, the STS token and ``Authorization``.
    """

    requires_request_body = True

    def __init__(
        self,
        secret_id: str,
        secret_key: str,
        *,
        service: str = "tcss",
        token: str | None = None,
        clock: Callable[[], float],
    ) -> None:
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._service = service
        self._token = token
        self._clock = clock

    @property
    def key_id(self) -> str:
        """The SecretId this signer signs with (not a secret)."""
        return self._secret_id

    def __repr__(self) -> str:
        token = "'***'" if self._token is not None else "None"
        return (
            f"{type(self).__name__}(secret_id={self._secret_id!r}, secret_key='***', "
            f"service={self._service!r}, token={token})"
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = int(self._clock())
        request.headers["X-TC-Timestamp"] = str(timestamp)
        if self._token is not None:
            request.headers["X-TC-Token"] = self._token
        query, payload = _query_and_payload(request)
        canonical = canonical_request_tc3(
            request.method,
            query,
            request.headers.get("Content-Type", ""),
            request.headers["Host"],
            payload,
        )
        signature = signature_tc3(self._secret_key, timestamp, self._service, canonical)
        request.headers["Authorization"] = authorization_tc3(
            self._secret_id, timestamp, self._service, signature
        )
        yield request
