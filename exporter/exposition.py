"""The exposition: per-source, per-family chunks rendered once per change, served without copying.

Cost proportional to change
    Each source's part is a set of chunks, one per metric family (the text format wants every
    sample of a family contiguous, so the body is emitted family by family: the family's HELP
    and TYPE, then its chunk of every source in source order). A snapshot swap renders only
    the sources whose data changed (``SourceData`` equality: a refresh that changed nothing
    renders nothing), plus a later source whose images overlap a changed one (see duplicates).

Duplicates
    An image's series of one family come from the first source, in source order, that has
    that family for that image: a later source's series of that family for the same image are
    dropped (two regions of one Sas site list the same images under the same labels).

Scrapes that do not copy
    Chunks are held raw-deflated only (about a tenth of the text), each compressed on its own
    and ended by a sync flush, so their concatenation is one deflate stream. A gzip scrape is
    the fixed gzip header, the shared chunks, the live self-metrics compressed as the final
    block, and the gzip trailer (CRC-32 combined from the chunks' CRCs): one gzip member, no
    byte of the per-image part copied or recompressed. A plain scrape inflates the chunks as the
    server writes them, 64 KiB of text at a time.

    Each assembly writes the gzip header and the chunks, end to end, into one sealed memfd
    (``Mapped``) and re-points every chunk at its bytes there, so the bytes are held once. The
    HTTP server hands that file to sendfile: the kernel sends the pages without copying them
    and without the GIL, where writing them from Python cost a copy into the socket and a GIL
    round trip per slice. Where no memfd can be made (descriptor limit, no memfd), the chunks
    stay in memory and are written as before.

Rendering does not stall
    Rendering runs in its own thread (or inline when the store is not started, as with
    ``--once``) in batches of lines; between batches the thread sleeps 0 s so the GIL goes
    to the event loop and the HTTP threads.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import io
import logging
import mmap
import os
import re
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.collector import HealthCollector, interval_help
from exporter.memory import Release
from exporter.metrics import CATALOGUE, IMAGE_LABELS, IMAGE_METRICS
from exporter.model import Family, ImageKey, Snapshot, SourceData, SourceKey
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

LEVEL = 6
"""zlib level of the per-image chunks (rendered once per change, sent on every scrape)."""
HEALTH_LEVEL = 1
"""zlib level of the self-metrics tail (compressed on every scrape, a few kB)."""
BATCH = 2000
"""Lines rendered between two yields of the GIL."""
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""RFC 1952 member header: deflate, no flags, no mtime, unknown OS."""
INFLATED_PIECE = 64 * 1024
"""Most text a plain scrape inflates at a time."""
DEFLATED_STEP = 16 * 1024
"""Deflated bytes fed to the inflater at a time."""
SHARED_TAIL_AGE = 1.0
"""Seconds a scrape overlapping another may reuse the self-metrics rendered for that one."""

RENDER_METRICS = (
    "imagesec_exposition_renders",
    "imagesec_exposition_render_seconds",
    "imagesec_exposition_render_failures",
)


# -- CRC-32 of a concatenation from the parts' CRCs (zlib's crc32_combine) ----------------------


def _gf2_times(matrix: Sequence[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: Sequence[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def _zero_operators() -> list[list[int]]:
    """Operator ``k`` maps the CRC of A to the CRC of A followed by 2**k zero bytes."""
    bit = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    op = _gf2_square(_gf2_square(_gf2_square(bit)))  # eight zero bits: one byte
    ops = [op]
    for _ in range(63):
        ops.append(_gf2_square(ops[-1]))
    return ops


_ZEROS = _zero_operators()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A + B from crc32(A), crc32(B) and len(B)."""
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(_ZEROS[k], crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2


# -- chunks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """Text of one part, held raw-deflated: ``deflated`` ends in a sync flush (byte aligned, not
    final), so chunks concatenate into one deflate stream; ``crc`` and ``size`` are of the text."""

    deflated: bytes | memoryview  # a view into the assembly's ``Mapped`` once assembled
    crc: int
    size: int
    lines: int = 0

    def text(self) -> bytes:
        return zlib.decompressobj(-15).decompress(self.deflated)


class _ChunkWriter:
    __slots__ = ("_compressor", "_crc", "_parts", "_size", "lines")

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._parts: list[bytes] = []
        self.lines = 0

    def write(self, text: bytes) -> None:
        self._crc = zlib.crc32(text, self._crc)
        self._size += len(text)
        self._parts.append(self._compressor.compress(text))

    def close(self) -> Chunk:
        self._parts.append(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        return Chunk(b"".join(self._parts), self._crc, self._size, self.lines)


def make_chunk(text: bytes) -> Chunk:
    writer = _ChunkWriter()
    writer.write(text)
    return writer.close()


def _escape(value: str) -> str:
    # Text format 0.0.4: label values escape backslash, double quote and line feed.
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _value(value: float) -> str:
    if -1e6 < value < 1e6:  # what floatToGoString gives too, faster
        return repr(value)
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
# generate_latest's munging from OpenMetrics: the name's suffix and the type it writes.
_NAME_SUFFIXES = {"counter": "_total", "info": "_info"}
_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


@functools.lru_cache(maxsize=1024)
def _sorted_legacy(name: str, labels: tuple[str, ...]) -> tuple[str, ...] | None:
    """The label names in the order the text format writes them, or None unless the metric and
    label names are all legacy names (a few dozen combinations: cached)."""
    if not all(_LEGACY_NAME.match(n) for n in (name, *labels)):
        return None
    return tuple(sorted(labels))


def render_text(metrics: Iterable[Metric]) -> bytes:
    """The text format of ``metrics``, byte for byte what prometheus_client's ``generate_latest``
    writes, for families whose metric and label names are legacy names (all of the exporter's
    and the process and GC collectors'), without its per-sample name validation and escaping:
    it took 4 ms of GIL for the 243 self-metric samples of every scrape. Other names: the
    library's own rendering."""
    metrics = list(metrics)
    out: list[str] = []
    for metric in metrics:
        base, kind = metric.name, metric.type
        name = base + _NAME_SUFFIXES.get(kind, "")
        kind = _TYPES.get(kind, kind)
        help_ = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        if _sorted_legacy(name, ()) is None:
            return generate_latest(_Fixed(metrics))
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        late: dict[str, list[str]] = {}
        for sample in metric.samples:
            labels = sample.labels
            keys = _sorted_legacy(sample.name, tuple(labels))
            if keys is None:
                return generate_latest(_Fixed(metrics))
            if keys:
                text = ",".join([f'{k}="{_escape(labels[k])}"' for k in keys])
                line = f"{sample.name}{{{text}}}"
            else:
                line = sample.name
            stamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
            line = f"{line} {_value(float(sample.value))}{stamp}\n"
            suffix = sample.name[len(base) :] if sample.name.startswith(base) else ""
            if suffix in _OM_SUFFIXES:
                late.setdefault(suffix, []).append(line)
            else:
                out.append(line)
        for suffix, lines in sorted(late.items()):
            out.append(f"# HELP {base}{suffix} {help_}\n# TYPE {base}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode()


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def image_prefix(image: ImageKey) -> str:
    """The identity labels of an image as the text format writes them."""
    return ",".join(
        f'{name}="{_escape(v)}"' for name, v in zip(IMAGE_LABELS, image.labels(), strict=True)
    )


class Prefixes:
    """The identity labels of a source's images as the text format writes them, by image
    index: one string and the offsets of its pieces, not a string per image. A list held 25k
    strings of about 250 bytes (per 25k images) for the whole render, while the refresh loop
    made long-lived records beside them: the mix that keeps Python's allocator from giving
    its arenas back (exporter/memory.py)."""

    __slots__ = ("_ends", "_text")

    def __init__(self, images: Iterable[ImageKey]) -> None:
        text, ends = io.StringIO(), array("I")
        for image in images:  # each prefix is copied in and freed at once
            text.write(image_prefix(image))
            ends.append(text.tell())
        self._text, self._ends = text.getvalue(), ends

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        return self._text[self._ends[index - 1] if index else 0 : self._ends[index]]


def render_family(
    name: str,
    family: Family,
    prefixes: Prefixes,
    extra_names: Sequence[str],
    dropped: frozenset[int],
    pause: Callable[[], None],
) -> Chunk:
    """The sample lines of one family of one source (no HELP/TYPE), rendered in batches."""
    extras = [
        "".join(f',{n}="{_escape(v)}"' for n, v in zip(extra_names, values, strict=True))
        for values in family.extras
    ]
    writer = _ChunkWriter()
    lines: list[str] = []
    last, prefix = -1, ""
    for image, extra, value in zip(family.image, family.extra, family.values, strict=True):
        if dropped and image in dropped:
            continue
        if image != last:  # an image's series are mostly together
            last, prefix = image, prefixes[image]
        lines.append(f"{name}{{{prefix}{extras[extra]}}} {_value(value)}\n")
        if len(lines) >= BATCH:
            writer.write("".join(lines).encode())
            writer.lines += len(lines)
            lines.clear()
            pause()
    if lines:
        writer.write("".join(lines).encode())
        writer.lines += len(lines)
    return writer.close()


class _Overlaps:
    """Whether two sources' data can hold the same series: a family in both, for an image in
    both. Sets of image keys are built only for sources that share a family, and only for one
    render (made per render, dropped with it: a held set per source cost about 85 bytes per
    image). Keyed by ``id``: the data compared are alive for the render."""

    def __init__(self) -> None:
        self._sets: dict[int, frozenset[ImageKey]] = {}

    def __call__(self, a: SourceData, b: SourceData) -> bool:
        if a.families.keys().isdisjoint(b.families.keys()):
            return False
        return not self._images(a).isdisjoint(self._images(b))

    def _images(self, data: SourceData) -> frozenset[ImageKey]:
        images = self._sets.get(id(data))
        if images is None:
            images = self._sets[id(data)] = frozenset(data.keys)
        return images


@dataclass(slots=True)
class _SourcePart:
    """The rendered part of one source: the data it was rendered from and a chunk per family."""

    data: SourceData
    interval: float
    chunks: dict[str, Chunk] = field(default_factory=dict)


# -- the assembled exposition ------------------------------------------------------------------


class MemFd:
    """An open memfd for sendfile (``fileno``, binary ``mode``); closed when dropped. Not an
    ``io.FileIO``: sendfile never moves a file position the scrapes would share, and a file
    freed with its mapping in a garbage cycle would warn."""

    __slots__ = ("_fd",)
    mode = "rb"

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class Mapped(mmap.mmap):
    """Bytes in a sealed (immutable) memfd, mapped read-only. It is a buffer like ``bytes``;
    ``file`` is the memfd, for sendfile. Alive as long as a view into it is: a scrape in
    flight keeps the assembly it started with."""

    file: MemFd


def map_parts(parts: Iterable[bytes | memoryview]) -> Mapped:
    """``parts`` end to end in a new sealed memfd, mapped read-only. OSError where that cannot
    be (out of descriptors or memory; no memfd outside Linux)."""
    if not hasattr(os, "memfd_create") or not hasattr(fcntl, "F_ADD_SEALS"):
        raise OSError(errno.ENOSYS, "no memfd on this platform")
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fd = os.memfd_create("imagesec-exposition", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    file = MemFd(fd)
    try:
        size = 0
        for part in parts:
            view = memoryview(part)
            while view:
                written = os.write(fd, view)
                view = view[written:]
                size += written
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        mapped = Mapped(fd, size, prot=mmap.PROT_READ)
    except BaseException:
        file.close()
        raise
    mapped.file = file
    return mapped


class Inflating(Iterable[bytes]):
    """The plain text of deflated parts, inflated as it is read, in pieces of at most
    ``INFLATED_PIECE`` bytes: a plain scrape holds one piece, never a whole part (one family of
    a big source is tens of MB of text), so concurrent plain scrapers cost a piece each."""

    def __init__(self, parts: Sequence[bytes | memoryview], tail: bytes, size: int) -> None:
        self._parts = parts
        self._tail = tail
        self.nbytes = size + len(tail)

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            inflater = zlib.decompressobj(-15)
            view = memoryview(part)
            # Fed a bounded slice at a time: the unconsumed input zlib hands back is a copy.
            for offset in range(0, len(view), DEFLATED_STEP):
                data: bytes | memoryview = view[offset : offset + DEFLATED_STEP]
                while data:
                    piece = inflater.decompress(data, INFLATED_PIECE)
                    if piece:
                        yield piece
                    data = inflater.unconsumed_tail
            if rest := inflater.flush():
                yield rest
        yield self._tail


@dataclass(frozen=True, slots=True)
class Exposition:
    """The per-image part of the body: deflated parts in order, with the text's CRC and size;
    ``mapped``, when there, holds the gzip header and the parts end to end."""

    parts: tuple[bytes | memoryview, ...] = ()
    crc: int = 0
    size: int = 0
    series: int = 0
    mapped: Mapped | None = None

    @classmethod
    def assemble(cls, chunks: Sequence[Chunk], mapped: Mapped | None = None) -> Exposition:
        crc, size, series = 0, 0, 0
        for chunk in chunks:
            crc = crc32_combine(crc, chunk.crc, chunk.size)
            size += chunk.size
            series += chunk.lines
        return cls(tuple(c.deflated for c in chunks if c.size), crc, size, series, mapped)

    def plain_parts(self, tail: bytes) -> Inflating:
        return Inflating(self.parts, tail, self.size)

    def gzip_end(self, tail: bytes) -> bytes:
        """``tail`` compressed as the final block, and the member's trailer."""
        compressor = zlib.compressobj(HEALTH_LEVEL, zlib.DEFLATED, -15)
        last = compressor.compress(tail) + compressor.flush()
        crc = crc32_combine(self.crc, zlib.crc32(tail), len(tail))
        return last + struct.pack("<II", crc, (self.size + len(tail)) & 0xFFFFFFFF)

    def gzip_parts(self, end: bytes) -> tuple[bytes | memoryview | Mapped, ...]:
        """One gzip member: the header, the parts, then ``end`` (see ``gzip_end``)."""
        if self.mapped is not None:
            return (self.mapped, end)
        return (GZIP_HEADER, *self.parts, end)


class _Live(Collector):
    """The self-metrics that move between snapshots (the per-source ones are cached per
    snapshot by the store)."""

    def __init__(self, inner: HealthCollector) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        return self._inner.collect_live()


class _Selected(Collector):
    """The families of ``inner`` that ``--metric-allowlist``/``--metric-denylist`` keep (of the
    catalogue's; others registered beside them, such as process metrics, pass)."""

    def __init__(self, inner: CollectorRegistry, families: frozenset[str]) -> None:
        self._inner = inner
        self._families = families

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return (
            m for m in self._inner.collect() if m.name in self._families or m.name not in CATALOGUE
        )


def body_length(parts: Iterable[bytes | memoryview | Mapped]) -> int:
    """Bytes in a body of parts (a plain body knows its size without inflating)."""
    return parts.nbytes if isinstance(parts, Inflating) else sum(len(p) for p in parts)


def _header(name: str, help_: str) -> bytes:
    help_ = help_.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {help_}\n# TYPE {name} gauge\n".encode()


class ExpositionStore:
    """Holds the rendered per-image part; re-renders the changed sources when told of a swap.

    Without :meth:`start`, :meth:`update` renders inline; after it, a render thread does,
    always taking the newest snapshot (swaps arriving during a render coalesce). After each
    swap (a refresh ended: its walk's transient memory is free), ``release`` hands the free
    memory back and freezes the survivors out of the garbage collector (exporter/memory.py).
    """

    def __init__(
        self,
        snapshot: Snapshot,
        telemetry: Telemetry,
        *,
        cpu_clock: Callable[[], float] = time.thread_time,
        pause: Callable[[], None] = lambda: time.sleep(0),
        families: frozenset[str] | None = None,
        release: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._clock = clock
        self._tail: tuple[float, bytes] | None = None
        self._gzip_end: tuple[bytes, tuple[int, int], bytes] | None = None
        self._release = Release() if release is None else release
        self._families = frozenset(CATALOGUE) if families is None else families
        self._telemetry = telemetry
        self._cpu_clock = cpu_clock
        self._pause = pause
        self.health = CollectorRegistry(auto_describe=False)
        self.health.register(_Live(HealthCollector(lambda: self._snapshot, telemetry)))
        self._selected = _Selected(self.health, self._families)
        self._sources_text: tuple[Snapshot, bytes] | None = None
        self._parts: dict[SourceKey, _SourcePart] = {}
        self._headers: dict[tuple[str, str], Chunk] = {}
        self._unmapped = False
        self.render_errors: dict[SourceKey, str] = {}
        self._pending: Snapshot | None = None
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._declare(snapshot)
        self.exposition = Exposition()
        self._render(snapshot)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _declare(self, snapshot: Snapshot) -> None:
        for key in snapshot.sources:
            for metric in RENDER_METRICS:
                self._telemetry.declare(metric, key.labels())

    # -- rendering ---------------------------------------------------------------------------

    def _render(self, snapshot: Snapshot) -> None:
        """Render the sources whose data changed since the last render, then reassemble.

        A source whose data is unchanged keeps its chunks, unless a source before it that
        changed has a family and an image in common with it (the duplicates it must drop may
        have changed).
        """
        self._declare(snapshot)
        overlap = _Overlaps()
        changed = [p.data for k, p in self._parts.items() if k not in snapshot.sources]
        reassemble = bool(changed)
        parts: dict[SourceKey, _SourcePart] = {}
        for key in sorted(snapshot.sources):
            state = snapshot.sources[key]
            old = self._parts.get(key)
            if state.data is None:
                if old is not None:
                    changed.append(old.data)
                    reassemble = True
                continue
            same = old is not None and old.data == state.data
            if old is not None and same and not any(overlap(old.data, d) for d in changed):
                if old.interval != state.interval:  # only the HELP text changes
                    old = _SourcePart(old.data, state.interval, old.chunks)
                    reassemble = True
                parts[key] = old
                continue
            if not same:
                changed.append(state.data)
                if old is not None:
                    changed.append(old.data)
            reassemble = True
            try:
                parts[key] = self._render_source(key, state.data, state.interval, parts, overlap)
                self.render_errors.pop(key, None)
            except Exception as err:  # drop only this source's part; loud, not fatal
                log.exception("render failed", extra={"source": str(key), "error": repr(err)})
                self._telemetry.inc("imagesec_exposition_render_failures", key.labels())
                self.render_errors[key] = f"render failed: {type(err).__name__}"
                if old is not None:
                    changed.append(old.data)
        self._parts = parts
        if reassemble:
            self.exposition = self._assemble()
        self._release()

    def _render_source(
        self,
        key: SourceKey,
        data: SourceData,
        interval: float,
        earlier: dict[SourceKey, _SourcePart],
        overlap: _Overlaps,
    ) -> _SourcePart:
        started = self._cpu_clock()
        overlapping = [p for p in earlier.values() if overlap(data, p.data)]
        index = {image: i for i, image in enumerate(data.keys)} if overlapping else {}
        prefixes = Prefixes(data.keys)
        part = _SourcePart(data, interval)
        for spec in IMAGE_METRICS:
            family = data.families.get(spec.name)
            if family is None or spec.name not in self._families:
                continue
            dropped: set[int] = set()
            for other in overlapping:
                theirs = other.data.families.get(spec.name)
                if theirs is not None:
                    dropped.update(
                        index[k]
                        for k in (other.data.keys[i] for i in set(theirs.image))
                        if k in index
                    )
            extra_names = spec.labels[len(IMAGE_LABELS) :]
            part.chunks[spec.name] = render_family(
                spec.name, family, prefixes, extra_names, frozenset(dropped), self._pause
            )
            self._pause()
        self._telemetry.inc("imagesec_exposition_renders", key.labels())
        self._telemetry.inc(
            "imagesec_exposition_render_seconds", key.labels(), self._cpu_clock() - started
        )
        return part

    def _assemble(self) -> Exposition:
        chunks: list[Chunk] = []
        for spec in IMAGE_METRICS:
            present = [p for p in self._parts.values() if p.chunks.get(spec.name)]
            present = [p for p in present if p.chunks[spec.name].size]
            if not present:
                continue
            help_ = interval_help(spec.help, {p.interval for p in present})
            header = self._headers.get((spec.name, help_))
            if header is None:
                header = self._headers[(spec.name, help_)] = make_chunk(_header(spec.name, help_))
            chunks.append(header)
            chunks.extend(p.chunks[spec.name] for p in present)
        chunks = [c for c in chunks if c.size]
        try:
            mapped = map_parts([GZIP_HEADER, *(c.deflated for c in chunks)])
        except OSError as err:  # serve from memory; the next assembly tries again
            if not self._unmapped:
                log.warning("exposition kept in memory: no memfd", extra={"error": str(err)})
            self._unmapped = True
            return Exposition.assemble(chunks)
        self._unmapped = False
        # Re-point every chunk kept for the next assembly at its bytes in the file, so they are
        # held once; a cached header this assembly did not use is dropped (it would pin an old
        # file). ``chunks`` keeps the old chunks alive while their ids are keys.
        view, offset, moved = memoryview(mapped), len(GZIP_HEADER), {}
        for chunk in chunks:
            end = offset + len(chunk.deflated)
            moved[id(chunk)] = Chunk(view[offset:end], chunk.crc, chunk.size, chunk.lines)
            offset = end
        for part in self._parts.values():
            for name, chunk in part.chunks.items():
                part.chunks[name] = moved.get(id(chunk), chunk)
        self._headers = {k: moved[id(c)] for k, c in self._headers.items() if id(c) in moved}
        return Exposition.assemble([moved[id(c)] for c in chunks], mapped)

    # -- snapshot swaps ------------------------------------------------------------------------

    def update(self, snapshot: Snapshot) -> None:
        """Take a new snapshot: health is live at once; changed sources re-render (inline, or
        in the render thread once started)."""
        self._snapshot = snapshot
        self._sources_text = None  # holds no old snapshot (its data) until the next scrape
        if self._thread is None:
            self._render(snapshot)
            return
        with self._wake:
            self._pending = snapshot
            self._wake.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                snapshot, self._pending = self._pending, None
            assert snapshot is not None
            try:
                self._render(snapshot)
            except Exception:  # keep serving the previous exposition
                log.exception("render failed")

    # -- scrapes -------------------------------------------------------------------------------

    def health_text(self, shared: bool = False) -> bytes:
        """The self-metrics: the per-source families rendered once per snapshot, the rest now.
        With ``shared`` (this scrape overlaps another still being written) the last render if
        it is under ``SHARED_TAIL_AGE`` old: overlapping scrapes see the same self-metrics, and
        eight concurrent scrapers cost one render."""
        now = self._clock()
        last = self._tail
        if shared and last is not None and 0 <= now - last[0] < SHARED_TAIL_AGE:
            return last[1]
        snapshot = self._snapshot
        sources = self._sources_text
        if sources is None or sources[0] is not snapshot:
            metrics = HealthCollector.collect_sources(snapshot)
            selected = render_text(m for m in metrics if m.name in self._families)
            sources = self._sources_text = (snapshot, selected)
        text = sources[1] + render_text(self._selected.collect())
        self._tail = (now, text)
        return text

    def scrape_parts(
        self, accept_gzip: bool, shared: bool = False
    ) -> tuple[bytes | memoryview | Mapped, ...] | Inflating:
        """The body of one scrape as immutable parts to write in order: the shared per-image
        chunks, then the live self-metrics (see ``health_text`` for ``shared``). With
        ``accept_gzip`` the parts form one gzip member (its shared part a ``Mapped`` file when
        one could be made); else they are the text, inflated as they are read."""
        exposition = self.exposition
        tail = self.health_text(shared)
        if not accept_gzip:
            return exposition.plain_parts(tail)
        # Scrapes sharing a tail share its compression too (the trailer depends on the
        # exposition's CRC and size, so those are in the key; no old exposition is held).
        cached = self._gzip_end
        if (
            cached is None
            or cached[0] is not tail
            or cached[1] != (exposition.crc, exposition.size)
        ):
            cached = self._gzip_end = (
                tail,
                (exposition.crc, exposition.size),
                exposition.gzip_end(tail),
            )
        return exposition.gzip_parts(cached[2])

    def scrape(self, accept_gzip: bool) -> bytes:
        """The body of one scrape in one piece (``--once`` and tests)."""
        return b"".join(self.scrape_parts(accept_gzip))
