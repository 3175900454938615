"""Test helpers for the HTTP server: certificates made at test time with openssl, a server."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from exporter.exposition import ExpositionStore
from exporter.model import ImageKey, Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry
from exporter.web import WebServer
from tests.conftest import require_tool

KEY = SourceKey("aliyun", "prod", "cn-shanghai", "sas_images")


def openssl(*args: str | Path) -> None:
    subprocess.run(
        [require_tool("openssl"), *map(str, args)], check=True, capture_output=True, timeout=60
    )


@dataclass(frozen=True)
class Pki:
    """A CA, two server certificates (for rotation) and a client certificate it signed."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    other_cert: Path
    other_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _leaf(dir: Path, name: str, ca: str, cn: str, san: str) -> tuple[Path, Path]:
    key, csr, cert = dir / f"{name}.key", dir / f"{name}.csr", dir / f"{name}.crt"
    ext = dir / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        f"/CN={cn}",
    )
    openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        dir / f"{ca}.crt",
        "-CAkey",
        dir / f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        cert,
    )
    return cert, key


def _ca(dir: Path, name: str) -> Path:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        dir / f"{name}.key",
        "-out",
        dir / f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
    )
    return dir / f"{name}.crt"


def make_pki(dir: Path) -> Pki:
    ca = _ca(dir, "ca")
    _ca(dir, "otherca")
    server = _leaf(dir, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
    other = _leaf(dir, "server2", "ca", "rotated", "DNS:localhost,IP:127.0.0.1")
    client = _leaf(dir, "client", "ca", "prometheus", "DNS:prometheus.example")
    stranger = _leaf(dir, "stranger", "otherca", "stranger", "DNS:stranger.example")
    return Pki(dir, ca, *server, *other, *client, *stranger)


def client_context(
    pki: Pki,
    *,
    cert: tuple[Path, Path] | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(*cert)
    if maximum is not None:
        context.maximum_version = maximum
    return context


def snapshot(value: float = 7.0, images: int = 1) -> Snapshot:
    samples = tuple(
        Sample(
            "imagesec_image_vulnerabilities",
            ImageKey("aliyun", "prod", "cn-hangzhou", "shop", f"repo{i}", "1.0", f"u{i}"),
            value,
        )
        for i in range(images)
    )
    state = SourceState(
        key=KEY,
        interval=300,
        data=SourceData(samples=samples),
        up=True,
        attempted=True,
        last_success=1_700_000_000.0,
    )
    return Snapshot({KEY: state})


def make_store(images: int = 1, telemetry: Telemetry | None = None) -> ExpositionStore:
    return ExpositionStore(snapshot(images=images), telemetry or Telemetry())


@contextlib.contextmanager
def running(server: WebServer) -> Iterator[str]:
    server.start()
    try:
        yield f"{server.scheme}://{server.address}"
    finally:
        server.close()


def wait_for(condition: Callable[[], bool], deadline: float = 10.0) -> bool:
    """Poll ``condition`` (short sleeps) until true or ``deadline`` seconds passed."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
