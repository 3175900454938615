"""Alibaba Cloud request signing: ACS3-HMAC-SHA256 ("V3") and HMAC-SHA1 query signing ("V1")."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from urllib.parse import quote

import httpx

_ALGORITHM_V3 = "ACS3-HMAC-SHA256"

# V3 "x-acs-content-sha256" of an empty body (Sas RPC calls: params in the query, no body).
EMPTY_SHA256: str = hashlib.sha256(b"").hexdigest()

# An RFC 7230 header-name token, as allowed inside SignedHeaders.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"

_AUTHORIZATION_V3 = re.compile(
    rf"ACS3-HMAC-SHA256 Credential=(?P<ak>[^\s,;=]+),\s*"
    rf"SignedHeaders=(?P<signed>{_TOKEN}(?:;{_TOKEN})*),\s*"
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


def percent_encode(value: str) -> str:
    """Percent-encode the UTF-8 bytes of ``value``, keeping only RFC 3986 unreserved characters."""
    # Alibaba "V3 signature" and "V2 (HMAC-SHA1) signature" docs, step "URI encoding": RFC 3986,
    # unreserved A-Z a-z 0-9 - _ . ~ kept; space -> %20 (never "+"), * -> %2A, / -> %2F, + -> %2B.
    return quote(value, safe="", encoding="utf-8")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Build the canonicalized query string shared by V3 (CanonicalQueryString) and V1."""
    # Alibaba V3 doc, "CanonicalQueryString": sort the parameters by name in ascending character
    # code order (code-point order == UTF-8 byte order), then URI-encode name and value and join
    # with "=" and "&". An empty value still yields "name=". Repeated names (which the Sas API
    # never uses) are ordered by value so the result does not depend on arrival order.
    ordered = sorted(params)
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in ordered)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _signed_header_names(signed: Sequence[str]) -> list[str]:
    # Alibaba V3 doc, "SignedHeaders": lower-case names, de-duplicated, sorted ascending.
    return sorted({name.lower() for name in signed})


def canonical_headers(headers: Mapping[str, str], signed: Sequence[str]) -> str:
    """Render ``lower(name):trim(value)\\n`` for each signed header, sorted by name."""
    # Alibaba V3 doc, "CanonicalHeaders": lower-case the name, trim leading and trailing spaces of
    # the value, sort by name, and end every entry (including the last) with "\n".
    lowered = _lower_headers(headers)
    lines = []
    for name in _signed_header_names(signed):
        if name not in lowered:
            raise ValueError(f"signed header {name!r} is not present on the request")
        lines.append(f"{name}:{lowered[name].strip()}\n")
    return "".join(lines)


def canonical_request_v3(
    method: str,
    path: str,
    params: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    content_sha256: str,
) -> str:
    """Assemble the V3 CanonicalRequest.

    Args:
        path: the request path as sent on the wire (already percent-encoded); "" means "/".
        headers: any mapping; names are matched case-insensitively.
    """
    # Alibaba V3 doc, "Step 1: construct a canonicalized request":
    #   HTTPRequestMethod \n CanonicalURI \n CanonicalQueryString \n CanonicalHeaders \n
    #   SignedHeaders \n HashedRequestPayload
    # CanonicalHeaders already ends in "\n", hence the blank line before SignedHeaders.
    return "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query(params),
            canonical_headers(headers, signed_headers),
            ";".join(_signed_header_names(signed_headers)),
            content_sha256,
        ]
    )


def _string_to_sign_v3(canonical_request: str) -> str:
    # Alibaba V3 doc, "Step 2: construct the string to sign":
    #   SignatureAlgorithm \n HashedCanonicalRequest (lower-case hex SHA-256).
    hashed = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{_ALGORITHM_V3}\n{hashed}"


def signature_v3(secret: str, canonical_request: str) -> str:
    """Return the lower-case hex HMAC-SHA256 V3 signature of ``canonical_request``."""
    # Alibaba V3 doc, "Step 3: calculate the signature": the key is the bare AccessKey secret
    # (unlike V1, no trailing "&"), the output lower-case hex.
    string_to_sign = _string_to_sign_v3(canonical_request)
    mac = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()


def authorization_v3(access_key_id: str, signed_headers: Sequence[str], signature: str) -> str:
    """Format the V3 ``Authorization`` header value."""
    # Alibaba V3 doc, "Step 4: add the signature to the request": comma-separated, no spaces.
    signed = ";".join(_signed_header_names(signed_headers))
    return (
        f"{_ALGORITHM_V3} Credential={access_key_id},SignedHeaders={signed},Signature={signature}"
    )


def parse_authorization_v3(value: str) -> tuple[str, list[str], str]:
    """Split a V3 ``Authorization`` value into (access key id, signed header names, signature).

    Raises:
        ValueError: the value is not a well-formed ACS3-HMAC-SHA256 authorization.
    """
    match = _AUTHORIZATION_V3.fullmatch(value.strip())
    if match is None:
        raise ValueError("malformed ACS3-HMAC-SHA256 Authorization header")
    return match["ak"], match["signed"].split(";"), match["sig"]


def string_to_sign_v1(method: str, params: Mapping[str, str]) -> str:
    """Build the V1 (HMAC-SHA1 query signature) StringToSign over every parameter but Signature."""
    # Alibaba "V2 signature for RPC APIs" doc (wire SignatureVersion=1.0):
    #   HTTPMethod & percentEncode("/") & percentEncode(CanonicalizedQueryString)
    # Every received parameter except Signature is signed, empty values included
    # (aliyunsdkcore sends and signs "SignatureType=").
    pairs = ((k, v) for k, v in params.items() if k != "Signature")
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(pairs))}"


def signature_v1(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Return the base64 HMAC-SHA1 V1 signature of ``params``."""
    # Alibaba V1 doc: HMAC-SHA1 keyed with AccessKeySecret + "&" (the "&" is mandatory), base64.
    string_to_sign = string_to_sign_v1(method, params)
    mac = hmac.new(f"{secret}&".encode(), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _acs_date(moment: datetime.datetime) -> str:
    # Alibaba V3 doc, "x-acs-date": UTC, ISO 8601 yyyy-MM-ddTHH:mm:ssZ.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("clock() must return a timezone-aware datetime")
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request_path(url: httpx.URL) -> str:
    # Alibaba V3 doc, "CanonicalURI": the URL-encoded path; "/" for RPC-style APIs.
    return url.raw_path.partition(b"?")[0].decode("ascii") or "/"


def utc_now() -> datetime.datetime:
    """Return the current time in UTC; the production ``clock`` for :class:`ACS3Auth`."""
    return datetime.datetime.now(datetime.UTC)


def default_nonce() -> str:
    """Return a fresh random nonce; the production ``nonce`` for :class:`ACS3Auth`."""
    return uuid.uuid4().hex


class ACS3Auth(httpx.Auth):
    """Sign requests with ACS3-HMAC-SHA256.

    The caller sets ``x-acs-action`` and ``x-acs-version`` (and any other ``x-acs-*`` header it
    wants signed); this adds the date, nonce, content hash and STS token, then signs ``host`` and
    every ``x-acs-*`` header present.
    """

    requires_request_body = True

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        security_token: str | None = None,
        *,
        clock: Callable[[], datetime.datetime],
        nonce: Callable[[], str],
    ) -> None:
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._security_token = security_token
        self._clock = clock
        self._nonce = nonce

    @property
    def key_id(self) -> str:
        """The AccessKey id this signer signs with (not a secret)."""
        return self._access_key_id

    def __repr__(self) -> str:
        token = "'***'" if self._security_token is not None else "None"
        return (
            f"{type(self).__name__}(access_key_id={self._access_key_id!r}, "
            f"access_key_secret='***', security_token={token})"
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        content_sha256 = hashlib.sha256(request.content).hexdigest()
        request.headers["x-acs-date"] = _acs_date(self._clock())
        request.headers["x-acs-signature-nonce"] = self._nonce()
        request.headers["x-acs-content-sha256"] = content_sha256
        if self._security_token is not None:
            request.headers["x-acs-security-token"] = self._security_token
        signed = ["host", *(n for n in request.headers if n.lower().startswith("x-acs-"))]
        canonical = canonical_request_v3(
            request.method,
            _request_path(request.url),
            request.url.params.multi_items(),
            request.headers,
            signed,
            content_sha256,
        )
        signature = signature_v3(self._access_key_secret, canonical)
        request.headers["Authorization"] = authorization_v3(self._access_key_id, signed, signature)
        yield request
