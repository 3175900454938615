"""The exporter's exception tree.

::

    ExporterError                      base; never escapes a refresh or a scrape
    ├── ConfigError                    bad configuration; carries one detail per problem
    └── SourceError                    a source could not be refreshed; carries provider/code/request_id
        ├── AuthError                  bad or expired credentials, bad signature, no permission (never retried)
        ├── ThrottledError             vendor flow control: Throttling*, RequestLimitExceeded* (retried)
        ├── UpstreamError              transport failures, timeouts, 5xx, other vendor error codes
        │   └── RequestError           the vendor rejected our parameters (4xx, never retried)
        └── PayloadError               the answer did not parse or did not match the documented shape

Providers map httpx exceptions and vendor codes onto this tree at their boundary; nothing above
``exporter/clouds/`` catches httpx exceptions. ``code`` is the vendor's error code where there is
one, otherwise one of a small fixed vocabulary (``timeout``, ``connect``, ``http_5xx``,
``http_4xx``, ``bad_payload``) so that it can be used as a metric label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after

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


class RequestError(UpstreamError):
    """The vendor rejected the request's parameters; retrying the same request cannot help."""

    retryable = False


class PayloadError(SourceError):
    """The response did not match the documented shape (bad JSON, missing or mistyped fields)."""

    def __init__(self, message: str, **kwargs: object) -> None:
        kwargs.setdefault("code", "bad_payload")
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
