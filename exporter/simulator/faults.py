"""Declarative fault injection for the simulator: which requests misbehave, and how."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

Cloud = Literal["aliyun", "tencent"]

FaultKind = Literal[
    "throttle",
    "server_error",
    "html_error",
    "malformed_json",
    "missing_list",
    "wrong_type",
    "latency",
    "total_count_drift",
    "short_page",
    "auth_failure",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

# Faults answered instead of the action (the request never reaches the fleet).
REPLACING_KINDS = frozenset({"throttle", "server_error", "html_error", "auth_failure"})
# Faults that rewrite a successful action result.
MUTATING_KINDS = frozenset(
    {"malformed_json", "missing_list", "wrong_type", "total_count_drift", "short_page"}
)


@dataclass(slots=True)
class Fault:
    """One injected misbehaviour.

    Matching: ``cloud`` and ``action`` narrow the requests (None matches any). The first
    ``after`` matching requests pass untouched; then the fault fires on the next ``times``
    matching requests (None: no limit), each with ``probability`` (drawn from the plan's
    seeded RNG).

    Kinds and their knobs:

    - ``throttle``: Sas HTTP 400 ``Throttling.User`` (plus ``x-acs-retry-after: retry_after_ms``
      when set); TCSS ``RequestLimitExceeded`` in the HTTP 200 envelope.
    - ``server_error``: HTTP ``status`` (500 or 503) with the vendor's error body (Sas
      ``InternalError``/``ServiceUnavailable``; TCSS envelope ``InternalError``/
      ``ServiceUnavailable``). For TCSS, ``status=200`` gives the in-envelope variant.
    - ``html_error``: HTTP 502, ``text/html`` page, as a load balancer in front would send.
    - ``malformed_json``: HTTP 200, JSON content type, truncated body.
    - ``missing_list``: the action's list field is removed from a successful answer.
    - ``wrong_type``: ``field`` (default ``TotalCount``, wherever it sits) becomes ``value``
      (default ``"many"``).
    - ``latency``: the answer is delayed by ``delay_seconds`` (combines with other kinds).
    - ``total_count_drift``: the reported TotalCount is off by ``delta`` (default +5).
    - ``short_page``: only ``keep`` items (default: half, rounded down) of the page are returned;
      TotalCount is unchanged.
    - ``auth_failure``: the vendor's signature error (or ``code``): Sas HTTP 400
      ``SignatureDoesNotMatch``, TCSS ``AuthFailure.SignatureFailure``.
    """

    kind: FaultKind
    cloud: Cloud | None = None
    action: str | None = None
    times: int | None = 1
    after: int = 0
    probability: float = 1.0
    retry_after_ms: int | None = None
    status: int = 500
    delay_seconds: float = 0.0
    field: str = "TotalCount"
    value: Any = "many"
    delta: int = 5
    keep: int | None = None
    code: str | None = None
    _seen: int = dataclasses.field(default=0, repr=False, compare=False)
    _fired: int = dataclasses.field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.cloud is not None and self.cloud not in ("aliyun", "tencent"):
            raise ValueError(f"unknown cloud {self.cloud!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form (the control plane's ``POST /_sim/faults``)."""
        allowed = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form, with how often the fault has fired so far."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        out["fired"] = self._fired
        return out

    @property
    def exhausted(self) -> bool:
        """True once the fault has fired ``times`` times."""
        return self.times is not None and self._fired >= self.times

    def _matches(self, cloud: str, action: str) -> bool:
        return (self.cloud is None or self.cloud == cloud) and (
            self.action is None or self.action == action
        )


class FaultPlan:
    """An ordered, thread-safe list of faults with a seeded RNG for probabilistic ones."""

    def __init__(self, faults: Iterable[Fault] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults)
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> FaultPlan:
        """Append ``fault``; returns the plan so calls can be chained."""
        with self._lock:
            self._faults.append(fault)
        return self

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[Fault]:
        """Return the faults still in the plan (exhausted ones included)."""
        with self._lock:
            return list(self._faults)

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def draw(self, cloud: str, action: str) -> list[Fault]:
        """Return the faults firing on this request, updating their counters."""
        fired: list[Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault._matches(cloud, action):
                    continue
                fault._seen += 1
                if fault._seen <= fault.after:
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault._fired += 1
                fired.append(fault)
        return fired
