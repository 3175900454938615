"""The background refresh loop: runs every source on its interval and swaps immutable snapshots.

A source that fails keeps its last good data (served with its age) and is marked down; the
others carry on. With ``max_age``, data older than that is dropped at the next failure and the
source is marked expired (``imagesec_source_expired``). Nothing a source raises escapes: unexpected exceptions are logged and counted
as ``internal`` so that a bug in one collector cannot stop the loop.

A per-image source (``ReportsProgress``) publishes what its pass has so far while it has no
complete data yet, so a long first pass shows images as they arrive. A pass that reaches the
timeout after it made progress is incomplete, not failed: its source stays up, its data says
how complete it is (``imagesec_source_pass_completeness_ratio``), and the next attempt starts
at once and resumes from the per-image cache.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

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


Partial = Callable[[], SourceData]
"""Builds the partial data of a pass under way (``completeness`` < 1), only if it is used."""


@runtime_checkable
class ReportsProgress(Protocol):
    """A source whose passes report partial data as they go."""

    on_progress: Callable[[Partial], None] | None


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
        max_age: float | None = None,
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
        self._max_age = max_age
        self._clock = clock
        self._monotonic = monotonic
        self.on_snapshot = on_snapshot
        self._states = {s.key: SourceState(key=s.key, interval=s.interval) for s in sources}
        self._attempted = {s.key: asyncio.Event() for s in sources}
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[SourceKey, asyncio.Task[None]] = {}
        self._partial: dict[SourceKey, Partial] = {}
        self.snapshot = Snapshot(dict(self._states))
        for source in sources:
            self.watch_progress(source)

    def watch_progress(self, source: Source) -> None:
        """Have ``source`` report its passes' progress here (every source it refreshes)."""
        if isinstance(source, ReportsProgress):
            source.on_progress = functools.partial(self._progress, source.key)

    def _progress(self, key: SourceKey, partial: Partial) -> None:
        """Partial data of a pass under way: published while no complete data exists."""
        previous = self._states.get(key)
        if previous is None:  # removed by reconfigure() while its pass ran
            return
        self._partial[key] = partial
        if previous.data is not None and previous.data.completeness >= 1.0:
            return  # the last complete pass is served until this one completes (not built)
        # Not "down" for being incomplete: only an error of an earlier attempt says so.
        up = previous.up or not previous.attempted
        self._publish(replace(previous, data=partial(), up=up))

    def _publish(self, state: SourceState) -> None:
        if state.key not in self._states:  # removed by reconfigure() while it refreshed
            return
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
        self._partial.pop(source.key, None)
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
            partial = self._partial.pop(source.key, None)
            if partial is not None:
                return self._incomplete(source, previous, partial(), started)
            code, message = "timeout", f"refresh took longer than {self._timeout:g}s"
        except Exception as err:  # a bug must not stop the loop or the other sources
            log.exception("refresh crashed", extra=source.key.log_fields())
            code, message = "internal", f"internal error: {type(err).__name__}"
        # The pass's last progress report holds everything it found: not kept past the pass.
        self._partial.pop(source.key, None)
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
            now = self._clock()
            state = replace(
                previous,
                up=False,
                attempted=True,
                last_attempt=now,
                duration=duration,
                last_error=message[:300],
            )
            if self._expired(previous, now):
                log.warning(
                    "dropped expired data",
                    extra={"source": str(source.key), "max_age": self._max_age},
                )
                state = replace(state, data=None, expired=True)
        else:
            log.info(
                "refresh ok",
                extra={
                    **source.key.log_fields(),
                    "images": len(data.images),
                    "duration": round(duration, 3),
                },
            )
            return self._succeeded(source, previous, data, duration, expired=False)
        self._publish(state)
        self._attempted[source.key].set()
        return state

    def _succeeded(
        self,
        source: Source,
        previous: SourceState,
        data: SourceData,
        duration: float,
        *,
        expired: bool,
    ) -> SourceState:
        """Publish ``data`` as the source's new good data (up, no error); data equal to the
        last good data is published as that data (one copy is held, not two)."""
        now = self._clock()
        state = replace(
            previous,
            data=data.settled(previous.data),
            up=True,
            attempted=True,
            last_attempt=now,
            last_success=now,
            duration=duration,
            last_error=None,
            expired=expired,
        )
        self._publish(state)
        self._attempted[source.key].set()
        return state

    def _incomplete(
        self, source: Source, previous: SourceState, partial: SourceData, started: float
    ) -> SourceState:
        """A pass stopped by the timeout after it made progress: up, and resumed next time.

        The last complete data, if any, is still served (with the new pass's completeness);
        otherwise what the pass got.
        """
        duration = self._monotonic() - started
        log.info(
            "refresh incomplete",
            extra={
                **source.key.log_fields(),
                "images": len(partial.images),
                "completeness": round(partial.completeness, 4),
                "duration": round(duration, 3),
            },
        )
        data = partial
        if previous.data is not None and previous.data.completeness >= 1.0:
            data = previous.data.with_completeness(partial.completeness)
        return self._succeeded(source, previous, data, duration, expired=previous.expired)

    def _expired(self, previous: SourceState, now: float) -> bool:
        """Whether ``previous``'s last good data is older than ``max_age`` (and so dropped)."""
        if self._max_age is None or previous.data is None or previous.last_success is None:
            return False
        return now - previous.last_success > self._max_age

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
            state = await self.refresh(source)
            if state.up and state.data is not None and state.data.completeness < 1.0:
                continue  # an incomplete pass resumes at once (its lookups are cached)
            await asyncio.sleep(max(0.0, source.interval - (self._monotonic() - started)))

    async def run(self) -> None:
        """Refresh every source on its own interval until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(asyncio.Event().wait(), name="keep running")  # sources may change
            for source in self.sources:
                self._start(source)

    def _start(self, source: Source) -> None:
        if self._group is not None:
            task = self._group.create_task(self._loop(source), name=f"refresh {source.key}")
            self._tasks[source.key] = task

    def reconfigure(self, sources: Sequence[Source], *, timeout: float | None = None) -> None:
        """Swap the sources while running (config reload).

        A source object passed again keeps its loop and state; a new key starts pending; a
        removed key stops and its series go; a replaced object under a kept key keeps the last
        good data and refreshes at once with its new settings.
        """
        keys = [s.key for s in sources]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate source keys")
        if timeout is not None:
            self._timeout = timeout
        current = {s.key: s for s in self.sources}
        self.sources = list(sources)
        for key in set(self._states) - set(keys):
            del self._states[key]
            self._attempted.pop(key, None)
            self._partial.pop(key, None)
            if (task := self._tasks.pop(key, None)) is not None:
                task.cancel()
        for source in sources:
            if current.get(source.key) is source:
                continue
            if (task := self._tasks.pop(source.key, None)) is not None:
                task.cancel()
            state = self._states.get(source.key)
            self._states[source.key] = (
                replace(state, interval=source.interval)
                if state is not None
                else SourceState(key=source.key, interval=source.interval)
            )
            self._attempted.setdefault(source.key, asyncio.Event())
            self.watch_progress(source)
            self._start(source)
        self.snapshot = Snapshot(dict(self._states))
        if self.on_snapshot is not None:
            self.on_snapshot(self.snapshot)
