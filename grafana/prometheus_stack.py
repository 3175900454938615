"""Run the demo exporter and a throwaway Prometheus scraping it, both on loopback.

Used by tests/test_prometheus_e2e.py and grafana/render_preview.py. Run it directly to poke at the
pair by hand (Ctrl-C stops both)::

    python grafana/prometheus_stack.py
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "imagesec.rules.yml"
JOB = "imagesec-exporter"
DEMO_START_SECONDS = 15.0
"""The demo's contract: /metrics has data from both simulated clouds this soon after start."""

_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


class StackError(RuntimeError):
    """The exporter or Prometheus did not come up; the message ends with its log."""


def expand(expr: str, rate_interval: str = "1m") -> str:
    """Turn a dashboard query into plain PromQL: every variable matches all, as "All" does."""
    return _VARIABLE.sub(
        lambda m: rate_interval if m.group(1) == "__rate_interval" else ".*",
        expr,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError:
        return 0, ""


@dataclass(frozen=True)
class Stack:
    """A running demo exporter and the Prometheus scraping it."""

    exporter_url: str
    prometheus_url: str
    workdir: Path

    def api(self, path: str, **params: str | Sequence[str]) -> dict[str, Any]:
        """Call Prometheus' HTTP API; the JSON answer, errors included."""
        query = urllib.parse.urlencode(params, doseq=True)
        _, body = http_get(f"{self.prometheus_url}/api/v1/{path}?{query}", timeout=30)
        return dict(json.loads(body)) if body else {"status": "error", "error": "no answer"}

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        return self.api("query_range", query=expr, start=str(start), end=str(end), step=str(step))

    def logs(self) -> str:
        return "".join(
            f"--- {log.name} (last 40 lines)\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            + "\n"
            for log in sorted(self.workdir.glob("*.log"))
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(
    condition: Any, seconds: float, what: str, stack: Stack, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            raise StackError(f"exited with {process.returncode} before {what}\n{stack.logs()}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} not within {seconds:g}s\n{stack.logs()}")
        time.sleep(0.25)


def _has_both_clouds(exporter_url: str) -> bool:
    status, body = http_get(f"{exporter_url}/metrics")
    info = [line for line in body.splitlines() if line.startswith("imagesec_image_info{")]
    return status == 200 and all(
        any(f'provider="{p}"' in line for line in info) for p in ("aliyun", "tencent")
    )


def prometheus_config(target: str, scrape_interval: str, rule_files: Sequence[Path]) -> str:
    return json.dumps(  # JSON is YAML
        {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        },
        indent=2,
    )


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    *,
    prometheus: str = "prometheus",
    scrape_interval: str = "1s",
    rule_files: Sequence[Path] = (RULES,),
) -> Iterator[Stack]:
    """Start the demo (``python -m exporter --demo``), then Prometheus; stop both on exit.

    Raises StackError when the demo has no data from both clouds within DEMO_START_SECONDS or
    Prometheus is not ready within 30 s.
    """
    exporter_address = f"127.0.0.1:{free_port()}"
    prometheus_address = f"127.0.0.1:{free_port()}"
    stack = Stack(f"http://{exporter_address}", f"http://{prometheus_address}", workdir)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with (workdir / "exporter.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "exporter",
                        "--demo",
                        "--web.listen-address",
                        exporter_address,
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait(
            lambda: _has_both_clouds(stack.exporter_url),
            DEMO_START_SECONDS,
            "demo /metrics with data from both clouds",
            stack,
            processes[0],
        )
        config = workdir / "prometheus.yml"
        config.write_text(prometheus_config(exporter_address, scrape_interval, rule_files))
        with (workdir / "prometheus.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={workdir / 'data'}",
                        f"--web.listen-address={prometheus_address}",
                    ],
                    cwd=workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait(
            lambda: http_get(f"{stack.prometheus_url}/-/ready")[0] == 200,
            30,
            "Prometheus ready",
            stack,
            processes[1],
        )
        yield stack
    finally:
        for process in reversed(processes):
            _stop(process)


def main() -> int:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.stderr.write("prometheus not found: apt-get install prometheus\n")
        return 1
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp), prometheus=prometheus) as s:
        sys.stdout.write(f"exporter   {s.exporter_url}/metrics\nprometheus {s.prometheus_url}\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
