"""The HTTP server over real loopback sockets: TLS with real clients, bounds, timeouts, reload."""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter.exposition import Exposition, make_chunk
from exporter.telemetry import Telemetry
from exporter.web import Limits, WebServer, load_web_config
from exporter.webconfig import Authenticator, Verdict
from tests.conftest import require_tool
from tests.webtls import Pki, client_context, make_pki, make_store, running, wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def hashed(password: bytes) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()


def web_yml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def tls_yml(pki: Pki, extra: str = "") -> str:
    return (
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        + extra
    )


@contextlib.contextmanager
def serve(path: Path | None = None, **kwargs: object) -> Iterator[str]:
    config = load_web_config(path) if path is not None else None
    server = WebServer(
        kwargs.pop("store", None) or make_store(),  # type: ignore[arg-type]
        "127.0.0.1:0",
        web_config=config,
        web_config_file=path,
        **kwargs,  # type: ignore[arg-type]
    )
    with running(server) as base:
        yield base


# -- TLS ---------------------------------------------------------------------------------------


def test_mutual_tls_refuses_a_client_without_a_certificate_and_accepts_one_the_ca_signed(
    pki: Pki, tmp_path: Path
) -> None:
    extra = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
    with serve(web_yml(tmp_path, tls_yml(pki, extra))) as base:
        signed = client_context(pki, cert=(pki.client_cert, pki.client_key))
        assert httpx.get(f"{base}/metrics", verify=signed, timeout=5).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/metrics", verify=client_context(pki), timeout=5)
        stranger = client_context(pki, cert=(pki.stranger_cert, pki.stranger_key))
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/metrics", verify=stranger, timeout=5)


def test_verify_if_given_accepts_no_certificate_but_refuses_a_bad_one(
    pki: Pki, tmp_path: Path
) -> None:
    extra = f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.ca}\n"
    with serve(web_yml(tmp_path, tls_yml(pki, extra))) as base:
        assert httpx.get(f"{base}/-/healthy", verify=client_context(pki)).status_code == 200
        stranger = client_context(pki, cert=(pki.stranger_cert, pki.stranger_key))
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/-/healthy", verify=stranger, timeout=5)


def test_client_allowed_sans_answers_403_to_other_certificates(pki: Pki, tmp_path: Path) -> None:
    extra = (
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
        "  client_allowed_sans: [other.example]\n"
    )
    with serve(web_yml(tmp_path, tls_yml(pki, extra))) as base:
        signed = client_context(pki, cert=(pki.client_cert, pki.client_key))
        assert httpx.get(f"{base}/metrics", verify=signed).status_code == 403
    allowed = extra.replace("other.example", "prometheus.example")
    with serve(web_yml(tmp_path, tls_yml(pki, allowed))) as base:
        signed = client_context(pki, cert=(pki.client_cert, pki.client_key))
        assert httpx.get(f"{base}/metrics", verify=signed).status_code == 200


def test_tls12_is_refused_under_min_version_tls13(pki: Pki, tmp_path: Path) -> None:
    with serve(web_yml(tmp_path, tls_yml(pki, "  min_version: TLS13\n"))) as base:
        assert httpx.get(f"{base}/-/healthy", verify=client_context(pki)).status_code == 200
        old = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/-/healthy", verify=old, timeout=5)


def test_max_version_tls12_refuses_a_tls13_only_client(pki: Pki, tmp_path: Path) -> None:
    with serve(web_yml(tmp_path, tls_yml(pki, "  max_version: TLS12\n"))) as base:
        with httpx.Client(verify=client_context(pki)) as client:
            response = client.get(f"{base}/-/healthy")
            stream = response.extensions["network_stream"]
            assert stream.get_extra_info("ssl_object").version() == "TLSv1.2"
        modern = client_context(pki)
        modern.minimum_version = ssl.TLSVersion.TLSv1_3
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/-/healthy", verify=modern, timeout=5)


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"",
        capture_output=True,
        timeout=30,
    )


def test_cipher_suites_and_curve_preferences_are_enforced(pki: Pki, tmp_path: Path) -> None:
    extra = (
        "  max_version: TLS12\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
        "  curve_preferences: [CurveP384]\n"
    )
    with serve(web_yml(tmp_path, tls_yml(pki, extra))) as base:
        port = int(base.rsplit(":", 1)[1])
        ok = s_client(port, "-tls1_2")
        assert ok.returncode == 0 and b"ECDHE-ECDSA-AES256-GCM-SHA384" in ok.stdout
        assert b"secp384r1" in ok.stdout
        assert s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256").returncode
        assert s_client(port, "-tls1_2", "-groups", "P-256").returncode


def test_inline_cert_and_key_are_served(pki: Pki, tmp_path: Path) -> None:
    def block(path: Path) -> str:
        return "|\n" + "".join(f"    {line}\n" for line in path.read_text().splitlines())

    text = (
        f"tls_server_config:\n  cert: {block(pki.server_cert)}  key: {block(pki.server_key)}"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    with serve(web_yml(tmp_path, text)) as base:
        response = httpx.get(f"{base}/-/healthy", verify=client_context(pki))
        assert response.status_code == 200
        assert response.headers["x-frame-options"] == "deny"
        assert response.headers["server"] == "imagesec-exporter"


def test_idle_tcp_client_does_not_delay_an_https_scrape(pki: Pki, tmp_path: Path) -> None:
    path = web_yml(tmp_path, tls_yml(pki))
    limits = Limits(handshake_timeout=60, idle_timeout=60)
    with serve(path, limits=limits) as base:
        host, port = base.removeprefix("https://").rsplit(":", 1)
        idle = [socket.create_connection((host, int(port))) for _ in range(3)]
        try:
            # The handshake of the idle clients would take 60 s to time out; the scrape has 5.
            response = httpx.get(f"{base}/metrics", verify=client_context(pki), timeout=5)
            assert response.status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_a_stalled_handshake_is_closed_after_the_timeout(pki: Pki, tmp_path: Path) -> None:
    with serve(web_yml(tmp_path, tls_yml(pki)), limits=Limits(handshake_timeout=0.3)) as base:
        host, port = base.removeprefix("https://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            assert sock.recv(1) == b""  # closed by the server, not by our 10 s timeout


# -- bounds ------------------------------------------------------------------------------------


def test_a_thousand_idle_connections_do_not_stop_metrics() -> None:
    with serve() as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        idle = []
        try:
            for _ in range(1000):
                idle.append(socket.create_connection((host, int(port))))
            # half of them started a request and never finished the headers
            for sock in idle[::2]:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            response = httpx.get(f"{base}/metrics", timeout=10)
            assert response.status_code == 200
            assert "imagesec_image_vulnerabilities{" in response.text
        finally:
            for sock in idle:
                sock.close()


def test_connections_beyond_the_bound_evict_idle_ones_and_are_counted() -> None:
    telemetry = Telemetry()
    with serve(telemetry=telemetry, limits=Limits(max_connections=20)) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        idle = [socket.create_connection((host, int(port))) for _ in range(60)]
        try:
            response = httpx.get(f"{base}/metrics", timeout=10)
            assert response.status_code == 200
            assert wait_for(
                lambda: (
                    telemetry.value("imagesec_http_rejected_requests", ("max_connections",)) >= 40
                )
            )
            assert "imagesec_http_connections " in response.text
        finally:
            for sock in idle:
                sock.close()


def test_idle_connection_is_closed_after_the_idle_timeout() -> None:
    with serve(limits=Limits(idle_timeout=0.3)) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # headers never finished
            assert sock.recv(1) == b""


def test_first_request_headers_must_arrive_within_the_header_timeout() -> None:
    with serve(limits=Limits(header_timeout=0.3, idle_timeout=60)) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and no blank line
            assert sock.recv(1) == b""  # closed after 0.3 s, long before the idle timeout
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(12) == b"HTTP/1.1 200"


def test_scrapes_beyond_max_requests_get_503_and_a_stalled_reader_is_cut() -> None:
    telemetry = Telemetry()
    store = make_store(telemetry=telemetry)
    store.exposition = Exposition.assemble(
        [make_chunk(b"# filler\n" * 4_000_000)]
    )  # 36 MB: more than socket buffers
    limits = Limits(max_requests=1, write_timeout=1.0)
    with serve(store=store, telemetry=telemetry, limits=limits) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect((host, int(port)))
            stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
            assert wait_for(
                lambda: httpx.get(f"{base}/metrics", timeout=10).status_code == 503, deadline=5
            )
            assert telemetry.value("imagesec_http_rejected_requests", ("max_requests",)) >= 1
            assert wait_for(
                lambda: telemetry.value("imagesec_http_rejected_requests", ("write_timeout",)) == 1
            )
        response = httpx.get(f"{base}/metrics", timeout=30)
        assert response.status_code == 200 and len(response.content) > 36_000_000
        assert 'imagesec_http_rejected_requests_total{reason="write_timeout"} 1.0' in response.text


def test_a_client_hanging_up_mid_scrape_is_one_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = make_store()
    store.exposition = Exposition.assemble([make_chunk(b"# filler\n" * 2_000_000)])  # 18 MB
    caplog.set_level(logging.DEBUG)
    with serve(store=store) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(12) == b"HTTP/1.1 200"
                # RST instead of FIN, as a scraper that gives up at its timeout may send.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert wait_for(
            lambda: sum(r.getMessage() == "client hung up mid-scrape" for r in caplog.records) == 3
        )
        assert httpx.get(f"{base}/-/healthy").status_code == 200
    hung = [r for r in caplog.records if r.getMessage() == "client hung up mid-scrape"]
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in hung)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_http11_keep_alive_and_no_version_in_server_header() -> None:
    with serve() as base:
        with httpx.Client() as client:
            first = client.get(f"{base}/metrics")
            second = client.get(f"{base}/-/healthy")
        assert first.http_version == "HTTP/1.1" and second.status_code == 200
        assert first.headers["server"] == "imagesec-exporter"
        assert int(first.headers["content-length"]) == first.num_bytes_downloaded
        host, port = base.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")
            reply = sock.recv(4096)
        assert b"400" in reply.split(b"\r\n")[0]
        assert b"Python" not in reply and b"aiohttp" not in reply


def test_listen_on_ipv4_and_ipv6_with_port_only() -> None:
    server = WebServer(make_store(), ":0")
    port = int(server.address.rsplit(":", 1)[1])
    with running(server):
        assert httpx.get(f"http://127.0.0.1:{port}/-/healthy").status_code == 200
        assert httpx.get(f"http://[::1]:{port}/-/healthy").status_code == 200


def test_several_listen_addresses() -> None:
    server = WebServer(make_store(), ["127.0.0.1:0", "[::1]:0"])
    with running(server):
        for address in server.addresses:
            assert httpx.get(f"http://{address}/-/healthy").status_code == 200


def test_process_and_gc_metrics_on_the_same_endpoint() -> None:
    with serve() as base:
        text = httpx.get(f"{base}/metrics").text
        for name in ("process_resident_memory_bytes", "process_open_fds", "python_gc_objects"):
            assert f"\n{name}" in text
        promtool = require_tool("promtool")
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
        )
        assert result.returncode == 0, result.stderr


# -- auth --------------------------------------------------------------------------------------


def basic(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


def test_auth_caches_successes_and_checks_unknown_users_against_a_dummy_hash() -> None:
    auth = Authenticator({"prom": hashed(b"s3cret").encode()})
    assert auth.check(basic("prom", b"s3cret")) == Verdict.OK
    for _ in range(5):
        assert auth.check(basic("prom", b"s3cret")) == Verdict.OK
    assert auth.bcrypt_calls == 1  # cached by a hash of the header
    assert auth.check(basic("prom", b"wrong")) == Verdict.BAD
    assert auth.check(basic("nobody", b"s3cret")) == Verdict.BAD
    assert auth.bcrypt_calls == 3  # an unknown user costs a bcrypt too: no timing oracle
    assert auth.check(basic("prom", b"wrong")) == Verdict.BAD
    assert auth.bcrypt_calls == 4  # failures are not cached
    assert auth.check(basic("prom", b"x" * 73)) == Verdict.TOO_LONG
    assert auth.check("Basic !!!") == Verdict.BAD
    assert auth.check(None) == Verdict.MISSING


def test_over_long_password_gets_a_clear_401(tmp_path: Path) -> None:
    with serve(web_yml(tmp_path, f"basic_auth_users:\n  prom: '{hashed(b'pw')}'\n")) as base:
        response = httpx.get(f"{base}/metrics", auth=("prom", "p" * 80))
        assert response.status_code == 401
        assert "longer than 72 bytes" in response.text
        assert response.headers["www-authenticate"].startswith("Basic")


def test_probes_can_be_exempt_from_auth(tmp_path: Path) -> None:
    path = web_yml(tmp_path, f"basic_auth_users:\n  prom: '{hashed(b'pw')}'\n")
    with serve(path, probes_without_auth=True) as base:
        assert httpx.get(f"{base}/-/healthy").status_code == 200
        assert httpx.get(f"{base}/-/ready").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/").status_code == 401
    with serve(path) as base:
        assert httpx.get(f"{base}/-/healthy").status_code == 401


def test_rate_limit_answers_429(tmp_path: Path) -> None:
    path = web_yml(tmp_path, "rate_limit:\n  burst: 2\n  interval: 1h\n")
    with serve(path) as base:
        codes = [httpx.get(f"{base}/-/healthy").status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]


# -- live reload -------------------------------------------------------------------------------


def test_rotated_certificate_takes_effect_without_restart(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    path = web_yml(tmp_path, "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")

    def served_cn(base: str) -> str:
        with httpx.Client(verify=client_context(pki)) as client:
            response = client.get(f"{base}/-/healthy")
            peer = response.extensions["network_stream"].get_extra_info("ssl_object").getpeercert()
        return dict(x[0] for x in peer["subject"])["commonName"]

    with serve(path, watch_interval=0.05) as base:
        assert served_cn(base) == "localhost"
        with httpx.Client(verify=client_context(pki)) as kept:  # a connection open across it
            assert kept.get(f"{base}/metrics").status_code == 200
            key.write_bytes(pki.other_key.read_bytes())
            cert.write_bytes(pki.other_cert.read_bytes())
            assert wait_for(lambda: served_cn(base) == "rotated")
            assert kept.get(f"{base}/metrics").status_code == 200


def test_changed_password_takes_effect_and_a_broken_file_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    path = web_yml(tmp_path, f"basic_auth_users:\n  prom: '{hashed(b'old')}'\n")
    telemetry = Telemetry()
    server = WebServer(
        make_store(),
        "127.0.0.1:0",
        web_config=load_web_config(path),
        web_config_file=path,
        telemetry=telemetry,
        watch_interval=0.05,
    )
    with running(server) as base:
        assert httpx.get(f"{base}/metrics", auth=("prom", "old")).status_code == 200
        path.write_text(f"basic_auth_users:\n  prom: '{hashed(b'new')}'\n")
        assert wait_for(
            lambda: httpx.get(f"{base}/metrics", auth=("prom", "new")).status_code == 200
        )
        assert httpx.get(f"{base}/metrics", auth=("prom", "old")).status_code == 401
        path.write_text("basic_auth_users:\n  prom: plaintext\n")
        assert wait_for(lambda: server.reload_status.ok.get("web_config") is False)
        response = httpx.get(f"{base}/metrics", auth=("prom", "new"))
        assert response.status_code == 200  # the running config stays
        assert 'imagesec_config_last_reload_successful{file="web_config"} 0.0' in response.text


def test_reload_endpoint_needs_lifecycle_and_post() -> None:
    calls: list[int] = []

    async def reload() -> str | None:
        calls.append(1)
        return None if len(calls) == 1 else "accounts: bad"

    with serve() as base:
        assert httpx.post(f"{base}/-/reload").status_code == 403
    with serve(reload=reload) as base:
        assert httpx.get(f"{base}/-/reload").status_code == 405
        assert httpx.post(f"{base}/-/reload").status_code == 200
        failed = httpx.post(f"{base}/-/reload")
        assert failed.status_code == 500 and "accounts: bad" in failed.text
    assert len(calls) == 2


def test_bench_web_runs_a_short_bounded_case() -> None:
    """The benchmark script keeps working (its full run is in the README)."""
    import sys

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "bench_web.py"),
            *("--images", "20", "--clients", "30", "--scrapes", "5"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| http")]
    assert len(rows) == 6


def test_head_of_metrics_has_the_length_and_no_body() -> None:
    with serve() as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head
        assert rest.startswith(b"HTTP/1.1 200")  # no body after HEAD: the next response follows
        assert rest.endswith(b"Healthy\n")


async def test_a_web_config_rewritten_while_it_is_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter import web

    path = web_yml(tmp_path, f"basic_auth_users:\n  prom: '{hashed(b'old')}'\n")
    server = WebServer(
        make_store(), "127.0.0.1:0", web_config=load_web_config(path), web_config_file=path
    )
    path.write_text(f"basic_auth_users:\n  prom: '{hashed(b'new')}'\n")
    load = web.load_web_config

    def load_then_rewrite(file: Path) -> object:
        config = load(file)  # read 'new'; then the file changes before the reload ends
        path.write_text("basic_auth_users:\n  prom: plaintext\n  other: plaintext\n")
        return config

    monkeypatch.setattr(web, "load_web_config", load_then_rewrite)
    assert await server.reload_web_config(only_if_changed=True) is None
    assert server.reload_status.ok.get("web_config") is True
    monkeypatch.setattr(web, "load_web_config", load)
    # The next look sees the rewritten (broken) file: it was not taken as already read.
    assert await server.reload_web_config(only_if_changed=True) is not None
    assert server.reload_status.ok.get("web_config") is False
