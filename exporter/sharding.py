"""Split the configured fleet across replicas: ``--shard I --total-shards N``.

kube-state-metrics' convention: every replica gets the same config and keeps only its units, so
N replicas together export exactly what one unsharded exporter would, each series once. A unit
is what shares an API quota, so that replicas never compete for one:

    Sas    (account, region)  quotas are per (regionId, API, account)
    TCSS   (account)          one quota per (account, API) for all regions

A unit belongs to shard ``sha256("provider/account/region") mod N`` (region ``*`` for TCSS):
stable across restarts, versions and config order. With ``--shard.auto`` the shard is the
ordinal of a StatefulSet pod, the number its name ends with (``POD_NAME``, else the host
name), e.g. ``imagesec-exporter-2`` is shard 2.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PROVIDER_UNITS = {"aliyun": "region", "tencent": "account"}
"""What one shard unit is per provider: the scope of the vendor's API quota."""

_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True, slots=True)
class Shard:
    """This replica: shard ``index`` of ``total`` (0-based)."""

    index: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError("--total-shards must be at least 1")
        if not 0 <= self.index < self.total:
            raise ValueError(f"--shard must be in 0..{self.total - 1}, not {self.index}")

    def owns(self, provider: str, account: str, region: str) -> bool:
        """Whether this replica refreshes ``region`` of ``account``."""
        if self.total == 1:
            return True
        if PROVIDER_UNITS.get(provider) == "account":
            region = "*"
        return unit_hash(provider, account, region) % self.total == self.index


def unit_hash(provider: str, account: str, region: str) -> int:
    """A stable hash of one unit (not Python's ``hash``, which changes per process)."""
    digest = hashlib.sha256(f"{provider}/{account}/{region}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ordinal(name: str) -> int:
    """The StatefulSet ordinal a pod name ends with (``imagesec-exporter-2`` -> 2)."""
    match = _ORDINAL.search(name.strip())
    if match is None:
        raise ValueError(f"cannot take a shard from {name!r}: no '-<ordinal>' suffix")
    return int(match.group(1))
