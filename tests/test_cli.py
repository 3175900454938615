"""The command-line contracts of DESIGN.md, over real processes and loopback sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from exporter import simulator
from exporter.config import COLLECTORS as CATALOGUE_COLLECTORS
from exporter.metrics import CATALOGUE
from tests.conftest import fleet_now


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "TENCENTCLOUD_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def names(exposition: str) -> set[str]:
    found = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            found.add(line.split("{", 1)[0].split(" ", 1)[0].removesuffix("_total"))
    return found


def test_once_demo_prints_both_clouds_and_exits_0() -> None:
    result = run("--once", "--demo")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert 'provider="aliyun"' in out and 'provider="tencent"' in out
    assert "imagesec_up{" in out and " 0.0\n" not in "".join(
        line + "\n" for line in out.splitlines() if line.startswith("imagesec_up{")
    )
    # One Sas endpoint per site: images of both sites, each once (no RegionId is sent).
    # region is the configured source region; the image's own is image_region on info only.
    sas = [line for line in out.splitlines() if line.startswith("imagesec_image_deployed{")]
    assert {re.search(r'[{,]region="([^"]+)"', line)[1] for line in sas} == {  # type: ignore[index]
        "cn-shanghai",
        "ap-southeast-1",
    }
    info = [line for line in out.splitlines() if line.startswith("imagesec_image_info{")]
    assert any('image_region="cn-' in line for line in info)
    assert any(
        'image_region="eu-central-1"' in line or 'image_region="us-east-1"' in line for line in info
    )
    assert len(sas) == len(set(sas)) == 2 * 24
    # Every metric of the catalogue is emitted by the demo, and nothing outside it (error
    # counters carry a code label, so they exist only once an error of that code happened; the
    # demo's keys are long-lived, so no credential expires).
    errors = {
        "imagesec_api_request_errors",
        "imagesec_refresh_failures",
        "imagesec_credential_refresh_failures",
        "imagesec_credential_expiry_timestamp_seconds",
    }
    served = {name for name in CATALOGUE if name.startswith(("imagesec_http_", "imagesec_config_"))}
    assert set(CATALOGUE) - errors - served <= names(out) <= set(CATALOGUE)


def test_once_exits_non_zero_when_a_source_fails_and_still_prints(tmp_path) -> None:
    config = tmp_path / "c.yml"
    port = free_port()  # nothing listens there: connection refused
    config.write_text(
        "accounts:\n"
        f"  - {{name: a, provider: aliyun, regions: [cn-shanghai], endpoint: 'http://127.0.0.1:{port}',\n"
        "      credentials: {access_key_id: LTAIkey, access_key_secret: real-secret-value}}\n"
        "refresh: {max_attempts: 1}\n"
    )
    result = run("--once", "--config.file", str(config))
    assert result.returncode == 1
    assert (
        'imagesec_up{account="a",provider="aliyun",region="cn-shanghai",source="sas_images"} 0.0'
        in result.stdout
    )
    assert 'code="connect"' in result.stdout
    assert "real-secret-value" not in result.stdout + result.stderr


def test_simulate_help_prints_the_demo_credentials() -> None:
    result = run("simulate", "--help")
    assert result.returncode == 0
    lines = set(result.stdout.splitlines())
    assert f"ALIBABA_CLOUD_ACCESS_KEY_ID={simulator.DEMO_ALIYUN_ACCESS_KEY_ID}" in lines
    assert f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={simulator.DEMO_ALIYUN_ACCESS_KEY_SECRET}" in lines
    assert f"TENCENTCLOUD_SECRET_ID={simulator.DEMO_TENCENT_SECRET_ID}" in lines
    assert f"TENCENTCLOUD_SECRET_KEY={simulator.DEMO_TENCENT_SECRET_KEY}" in lines
    from exporter.simulator import identity

    assert f"ALIBABA_CLOUD_ROLE_ARN={identity.DEMO_ALIYUN_ROLE_ARN}" in lines
    assert f"TKE_PROVIDER_ID={identity.DEMO_TENCENT_PROVIDER_ID}" in lines
    assert identity.DEMO_OIDC_TOKEN in result.stdout


def test_exporter_against_standalone_simulator_with_vendor_env(tmp_path) -> None:
    """`simulate` alone, then the exporter configured like a user would, credentials from env."""
    aliyun, tencent = free_port(), free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "simulate",
            "--aliyun.listen-address",
            f"127.0.0.1:{aliyun}",
            "--tencent.listen-address",
            f"127.0.0.1:{tencent}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", tencent), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        config = tmp_path / "c.yml"
        config.write_text(
            "accounts:\n"
            f"  - {{name: a, provider: aliyun, regions: [cn-shanghai], endpoint: 'http://127.0.0.1:{aliyun}'}}\n"
            f"  - {{name: t, provider: tencent, regions: [ap-guangzhou], endpoint: 'http://127.0.0.1:{tencent}'}}\n"
        )
        env = {
            **os.environ,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": simulator.DEMO_ALIYUN_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": simulator.DEMO_ALIYUN_ACCESS_KEY_SECRET,
            "TENCENTCLOUD_SECRET_ID": simulator.DEMO_TENCENT_SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": simulator.DEMO_TENCENT_SECRET_KEY,
        }
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "--once", "--config.file", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert 'account="a",provider="aliyun"' in result.stdout
        assert 'account="t",provider="tencent"' in result.stdout
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def has_images(text: str, provider: str) -> bool:
    return any(
        line.startswith("imagesec_image_info{") and f'provider="{provider}"' in line
        for line in text.splitlines()
    )


def test_demo_serves_both_clouds_within_15_seconds() -> None:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        text = ""
        while time.monotonic() - started < 15:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                if has_images(text, "aliyun") and has_images(text, "tencent"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert has_images(text, "aliyun") and has_images(text, "tencent")
        landing = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
        assert simulator.DEMO_ALIYUN_ACCESS_KEY_SECRET not in landing + text
        assert simulator.DEMO_TENCENT_SECRET_KEY not in landing + text
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0  # SIGTERM is a clean shutdown


def test_collector_flags_switch_collectors_and_refuse_a_missing_upstream() -> None:
    off = [f"--no-collector.{name}" for name in CATALOGUE_COLLECTORS if name != "tcss_images"]
    result = run("--once", "--demo", *off)
    assert result.returncode == 0, result.stderr[-2000:]
    sources = {
        line.split('source="')[1].split('"')[0]
        for line in result.stdout.splitlines()
        if line.startswith("imagesec_up{")
    }
    assert sources == {"tcss_images"}
    result = run("--once", "--demo", "--no-collector.tcss_images")
    assert result.returncode == 2
    assert "collector tcss_image_detail needs tcss_images, which is disabled" in result.stderr
    assert result.stdout == ""


def test_bad_or_busy_listen_address_is_a_clear_error() -> None:
    result = run("--demo", "--web.listen-address", "nowhere")
    assert result.returncode == 2
    assert "config error: --web.listen-address: bad listen address 'nowhere'" in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--demo", "--web.listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_metric_allowlist_and_denylist_select_families_and_refuse_typos() -> None:
    result = run(
        "--once", "--demo", "--metric-allowlist", "imagesec_image_vulnerabilities,imagesec_up"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert names(result.stdout) == {"imagesec_image_vulnerabilities", "imagesec_up"}
    result = run("--once", "--demo", "--metric-denylist", "imagesec_image_.*,imagesec_api_.*")
    assert result.returncode == 0, result.stderr[-2000:]
    found = names(result.stdout)
    assert "imagesec_up" in found and "imagesec_build_info" in found
    assert not any(n.startswith(("imagesec_image_", "imagesec_api_")) for n in found)
    for args, message in (
        (("--metric-allowlist", "imagesec_image_vulnerabilties"), "matches no metric"),
        (("--metric-denylist", "imagesec_(up"), "bad metric pattern"),
        (("--metric-allowlist", "imagesec_up", "--metric-denylist", "x"), "mutually exclusive"),
    ):
        result = run("--check-config", "--demo", *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample of ``name`` whose labels include ``labels``, else None."""
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_sighup_and_reload_endpoint_reload_the_config_and_keep_the_others_data(tmp_path) -> None:
    from exporter.simulator import Simulator, SimulatorServer

    with SimulatorServer(Simulator(fleet_clock=fleet_now), "tencent") as tcss:

        def account(name: str) -> str:
            return (
                f"  - {{name: {name}, provider: tencent, regions: [ap-guangzhou], "
                f"endpoint: 'http://{tcss.address}'}}\n"
            )

        config = tmp_path / "c.yml"
        config.write_text("accounts:\n" + account("t"))
        port = free_port()
        env = {
            **os.environ,
            "TENCENTCLOUD_SECRET_ID": simulator.DEMO_TENCENT_SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": simulator.DEMO_TENCENT_SECRET_KEY,
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> str:
            try:
                return httpx.get(url, timeout=5).text
            except httpx.HTTPError:
                return ""

        def until(condition, deadline: float = 30) -> str:
            end = time.monotonic() + deadline
            while time.monotonic() < end:
                text = scrape()
                if condition(text):
                    return text
                time.sleep(0.1)
            raise AssertionError(f"condition not met; last scrape:\n{scrape()[-3000:]}")

        def up(text: str, name: str) -> float | None:
            return metric(text, "imagesec_up", account=name, source="tcss_images")

        try:
            until(lambda t: up(t, "t") == 1.0)
            config.write_text("accounts:\n" + account("t") + account("t2"))
            proc.send_signal(signal.SIGHUP)
            text = until(lambda t: up(t, "t2") == 1.0)
            assert up(text, "t") == 1.0
            assert metric(text, "imagesec_config_last_reload_successful", file="config") == 1.0

            config.write_text("accounts: [oops]\n")
            proc.send_signal(signal.SIGHUP)
            text = until(
                lambda t: metric(t, "imagesec_config_last_reload_successful", file="config") == 0
            )
            assert up(text, "t") == 1.0 and up(text, "t2") == 1.0  # the running config stays

            config.write_text("accounts:\n" + account("t2"))
            response = httpx.post(f"http://127.0.0.1:{port}/-/reload", timeout=30)
            assert response.status_code == 200, response.text
            text = scrape()
            assert up(text, "t") is None and up(text, "t2") == 1.0
            assert metric(text, "imagesec_config_last_reload_successful", file="config") == 1.0
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert b"config reload failed" in err and b"Traceback" not in err


def test_systemd_socket_activation_serves_on_the_passed_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port, fd = listener.getsockname()[1], listener.fileno()
        # What systemd does: the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID of the service.
        launcher = (
            f"import os, sys; os.dup2({fd}, 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
        )
        args = ["-m", "exporter", "--demo", "--web.systemd-socket"]
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, *args],
            pass_fds=(fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            status = 0
            while time.monotonic() < deadline and status != 200:
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=2).status_code
                except httpx.HTTPError:
                    time.sleep(0.1)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
    assert status == 200, err.decode()[-2000:]
    assert proc.returncode == 0, err.decode()[-2000:]


def test_idle_crowd_under_a_low_descriptor_limit_stops_neither_metrics_nor_cloud_calls(
    tmp_path,
) -> None:
    """256 descriptors (the issue's case) and 300 idle clients: /metrics answers, refreshes go on."""
    import resource

    from exporter.simulator import Simulator, SimulatorServer

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with SimulatorServer(Simulator(fleet_clock=fleet_now), "tencent") as tcss:
        config = tmp_path / "c.yml"
        config.write_text(
            "accounts:\n"
            f"  - {{name: t, provider: tencent, regions: [ap-guangzhou], endpoint: 'http://{tcss.address}'}}\n"
            "collectors:\n  tcss_images: {interval: 1s}\n  tcss_image_detail: {enabled: false}\n"
        )
        env = {
            **os.environ,
            "TENCENTCLOUD_SECRET_ID": simulator.DEMO_TENCENT_SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": simulator.DEMO_TENCENT_SECRET_KEY,
        }
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=low_limit,  # the test process starts no threads of its own before this
        )
        # Drain the log as it comes: a flood of lines must show as a failed count below, not
        # as a stall of the exporter on a full pipe.
        log_lines: list[bytes] = []
        assert proc.stderr is not None
        drain = threading.Thread(target=lambda: log_lines.extend(proc.stderr), daemon=True)
        drain.start()
        url = f"http://127.0.0.1:{port}/metrics"

        def last_success() -> float:
            try:
                text = httpx.get(url, timeout=10).text
            except httpx.HTTPError:
                return 0.0
            return metric(text, "imagesec_last_refresh_success_timestamp_seconds") or 0.0

        crowd: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 20
            while last_success() == 0.0:
                assert time.monotonic() < deadline, "no refresh within 20 s"
                time.sleep(0.1)
            # Stopped, the exporter cannot accept: the whole crowd waits in the backlog and is
            # then accepted in one go, more than the descriptors left, so the listener pauses.
            proc.send_signal(signal.SIGSTOP)
            try:
                crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
            finally:
                proc.send_signal(signal.SIGCONT)
            response = httpx.get(url, timeout=10)
            assert response.status_code == 200
            text = response.text
            assert metric(text, "process_max_fds") == 256.0
            assert metric(text, "imagesec_http_rejected_requests_total", reason="max_connections")
            before = metric(text, "imagesec_last_refresh_success_timestamp_seconds") or 0.0
            deadline = time.monotonic() + 15
            while last_success() <= before:  # outbound cloud calls still get descriptors
                assert time.monotonic() < deadline, "no refresh with the crowd connected"
                time.sleep(0.2)
            text = httpx.get(url, timeout=10).text
            assert metric(text, "imagesec_http_rejected_requests_total", reason="accept_paused")
        finally:
            for sock in crowd:
                sock.close()
            proc.terminate()
            proc.wait(timeout=15)
            drain.join(timeout=15)
            proc.stderr.close()
    err = b"".join(log_lines).decode()
    assert proc.returncode == 0, err[-2000:]
    # Out of descriptors, the listener paused: one log line a minute for it, not one per client.
    assert err.count("accepting connections paused") == 1, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


def test_version_names_python_platform_and_revision() -> None:
    import platform

    env = {"PATH": os.environ["PATH"], "IMAGESEC_GIT_REVISION": "0123abcd"}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, python, system = result.stdout.strip().splitlines()
    assert first.startswith("imagesec-exporter, version ") and "(revision: 0123abcd)" in first
    assert platform.python_version() in python
    assert platform.machine() in system
