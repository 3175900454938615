"""What idle and slow clients cost a scrape: latency of /metrics with 0 or 1,000 such clients.

    python bench/bench_web.py [--images 2000] [--clients 1000] [--scrapes 100]

The exporter's HTTP server runs as in production (its own loop and thread, default limits),
over plain HTTP and over TLS (certificates made with openssl in a temporary directory). For each
case a keep-alive client scrapes /metrics (gzip, as Prometheus asks) ``--scrapes`` times and the
table shows median and p99 latency: with no other clients, with ``--clients`` idle TCP
connections (on the TLS port: handshakes never started), and with as many clients that sent half
a request's headers and stopped (slowloris). The crowd lives in the same process as the server
(sharing its GIL and garbage collector), which makes the figures pessimistic. Loopback only.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from exporter.exposition import ExpositionStore
from exporter.model import ImageKey, Sample, Snapshot, SourceData, SourceKey, SourceState
from exporter.telemetry import Telemetry
from exporter.web import WebServer
from exporter.webconfig import load_web_config


def snapshot(images: int) -> Snapshot:
    key = SourceKey("aliyun", "prod", "cn-shanghai", "sas_images")
    samples = tuple(
        Sample(
            name,
            ImageKey("aliyun", "prod", "cn-hangzhou", "shop", f"repo{i}", "1.0", f"u{i}"),
            float(i % 7),
        )
        for i in range(images)
        for name in ("imagesec_image_vulnerabilities", "imagesec_image_size_bytes")
    )
    state = SourceState(
        key=key, interval=300, data=SourceData(samples=samples), up=True, attempted=True
    )
    return Snapshot({key: state})


def certificates(directory: Path) -> Path:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    web = directory / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    return web


def idle(host: str, port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection((host, port)) for _ in range(count)]


def slow(host: str, port: int, count: int, tls: bool) -> list[socket.socket]:
    out: list[socket.socket] = []
    context = ssl._create_unverified_context() if tls else None
    for _ in range(count):
        sock = socket.create_connection((host, port))
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        out.append(sock)
    return out


def scrape_latencies(url: str, scrapes: int, verify: ssl.SSLContext | bool) -> list[float]:
    out = []
    with httpx.Client(verify=verify, headers={"Accept-Encoding": "gzip"}, timeout=30) as client:
        client.get(url).raise_for_status()  # connect once; keep-alive from here
        for _ in range(scrapes):
            started = time.perf_counter()
            response = client.get(url)
            response.raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=100)
    args = parser.parse_args()
    store = ExpositionStore(snapshot(args.images), Telemetry())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        web = certificates(Path(tmp))
        for scheme, path in (("http", None), ("https", web)):
            config = load_web_config(path) if path is not None else None
            server = WebServer(store, "127.0.0.1:0", web_config=config)
            server.start()
            try:
                host, port = server.address.rsplit(":", 1)
                url = f"{scheme}://{server.address}/metrics"
                verify: ssl.SSLContext | bool = False
                cases: list[tuple[str, Callable[[], list[socket.socket]]]] = [
                    ("none", list),
                    (f"{args.clients} idle", partial(idle, host, int(port), args.clients)),
                    (
                        f"{args.clients} slow headers",
                        partial(slow, host, int(port), args.clients, scheme == "https"),
                    ),
                ]
                for name, make in cases:
                    crowd = make()
                    try:
                        times = scrape_latencies(url, args.scrapes, verify)
                    finally:
                        for sock in crowd:
                            sock.close()
                    p99 = statistics.quantiles(times, n=100)[98]
                    rows.append((scheme, name, statistics.median(times), p99))
            finally:
                server.close()
    size = len(store.scrape(accept_gzip=True))
    print(f"images {args.images}, gzip body {size / 1e3:.0f} kB, {args.scrapes} scrapes per case")
    print("| scheme | other clients | median (ms) | p99 (ms) |\n|---|---|---:|---:|")
    for scheme, name, median, p99 in rows:
        print(f"| {scheme} | {name} | {median:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
