"""Handing memory back after a refresh: glibc's free lists and the collector's old generation.

Measured at 50k images (bench/fleet_bench.py, README "Performance"):

- A walk frees tens of MB of small blocks that glibc keeps in its arenas: RSS 343 MB before
  ``malloc_trim(0)``, 251 MB after. ``ctypes`` releases the GIL for the call.
- Each full garbage collection traversed every long-lived record (ImageKey, ImageRef, rows)
  while holding the GIL: 100-170 ms per collection, several per walk, so ``/-/healthy`` p99 was
  about 100 ms. ``gc.freeze()`` after a refresh moves what is alive into the permanent
  generation, which collections skip; objects frozen there are still freed by reference
  counting, and every ``UNFREEZE_EVERY``-th call unfreezes instead, so cyclic garbage that was
  frozen is reclaimed by a later full collection (at most one long pause per that many calls).
- Freezing without collecting first froze garbage too: sources failing on hostile answers make
  reference cycles (exceptions and their tracebacks) on every refresh, and the hostile soak
  (bench/soak_hostile.py) grew to 621 MiB in 120 s and 1,482 MiB in 300 s (121 MiB without
  freezing). So each freeze follows a full collection, which traverses only what is not frozen
  yet (the objects made since the last swap), not the frozen long-lived records.
- Objects under 512 bytes come from Python's own allocator, in arenas of 1 MiB that go back
  to the system only when every object in them is freed (``malloc_trim`` cannot reach them).
  Idle at 50k images with every collector (``sys._debugmallocstats``): 84 MB of objects in
  147 arenas, 63 MB of them free but scattered. With no walk after the first pass, 99
  arenas: the walks every cycle had made every image's key and ref anew while long-lived
  objects took the slots between them. So the code keeps big transients out of small objects
  (a task per lookup, a list of every Sample, a string per image prefix) and makes none per
  unchanged image on a walk (inventories reuse the last walk's refs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Callable

UNFREEZE_EVERY = 32
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc malloc.h


def _libc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """A glibc function returning an int, or None where there is none (musl, macOS)."""
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """glibc's ``mallopt(M_MMAP_THRESHOLD, size)``: blocks of ``size`` bytes or more are mapped
    on their own and unmapped when freed. Left dynamic, glibc raises the threshold to the
    biggest block freed so far (up to 32 MiB), after which big transient buffers (chunks,
    line batches, columns being built) come from its heaps and leave holes there. Two 50k
    probes side by side (every collector, idle): 254 -> 246 MB, memory outside Python's arenas
    65 -> 54 MB. False where there is no ``mallopt`` or it refused."""
    mallopt = _libc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, size))


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``, or a no-op where there is none."""
    trim = _libc("malloc_trim", ctypes.c_size_t)
    return (lambda: None) if trim is None else (lambda: trim(0))


class Release:
    """Called after each swap of the exposition: collect, then freeze the collector's survivors
    (unfreeze every ``every``-th call instead), then trim the allocator."""

    def __init__(
        self,
        trim: Callable[[], object] | None = None,
        *,
        collect: Callable[[], object] = gc.collect,
        freeze: Callable[[], None] = gc.freeze,
        unfreeze: Callable[[], None] = gc.unfreeze,
        every: int = UNFREEZE_EVERY,
    ) -> None:
        self._trim = _malloc_trim() if trim is None else trim
        self._collect = collect
        self._freeze = freeze
        self._unfreeze = unfreeze
        self._every = every
        self._lock = threading.Lock()
        self.calls = 0

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            if self.calls % self._every == 0:
                self._unfreeze()
            else:
                self._collect()  # only garbage-free survivors go to the permanent generation
                self._freeze()
        self._trim()
