"""The background refresh loop: runs every source on its interval and swaps immutable snapshots.

A source that fails keeps its last good data (served with its age) and is marked down; the
others carry on. Nothing a source raises escapes: unexpected exceptions are logged and counted
as ``internal`` so that a bug in one collector cannot stop the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from exporter.errors import SourceError
from exporter.model import Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)


class Source(Protocol):
    """One collector bound to one (account, region)."""

    key: SourceKey
    interval: float
    depends_on: SourceKey | None

    async def refresh(self, upstream: SourceData | None) -> SourceData:
        """Fetch and return fresh data; raise ``SourceError`` on failure.

        ``upstream`` is the last good data of ``depends_on`` (e.g. the image inventory a
        per-image collector fans out over).
        """
        ...


class Refresher:
    """Owns the sources' state; publishes a new Snapshot after every refresh attempt.

    ``on_snapshot``, if set, is called with each new snapshot (the web layer re-renders then).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        telemetry: Telemetry,
        timeout: float = 120.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_snapshot: Callable[[Snapshot], None] | None = None,
    ) -> None:
        keys = [s.key for s in sources]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate source keys")
        self.sources = list(sources)
        self._telemetry = telemetry
        self._timeout = timeout
        self._clock = clock
        self._monotonic = monotonic
        self.on_snapshot = on_snapshot
        self._states = {s.key: SourceState(key=s.key, interval=s.interval) for s in sources}
        self._attempted = {s.key: asyncio.Event() for s in sources}
        self.snapshot = Snapshot(dict(self._states))

    def _publish(self, state: SourceState) -> None:
        self._states[state.key] = state
        self.snapshot = Snapshot(dict(self._states))
        if self.on_snapshot is not None:
            self.on_snapshot(self.snapshot)

    async def refresh(self, source: Source) -> SourceState:
        """Refresh one source once and publish the outcome."""
        previous = self._states[source.key]
        upstream: SourceData | None = None
        started = self._monotonic()
        code = request_id = ""
        try:
            if source.depends_on is not None:
                upstream = self._states[source.depends_on].data
                if upstream is None:
                    raise SourceError(
                        f"no data yet from {source.depends_on.source}",
                        provider=source.key.provider,
                        code="upstream_unavailable",
                    )
            async with asyncio.timeout(self._timeout):
                data = await source.refresh(upstream)
        except SourceError as err:
            code, message = err.code or type(err).__name__, str(err)
            request_id = err.request_id
        except TimeoutError:
            code, message = "timeout", f"refresh took longer than {self._timeout:g}s"
        except Exception as err:  # a bug must not stop the loop or the other sources
            log.exception("refresh crashed", extra=source.key.log_fields())
            code, message = "internal", f"internal error: {type(err).__name__}"
        duration = self._monotonic() - started
        if code:
            log.warning(
                "refresh failed",
                extra={
                    **source.key.log_fields(),
                    "code": code,
                    "error": message,
                    **({"request_id": request_id} if request_id else {}),
                    "duration": round(duration, 3),
                },
            )
            self._telemetry.inc("imagesec_refresh_failures", (*source.key.labels(), code))
            state = replace(
                previous,
                up=False,
                attempted=True,
                last_attempt=self._clock(),
                duration=duration,
                last_error=message[:300],
            )
        else:
            log.info(
                "refresh ok",
                extra={
                    **source.key.log_fields(),
                    "images": len(data.images),
                    "duration": round(duration, 3),
                },
            )
            now = self._clock()
            state = replace(
                previous,
                data=data,
                up=True,
                attempted=True,
                last_attempt=now,
                last_success=now,
                duration=duration,
                last_error=None,
            )
        self._publish(state)
        self._attempted[source.key].set()
        return state

    async def run_once(self) -> Snapshot:
        """Refresh every source once, upstream sources before the ones that build on them."""
        pending = list(self.sources)
        while pending:
            done = {s.key for s in self.sources} - {s.key for s in pending}
            wave = [s for s in pending if s.depends_on is None or s.depends_on in done]
            if not wave:  # a dependency that is not configured: run the rest anyway (they fail)
                wave = pending
            async with asyncio.TaskGroup() as group:
                for source in wave:
                    group.create_task(self.refresh(source))
            pending = [s for s in pending if s not in wave]
        return self.snapshot

    async def _loop(self, source: Source) -> None:
        if source.depends_on is not None and source.depends_on in self._attempted:
            await self._attempted[source.depends_on].wait()
        while True:
            started = self._monotonic()
            await self.refresh(source)
            await asyncio.sleep(max(0.0, source.interval - (self._monotonic() - started)))

    async def run(self) -> None:
        """Refresh every source on its own interval until cancelled."""
        async with asyncio.TaskGroup() as group:
            for source in self.sources:
                group.create_task(self._loop(source), name=f"refresh {source.key}")
