"""exporter/memory.py: after each swap, freeze the survivors (unfreeze every n-th) and trim."""

from __future__ import annotations

from exporter.exposition import ExpositionStore
from exporter.memory import Release
from exporter.model import ImageKey, Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry


def test_release_freezes_and_unfreezes_every_nth_call_and_always_trims() -> None:
    calls: list[str] = []
    release = Release(
        lambda: calls.append("trim"),
        freeze=lambda: calls.append("freeze"),
        unfreeze=lambda: calls.append("unfreeze"),
        every=3,
    )
    for _ in range(6):
        release()
    assert calls == ["freeze", "trim", "freeze", "trim", "unfreeze", "trim"] * 2


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
