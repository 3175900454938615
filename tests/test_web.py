"""HTTP endpoints over a real loopback socket: metrics (plain and gzip), health, landing, auth."""

from __future__ import annotations

import base64
import subprocess
import threading
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from exporter import web
from exporter.errors import ConfigError
from exporter.exposition import INFLATED_PIECE, ExpositionStore, Mapped, map_parts
from exporter.model import ImageKey, Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry
from exporter.web import (
    Limits,
    WebServer,
    load_web_config,
    parse_listen_address,
)
from tests.conftest import require_tool

KEY = SourceKey("aliyun", "prod", "cn-shanghai", "sas_images")
IMAGE = ImageKey("aliyun", "prod", "cn-hangzhou", "shop", "cart", "1.0", "u1")


def snapshot(attempted: bool = True, error: str | None = None) -> Snapshot:
    data = SourceData(samples=(Sample("imagesec_image_vulnerabilities", IMAGE, 7.0),))
    state = SourceState(
        key=KEY,
        interval=300,
        data=data,
        up=error is None,
        attempted=attempted,
        last_success=1_700_000_000.0,
        last_error=error,
    )
    return Snapshot({KEY: state})


@pytest.fixture
def store() -> ExpositionStore:
    telemetry = Telemetry()
    telemetry.declare(
        "imagesec_api_requests", ("aliyun", "prod", "cn-shanghai", "DescribeImageInstances")
    )
    return ExpositionStore(snapshot(attempted=False), telemetry)


def serve(store: ExpositionStore, **kwargs: object) -> Iterator[str]:
    server = WebServer(store, "127.0.0.1:0", **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield f"{server.scheme}://{server.address}"
    finally:
        server.close()


def stable(body: bytes) -> list[bytes]:
    """The exposition without process and GC metrics (CPU time moves between two scrapes)."""
    return [
        line
        for line in body.splitlines()
        if not any(name in line for name in (b"process_", b"python_gc_"))
    ]


@pytest.fixture
def base(store: ExpositionStore) -> Iterator[str]:
    yield from serve(store, telemetry_path="/metrics")


@pytest.fixture
def sendfiles(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each attempt to sendfile the shared part returned (True: sent by the kernel)."""
    seen: list[bool] = []
    real = web._sendfile

    async def spy(request: Any, part: Mapped) -> bool:
        seen.append(await real(request, part))
        return seen[-1]

    monkeypatch.setattr(web, "_sendfile", spy)
    return seen


def test_metrics_plain_and_gzip_are_the_same_exposition(
    store: ExpositionStore, base: str, sendfiles: list[bool]
) -> None:
    store.update(snapshot())
    plain = httpx.get(f"{base}/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "imagesec_image_vulnerabilities{" in plain.text
    assert "imagesec_api_requests_total{" in plain.text
    assert "(cached, refreshed every 300s)" in plain.text
    request = urllib.request.Request(f"{base}/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as raw:  # no transparent decoding
        assert raw.headers["Content-Encoding"] == "gzip"
        body = raw.read()
    decoder = zlib.decompressobj(31)
    assert stable(decoder.decompress(body)) == stable(plain.content)
    assert decoder.eof and decoder.unused_data == b""  # one complete gzip member, nothing after
    assert sendfiles == [True]  # the shared part went by sendfile, only the tail was written


def test_a_plain_scrape_is_inflated_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = web._take

    def spy(pieces: Iterator[bytes], n: int) -> bytes:
        threads.append(threading.current_thread().name)
        return real(pieces, n)

    monkeypatch.setattr(web, "_take", spy)
    images = [replace(IMAGE, tag=f"1.{n}", image_id=f"u{n}") for n in range(5000)]
    data = SourceData(
        samples=tuple(Sample("imagesec_image_vulnerabilities", i, 7.0) for i in images)
    )
    state = SourceState(key=KEY, interval=300, data=data, up=True, attempted=True)
    store = ExpositionStore(Snapshot({KEY: state}), Telemetry())
    text = b"".join(zlib.decompressobj(-15).decompress(p) for p in store.exposition.parts)
    assert len(text) > 4 * INFLATED_PIECE
    for base in serve(store, limits=Limits(inflate_batch=1)):  # one piece per hand-off
        plain = httpx.get(f"{base}/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.content.startswith(text) and b"imagesec_up{" in plain.content[len(text) :]
    # Every piece inflated in an inflate thread, one hand-off each, and one more for the end.
    assert len(threads) > 5 and all(name.startswith("inflate") for name in threads)


def test_promtool_finds_nothing_in_the_exposition(store: ExpositionStore, base: str) -> None:
    store.update(snapshot())
    text = httpx.get(f"{base}/metrics").content
    result = subprocess.run(
        [require_tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout + result.stderr == b"", result


def test_health_and_readiness(store: ExpositionStore, base: str) -> None:
    assert httpx.get(f"{base}/-/healthy").status_code == 200
    assert httpx.get(f"{base}/-/ready").status_code == 503
    store.update(snapshot())
    assert httpx.get(f"{base}/-/ready").status_code == 200
    assert httpx.get(f"{base}/nope").status_code == 404


def test_landing_page_shows_sources_and_escapes_errors(store: ExpositionStore, base: str) -> None:
    store.update(snapshot(error="<script>alert(1)</script> code=Throttling"))
    page = httpx.get(f"{base}/").text
    assert 'href="/metrics"' in page
    assert "sas_images" in page and "cn-shanghai" in page and "down" in page
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


def test_custom_telemetry_path(store: ExpositionStore) -> None:
    for base in serve(store, telemetry_path="/probe"):
        assert httpx.get(f"{base}/probe").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 404


def test_render_in_background_thread_serves_latest(store: ExpositionStore) -> None:
    store.start()
    try:
        updated = snapshot()
        state = replace(
            updated.sources[KEY],
            data=SourceData(samples=(Sample("imagesec_image_vulnerabilities", IMAGE, 9.0),)),
        )
        store.update(Snapshot({KEY: state}))
        for _ in range(200):
            if b"} 9.0" in store.scrape(accept_gzip=False):
                break
            import time

            time.sleep(0.01)
        assert b"} 9.0" in store.scrape(accept_gzip=False)
    finally:
        store.stop()


def write_web_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def test_basic_auth(store: ExpositionStore, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = load_web_config(write_web_config(tmp_path, f"basic_auth_users:\n  prom: '{hashed}'\n"))
    for base in serve(store, web_config=config):
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", auth=("prom", "wrong")).status_code == 401
        assert httpx.get(f"{base}/metrics", auth=("prom", "s3cret")).status_code == 200
        garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
        assert httpx.get(f"{base}/metrics", headers=garbage).status_code == 401


def test_tls(store: ExpositionStore, tmp_path: Path, sendfiles: list[bool]) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            require_tool("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = load_web_config(
        write_web_config(tmp_path, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    )
    for base in serve(store, web_config=config):
        assert base.startswith("https://")
        assert httpx.get(f"{base}/-/healthy", verify=False).status_code == 200
        # No sendfile through TLS: the shared part is written from its mapping instead.
        gz = httpx.get(f"{base}/metrics", verify=False, headers={"Accept-Encoding": "gzip"})
        plain = httpx.get(f"{base}/metrics", verify=False, headers={"Accept-Encoding": "identity"})
        assert gz.headers["content-encoding"] == "gzip" and stable(gz.content) == stable(
            plain.content
        )
        assert sendfiles == [False]


def test_bad_web_config_lists_every_problem(tmp_path: Path) -> None:
    text = "tls_server_config:\n  cert_file: /nope.crt\nbasic_auth_users:\n  u: plain\nextra: 1\n"
    with pytest.raises(ConfigError) as err:
        load_web_config(write_web_config(tmp_path, text))
    errors = sorted(d.error for d in err.value.details)
    assert errors == [
        "missing one of key or key_file",
        "not a bcrypt hash ($2a$/$2b$/$2y$, cost 04-31)",
        "unknown key (not part of the exporter-toolkit web config)",
    ], err.value.details


def test_listen_address_forms() -> None:
    assert parse_listen_address(":9879") == ("", 9879)
    assert parse_listen_address("127.0.0.1:1") == ("127.0.0.1", 1)
    assert parse_listen_address("[::1]:9879") == ("::1", 9879)
    with pytest.raises(ValueError):
        parse_listen_address("localhost")


def test_accept_failures_count_one_pause_per_burst_and_log_once_a_minute(
    store: ExpositionStore, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio reports one accept failure per waiting client; that is one pause, one line a minute."""
    import asyncio
    import errno

    from exporter.web import ACCEPT_FAILED

    now = [1000.0]
    telemetry = Telemetry()
    server = WebServer(store, "127.0.0.1:0", telemetry=telemetry, clock=lambda: now[0])
    failed = {"message": ACCEPT_FAILED, "exception": OSError(errno.EMFILE, "Too many open files")}
    other = {"message": "Task exception was never retrieved", "exception": ValueError("boom")}

    def paused() -> float:
        return telemetry.value("imagesec_http_rejected_requests", ("accept_paused",))

    async def bursts() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = []
        for advance in (0.0, 30.0, 30.0):  # a burst now, one 30 s later, one a minute later
            now[0] += advance
            for _ in range(500):
                server._loop_exception(loop, failed)
            await asyncio.sleep(0)  # the burst ends with the accept loop's callback
            seen.append(paused())
        server._loop_exception(loop, other)
        return seen

    with caplog.at_level("WARNING"):
        try:
            assert asyncio.run(bursts()) == [1.0, 2.0, 3.0]
        finally:
            server.close()
    lines = [r for r in caplog.records if r.getMessage().startswith("accepting connections paused")]
    assert [(r.err, r.pauses) for r in lines] == [  # type: ignore[attr-defined]
        ("Too many open files", 1),
        ("Too many open files", 2),
    ]
    assert any("Task exception was never retrieved" in r.getMessage() for r in caplog.records)


async def test_sendfile_to_a_closing_transport_is_a_hang_up_not_a_server_error() -> None:
    """The client left between the headers and the body: the same ConnectionError a write
    raises (a debug line), not asyncio's RuntimeError (an error with a traceback)."""

    class Closing:
        def is_closing(self) -> bool:
            return True

    class Request:
        transport = Closing()

    with pytest.raises(ConnectionResetError):
        await web._sendfile(Request(), map_parts([b"body"]))  # type: ignore[arg-type]
