"""The credential holder of one account: shared by all its sources, renewed ahead of expiry.

Rules:

- Temporary credentials are renewed once 70-80% of their lifetime has passed (the fraction is
  random per renewal, so many exporters started together do not renew together); renewal runs
  in the background while callers keep using the current credentials.
- One renewal at a time (single flight): concurrent callers share it.
- A provider whose inputs changed (a rotated key file) is re-read before the next request.
- A temporary key the cloud refuses (``TOKEN_REFUSED_CODES``) is renewed before the next
  request, whatever its expiry says.
- A failed renewal keeps the current credentials while they are valid; it is logged, counted in
  ``imagesec_credential_refresh_failures_total{provider,account,code}`` and retried with
  exponential backoff (10 s doubling to 5 min, never later than a quarter of the remaining
  lifetime). Once they have expired, :meth:`CredentialHolder.get` raises ``CredentialError``
  with code ``credentials_expired`` (``credentials_unavailable`` while none was ever fetched),
  so every source of the account goes down with that code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import httpx

from exporter.credentials.base import Credential, CredentialError, Fetch, Provider
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

RENEW_AFTER = (0.7, 0.8)  # fraction of the lifetime after which renewal starts
BACKOFF_FIRST, BACKOFF_MAX = 10.0, 300.0
EXPIRY_METRIC = "imagesec_credential_expiry_timestamp_seconds"
# Vendor codes saying a temporary key or its token is no longer accepted (revoked, expired by
# the cloud's clock, unknown): renewing can help, retrying the same key cannot.
TOKEN_REFUSED_CODES = frozenset(
    {
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.MismatchWithAccessKey",
        "InvalidSecurityToken.Malformed",
        "InvalidAccessKeyId.NotFound",
        "AuthFailure.TokenFailure",
        "AuthFailure.SecretIdNotFound",
    }
)
FAILURE_METRIC = "imagesec_credential_refresh_failures"


class CredentialHolder:
    """Current credentials of one (provider, account), fetched and renewed through ``provider``."""

    def __init__(
        self,
        provider: Provider,
        *,
        cloud: str,
        account: str,
        http: httpx.AsyncClient | None = None,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.cloud = cloud
        self.account = account
        self._http = http
        self._telemetry = telemetry
        self._clock = clock
        self._rng = rng or random.Random()
        self._current: Credential | None = None
        self._renew_at: float | None = None  # next renewal (or retry) time; None: not needed
        self._failures = 0
        self._last_error: CredentialError | None = None
        self._task: asyncio.Task[None] | None = None
        self._refused: str | None = None  # key id of temporary credentials the cloud refused
        self.renewals = 0  # successful fetches, for tests and the probe

    @property
    def kind(self) -> str:
        return self.provider.kind

    @property
    def current(self) -> Credential | None:
        """The credentials in use, if any (never logged: ``repr`` hides the secret)."""
        return self._current

    def bind(self, http: httpx.AsyncClient, telemetry: Telemetry | None = None) -> None:
        """Attach the HTTP client (and telemetry) used to fetch."""
        self._http = http
        if telemetry is not None:
            self._telemetry = telemetry

    def _due(self, now: float) -> bool:
        if self._failures and self._renew_at is not None and now < self._renew_at:
            return False  # backing off after a failure (a broken file is not re-read per call)
        if self._current is None or self._current.key_id == self._refused:
            return True
        if self.provider.changed():
            return True
        return self._renew_at is not None and now >= self._renew_at

    async def get(self) -> Credential:
        """Valid credentials: the current ones, renewed first when needed.

        Raises:
            CredentialError: none could be obtained, or the current ones expired and renewal
                keeps failing (code ``credentials_expired``).
        """
        now = self._clock()
        current = self._current
        if self._due(now):
            task = self._start()
            # Wait only when the current credentials cannot serve this request.
            if current is None or not self._usable(current, now) or self.provider.changed():
                await asyncio.shield(task)
        now = self._clock()
        current = self._current
        if current is None:
            last = self._last_error
            raise CredentialError(
                f"{self.cloud}/{self.account}: no {self.kind} credentials: "
                + (last.message if last else "none fetched yet"),
                code="credentials_unavailable",
                provider=self.cloud,
                request_id=last.request_id if last else "",
            )
        if not self._usable(current, now):
            reason = self._last_error.code if self._last_error else "renewal pending"
            raise CredentialError(
                f"{self.cloud}/{self.account}: {self.kind} credentials expired "
                f"(renewal failing: {reason})",
                code="credentials_expired",
                provider=self.cloud,
            )
        return current

    def _usable(self, creds: Credential, now: float) -> bool:
        return not _expired(creds, now) and creds.key_id != self._refused

    def refused(self, key_id: str, code: str) -> None:
        """The cloud refused ``key_id`` with ``code``: if that is the current temporary key and
        the code says its token is bad or gone, renew before the next request."""
        current = self._current
        if code not in TOKEN_REFUSED_CODES or current is None or current.expiration is None:
            return
        if current.key_id != key_id or self._refused == key_id:
            return  # a request signed with an older key, or already known
        self._refused = key_id
        log.warning(
            "credentials refused by the cloud",
            extra={"provider": self.cloud, "account": self.account, "code": code},
        )

    async def renewal(self) -> None:
        """Wait for the renewal in flight, if any (tests and the probe)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """Cancel a renewal in flight (shutdown)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._renew(), name=f"credentials {self.cloud}/{self.account}"
            )
        return self._task

    async def _renew(self) -> None:
        if self._http is None:
            raise RuntimeError("CredentialHolder.bind() was not called")
        started = self._clock()
        try:
            fresh = await self.provider.fetch(Fetch(self._http, self._clock))
        except CredentialError as err:
            self._failed(err, started)
            return
        except Exception as err:  # a bug in a provider must not kill the account for good
            log.exception(
                "credential provider crashed",
                extra={"provider": self.cloud, "account": self.account},
            )
            self._failed(
                CredentialError(f"internal error: {type(err).__name__}", code="internal"), started
            )
            return
        self._current = fresh
        self._failures = 0
        self._last_error = None
        self.renewals += 1
        if fresh.expiration is None:
            self._renew_at = None
        else:
            lifetime = max(0.0, fresh.expiration - started)
            # Never sooner than the first backoff: credentials that come back (nearly) expired
            # (a clock far off from the vendor's) must not turn every request into an STS call.
            wait = max(BACKOFF_FIRST, lifetime * self._rng.uniform(*RENEW_AFTER))
            self._renew_at = started + wait
            if self._telemetry is not None:
                self._telemetry.set_gauge(
                    EXPIRY_METRIC, (self.cloud, self.account), fresh.expiration
                )
        log.info(
            "credentials obtained",
            extra={
                "provider": self.cloud,
                "account": self.account,
                "kind": self.kind,
                "expiration": fresh.expiration,
            },
        )

    def _failed(self, err: CredentialError, now: float) -> None:
        self._failures += 1
        self._last_error = err
        backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
        current = self._current
        if current is not None and current.expiration is not None and current.expiration > now:
            backoff = min(backoff, max(1.0, (current.expiration - now) / 4))
        self._renew_at = now + backoff
        if self._telemetry is not None:
            self._telemetry.inc(FAILURE_METRIC, (self.cloud, self.account, err.code))
        log.warning(
            "credential refresh failed",
            extra={
                "provider": self.cloud,
                "account": self.account,
                "kind": self.kind,
                "code": err.code,
                "error": err.message,
                "request_id": err.request_id,
                "vendor_code": getattr(err, "vendor_code", ""),
                "attempt": self._failures,
                "wait": backoff,
                "valid": current is not None and not _expired(current, now),
            },
        )


def _expired(creds: Credential, now: float) -> bool:
    return creds.expiration is not None and now >= creds.expiration
