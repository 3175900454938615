"""Simulated identities: roles, OIDC providers, instance roles and the temporary keys issued.

The simulated STS and instance metadata issue keys here; the Sas and TCSS endpoints ask it for
the secret of a key they do not know as long-lived, which checks the token and the expiry on
the simulator's clock.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Cloud = Literal["aliyun", "tencent"]

# Fixed demo identities (public by design, accepted only by the simulator).
DEMO_ALIYUN_ROLE_ARN = "acs:ram::1234567890123456:role/imagesec-reader"
DEMO_ALIYUN_OIDC_PROVIDER_ARN = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-demo"
DEMO_TENCENT_ROLE_ARN = "qcs::cam::uin/100000000001:roleName/imagesec-reader"
DEMO_TENCENT_PROVIDER_ID = "tke-oidc-demo"
DEMO_INSTANCE_ROLE = "imagesec-node"
DEMO_OIDC_TOKEN = "imagesec-demo-oidc-token"  # accepted by both STS (tests add their own)
MAX_ISSUED = 10_000
MAX_SEEN = 1_000


class TemporaryKeyError(Exception):
    """A temporary key was refused: the vendor's code, message and (Alibaba) HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Issued:
    """One set of temporary credentials handed out."""

    cloud: Cloud
    key_id: str
    secret: str = field(repr=False)
    token: str = field(repr=False)
    expiration: float
    role: str


class IdentityStore:
    """Roles that may be assumed, accepted OIDC tokens, and every key issued (thread-safe).

    Args:
        clock: the simulator's clock (Unix seconds): issue times and expiry.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._serial = 0
        self.roles: dict[Cloud, set[str]] = {
            "aliyun": {DEMO_ALIYUN_ROLE_ARN},
            "tencent": {DEMO_TENCENT_ROLE_ARN},
        }
        self.oidc_providers: dict[Cloud, set[str]] = {
            "aliyun": {DEMO_ALIYUN_OIDC_PROVIDER_ARN},
            "tencent": {DEMO_TENCENT_PROVIDER_ID},
        }
        # Accepted OIDC tokens (exact strings: a trailing newline is a different token).
        self.oidc_tokens: set[str] = {DEMO_OIDC_TOKEN}
        self.instance_role: str | None = DEMO_INSTANCE_ROLE
        self.instance_duration = 6 * 3600
        self.imdsv1_disabled = False
        self.issued: dict[str, Issued] = {}
        self.oidc_seen: list[str] = []  # tokens presented, in order (tests check rotation)

    def reset(self) -> None:
        with self._lock:
            self.issued.clear()
            self.oidc_seen.clear()

    def issue(self, cloud: Cloud, role: str, duration: float) -> Issued:
        """New temporary credentials of ``role``, valid ``duration`` seconds from now."""
        with self._lock:
            self._serial += 1
            serial = self._serial
        seed = hashlib.sha256(f"{cloud}/{role}/{serial}".encode()).hexdigest()
        key_id = f"STS.NT{seed[:22]}" if cloud == "aliyun" else f"AKID{seed[:32]}"
        issued = Issued(
            cloud,
            key_id,
            secret=f"tmp{seed[22:52]}",
            token=f"sim-token-{seed[8:56]}",
            expiration=float(int(self.clock() + duration)),
            role=role,
        )
        with self._lock:
            if len(self.issued) >= MAX_ISSUED:  # bounded: forget keys expired an hour ago
                horizon = self.clock() - 3600
                self.issued = {k: v for k, v in self.issued.items() if v.expiration > horizon}
            self.issued[key_id] = issued
        return issued

    def saw_oidc_token(self, token: str) -> None:
        """Record a presented OIDC token (the last ``MAX_SEEN`` are kept)."""
        with self._lock:
            self.oidc_seen.append(token)
            del self.oidc_seen[:-MAX_SEEN]

    def secret(self, cloud: Cloud, key_id: str, token: str | None, now: float) -> str | None:
        """The secret of temporary key ``key_id`` if ``token`` matches and it has not expired;
        None if it was never issued.

        Raises:
            TemporaryKeyError: wrong or missing token, or expired.
        """
        issued = self.issued.get(key_id)
        if issued is None or issued.cloud != cloud:
            return None
        if cloud == "aliyun":
            if token is None or token != issued.token:
                raise TemporaryKeyError(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                )
            if now >= issued.expiration:
                raise TemporaryKeyError(
                    400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired."
                )
        else:
            if token is None or token != issued.token:
                raise TemporaryKeyError(
                    200, "AuthFailure.TokenFailure", "The token is invalid or does not match."
                )
            if now >= issued.expiration:
                raise TemporaryKeyError(200, "AuthFailure.TokenFailure", "The token has expired.")
        return issued.secret
