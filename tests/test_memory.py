"""exporter/memory.py: after each swap, freeze the survivors (unfreeze every n-th) and trim."""

from __future__ import annotations

import subprocess
import sys

from exporter.exposition import ExpositionStore
from exporter.memory import Release
from exporter.model import ImageKey, Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry


def test_release_collects_freezes_and_unfreezes_every_nth_call_and_always_trims() -> None:
    calls: list[str] = []
    release = Release(
        lambda: calls.append("trim"),
        collect=lambda: calls.append("collect"),
        freeze=lambda: calls.append("freeze"),
        unfreeze=lambda: calls.append("unfreeze"),
        every=3,
    )
    for _ in range(6):
        release()
    once = ["collect", "freeze", "trim"]
    assert calls == [*once, *once, "unfreeze", "trim"] * 2


def test_the_store_releases_after_every_swap_also_unchanged_ones() -> None:
    key = SourceKey("aliyun", "prod", "cn-hangzhou", "sas_images")
    image = ImageKey("aliyun", "prod", "cn-hangzhou", "ns", "app", "1", "u1")
    data = SourceData([Sample("imagesec_image_vulnerabilities", image, 3.0)])
    snapshot = Snapshot({key: SourceState(key, 60.0, data, up=True, attempted=True)})
    released: list[int] = []
    store = ExpositionStore(snapshot, Telemetry(), release=lambda: released.append(1))
    assert len(released) == 1  # the first render
    store.update(snapshot)  # nothing changed: nothing renders, the walk's garbage still goes
    store.update(Snapshot({key: SourceState(key, 60.0, SourceData(), up=True, attempted=True)}))
    assert len(released) == 3


def test_release_never_freezes_garbage() -> None:
    """A reference cycle that is garbage at a swap is freed, not moved where no collection looks
    (failing sources make such cycles on every refresh: exceptions and their tracebacks)."""
    import gc
    import weakref

    class Node:
        pass

    def garbage() -> weakref.ref[Node]:
        node = Node()
        node.cycle = node  # type: ignore[attr-defined]
        return weakref.ref(node)

    gc.collect()
    ref = garbage()
    try:
        Release(lambda: None)()
        assert ref() is None
    finally:
        gc.unfreeze()


MAPPED_AFTER_A_BIG_FREE = """
import ctypes, sys
from exporter.memory import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
big = bytearray(8 << 20)
del big  # glibc's dynamic threshold rises to the size of a mapped block freed
before = libc.mallinfo2().hblkhd
block = bytearray(1 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


def test_a_fixed_mmap_threshold_keeps_big_blocks_out_of_the_heap_after_a_big_free() -> None:
    def mapped(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", MAPPED_AFTER_A_BIG_FREE, mode],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return int(run.stdout)

    assert mapped("dynamic") == 0  # from glibc's heap, where its free leaves a hole
    assert mapped("fixed") >= 1 << 20  # mapped on its own, unmapped when freed
