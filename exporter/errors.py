"""The exporter's exception tree.

::

    ExporterError                      base; never escapes a refresh or a scrape
    ├── ConfigError                    bad configuration; carries one detail per problem
    └── SourceError                    a source could not be refreshed; carries provider/code/request_id
        ├── AuthError                  bad or expired credentials, bad signature, no permission (never retried)
        ├── ThrottledError             vendor flow control: Throttling*, RequestLimitExceeded* (retried)
        ├── UpstreamError              transport failures, timeouts, 5xx, other vendor error codes
        │   └── RequestError           the vendor rejected our parameters (4xx, never retried)
        │   └── ResponseTooLarge       the answer exceeded the size cap (code response_too_large)
        └── PayloadError               the answer did not parse or did not match the documented shape

Providers map httpx exceptions and vendor codes onto this tree at their boundary; nothing above
``exporter/clouds/`` catches httpx exceptions. ``code`` is a metric label, so it comes from a bounded vocabulary (``CODES``): the vendor's
error code when it is one of that vendor's known codes, ``other`` when it is not (the raw code
stays in ``vendor_code`` for the logs), or one of the exporter's own codes (``timeout``,
``connect``, ``http_5xx``, ``http_4xx``, ``bad_payload``, ``response_too_large``...).

Text from the network (vendor messages) passes through ``clean_message`` before it is kept:
bounded in length, with anything that looks like a credential or a signature redacted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# -- the bounded error-code vocabulary (one table) ------------------------------------------

OWN_CODES: frozenset[str] = frozenset(
    {
        "timeout",  # a connect/read timeout, or the whole-request deadline (drips)
        "connect",  # the connection failed or broke (refused, reset, TLS, truncated body)
        "http_3xx",  # a redirect (never followed: it would leave the configured endpoint)
        "http_4xx",
        "http_5xx",
        "bad_payload",  # unparsable or undocumented answer
        "response_too_large",  # the answer exceeded http.max_response_bytes (after decompression)
        "upstream_unavailable",  # the collector this one builds on has no data yet
        "internal",  # a bug (the refresh loop's catch-all)
        "other",  # a vendor code outside the known set
        # credentials (exporter/credentials/base.py CREDENTIAL_ERROR_CODES, SOURCE_DOWN_CODES)
        "credentials_expired",
        "credentials_unavailable",
        "token_file",
        "rejected",
    }
)

VENDOR_CODES: dict[str, frozenset[str]] = {
    # Gateway codes (cloud-api-facts.md 1d) and the Sas codes per-API docs list.
    "aliyun": frozenset(
        {
            "Throttling",
            "Throttling.User",
            "Throttling.Api",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "SignatureNonceUsed",
            "InvalidTimeStamp.Expired",
            "InvalidTimeStamp.Format",
            "InvalidAccessKeyId",
            "InvalidAccessKeyId.NotFound",
            "InvalidAccessKeyId.Inactive",
            "InvalidAccessKeySecret",
            "InvalidSecurityToken.Expired",
            "InvalidSecurityToken.MismatchWithAccessKey",
            "InvalidSecurityToken.Malformed",
            "MissingParameter",
            "InvalidParameter",
            "InvalidAction.NotFound",
            "InvalidRegionId",
            "Forbidden",
            "Forbidden.RAM",
            "NoPermission",
            "InternalError",
            "InnerError",
            "ServerError",
            "ServiceUnavailable",
        }
    ),
    # API 3.0 common codes and the TCSS codes the exporter reacts to (cloud-api-facts.md 2d).
    "tencent": frozenset(
        {
            "AuthFailure",
            "AuthFailure.InvalidAuthorization",
            "AuthFailure.InvalidSecretId",
            "AuthFailure.MFAFailure",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.SignatureExpire",
            "AuthFailure.SignatureFailure",
            "AuthFailure.TokenFailure",
            "AuthFailure.UnauthorizedOperation",
            "ActionOffline",
            "DryRunOperation",
            "InvalidAction",
            "InvalidParameter",
            "InvalidParameterValue",
            "InvalidRequest",
            "MissingParameter",
            "UnknownParameter",
            "NoSuchProduct",
            "NoSuchVersion",
            "RequestSizeLimitExceeded",
            "ResponseSizeLimitExceeded",
            "IpInBlacklist",
            "IpNotInWhitelist",
            "UnauthorizedOperation",
            "OperationDenied",
            "FailedOperation",
            "InternalError",
            "LimitExceeded",
            "ResourceInUse",
            "ResourceInsufficient",
            "ResourceNotFound",
            "ResourceNotFound.DataNotFound",
            "ResourceUnavailable",
            "ServiceUnavailable",
            "UnsupportedOperation",
            "UnsupportedProtocol",
            "UnsupportedRegion",
            "RequestLimitExceeded",
            "RequestLimitExceeded.IPLimitExceeded",
            "RequestLimitExceeded.UinLimitExceeded",
            "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
            "InvalidParameterValue.DataNotFound",
            "InvalidParameterValue.DataRange",
            "InvalidParameterValue.LengthLimit",
            "InvalidParameter.InvalidFormat",
            "InvalidParameter.MissingParameter",
            "InvalidParameter.ParsingError",
            "FailedOperation.AgentOffline",
            "FailedOperation.AuthorizedNotEnough",
            "FailedOperation.ErrAlreadyScanning",
            "InternalError.ErrRoleNotExist",
            "InternalError.MainDBFail",
        }
    ),
}

CODES: frozenset[str] = OWN_CODES.union(*VENDOR_CODES.values())
"""Every value ``imagesec_api_request_errors_total{code}`` and ``imagesec_refresh_failures_total
{code}`` can take."""


def fold_code(provider: str, code: str) -> str:
    """``code`` if it is one of ``provider``'s known codes (or the exporter's own), else ``other``."""
    if code in OWN_CODES or code in VENDOR_CODES.get(provider, ()):
        return code
    return "other"


# -- untrusted text ------------------------------------------------------------------------

MAX_MESSAGE = 200
"""Characters of a vendor message that are kept (logs, landing page)."""

REDACTED = "<redacted>"

_SECRET_ASSIGNMENT = re.compile(
    r"(?i)((?:x-acs-|x-tc-)?(?:signature|security[-_]?token|session[-_]?token|token|"
    r"access[-_]?key[-_]?(?:id|secret)|secret[-_]?(?:id|key)|credential|authorization|"
    r"password)\"?\s*[=:]\s*\"?)(?:[A-Za-z0-9-]+ )?[^\s&,;\"']+"
)
# Key ids (Alibaba LTAI..., STS.NS..., Tencent AKID...) and any long token-like run: signatures,
# session tokens and digests are all long runs of base64/hex characters.
_SECRET_TOKEN = re.compile(
    r"\b(?:LTAI[A-Za-z0-9]{8,}|STS\.[A-Za-z0-9._-]{8,}|AKID[A-Za-z0-9]{8,})|[A-Za-z0-9+/=_-]{32,}"
)


def clean_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """A vendor message fit to log or show: credentials and signatures redacted, at most
    ``limit`` characters, no control characters or lone surrogates."""
    text = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
    text = _SECRET_TOKEN.sub(REDACTED, text)
    text = "".join(
        " " if ch < " " or ch == "\x7f" else ("\ufffd" if "\ud800" <= ch <= "\udfff" else ch)
        for ch in text
    )
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in the configuration: where it is and what is wrong.

    ``file`` and ``line`` (1-based), when known, print first, as compilers do: ``config.yml:12:``.
    """

    location: str
    error: str
    line: int | None = None
    file: str = ""

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.location, self.error) if p)
        if self.line is not None:
            return f"{self.file or 'line'}{':' if self.file else ' '}{self.line}: {where}"
        return where


class ConfigError(ExporterError):
    """The configuration is invalid; ``details`` lists every problem found, one per line."""

    def __init__(self, details: Sequence[ConfigProblem]) -> None:
        self.details = tuple(details)
        super().__init__("\n".join(str(d) for d in self.details))


class SourceError(ExporterError):
    """A refresh of one source failed. Leaf classes say whether retrying can help."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str = "",
        request_id: str = "",
        retry_after: float | None = None,
        vendor_code: str = "",
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.vendor_code = vendor_code or code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class AuthError(SourceError):
    """Credentials rejected, signature mismatch or permission denied."""


class ThrottledError(SourceError):
    """The vendor's flow control refused the request."""

    retryable = True


class UpstreamError(SourceError):
    """The request failed on the way or on the vendor's side (timeouts, 5xx, vendor codes)."""

    retryable = True


class ResponseTooLarge(UpstreamError):
    """The answer (after decompression) exceeded ``http.max_response_bytes``; not retried."""

    retryable = False

    def __init__(self, message: str, **kwargs: object) -> None:
        kwargs.setdefault("code", "response_too_large")
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class RequestError(UpstreamError):
    """The vendor rejected the request's parameters; retrying the same request cannot help."""

    retryable = False


class PayloadError(SourceError):
    """The response did not match the documented shape (bad JSON, missing or mistyped fields).

    Not retried by default (the same answer would come back); an answer that did not parse at
    all (truncated, cut off by a proxy) is created with ``retryable=True``, like a 5xx.
    """

    def __init__(self, message: str, **kwargs: object) -> None:
        kwargs.setdefault("code", "bad_payload")
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
