"""Benchmark on a live fleet: the exporter process against the simulator, with two baselines.

For each fleet size, in one run: the simulator (bench/sim_server.py: one Sas site and one TCSS
region, half the images each, scan state frozen, flow control at ``--rate`` per action: a number
for both clouds, or ``documented``, the vendors' quotas, Sas 10/s and TCSS 20/s, which are also
the exporter's defaults and so left out of its config) and the exporter process (every
collector, all intervals ``--cycle``), then

- first pass: per collector, the time to its first success against the rate-limit floor (its
  calls / rate), from the inventory's success for a per-image collector, from the exporter
  listening (its refresh loop starts next) for an inventory walk;
- steady state, nothing changed: per-image API calls and render CPU over one cycle;
- 1% of the images rescanned: per-image calls over two cycles against the minimum (changed
  images x calls per image), and the render CPU it cost;
- scrapes during refreshes (a 1% rescan just before): 8 concurrent scrapers, plain then gzip,
  median and p99; ``/-/healthy`` p99 over the whole run (first pass included), probed from a
  process of its own (bench/health_probe.py) as a kubelet would;
- memory idle (median over the steady cycle) and peak (VmHWM): RSS with the exposition's
  memfd counted in full (its pages are not in RSS unless mapped and read);
- series per image per provider;
- baseline (a), bench/naive_exporter.py: official SDKs in sequence (call rate measured for
  ``--naive-seconds``, first pass extrapolated) and prometheus_client Gauges per label set
  rendered per scrape (filled with the same series);
- baseline (b): the same bytes served as a static file by a bare threaded HTTP server.

Prints a table and writes JSON. Only loopback is used. The machine's load average is recorded.

    python bench/fleet_bench.py --images 1000,10000,50000 --json bench/results.json
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from exporter.simulator import (
    DEMO_ALIYUN_ACCESS_KEY_ID,
    DEMO_ALIYUN_ACCESS_KEY_SECRET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
)

HERE = Path(__file__).resolve().parent
ACTIONS = {
    "sas_images": ("aliyun", "DescribeImageInstances"),
    "sas_baseline": ("aliyun", "DescribeImageBaselineCheckResult"),
    "sas_vulnerabilities": ("aliyun", "DescribeImageVulList"),
    "sas_malicious": ("aliyun", "DescribeAffectedMaliciousFileImages"),
    "sas_image_risk": ("aliyun", "ListImageRisk"),
    "tcss_images": ("tencent", "DescribeAssetImageList"),
    "tcss_image_detail": ("tencent", "DescribeAssetImageDetail"),
}
DEPENDS = {
    "sas_baseline": "sas_images",
    "sas_vulnerabilities": "sas_images",
    "sas_malicious": "sas_images",
    "tcss_image_detail": "tcss_images",
}
PER_IMAGE_SOURCES = ("sas_baseline", "sas_vulnerabilities", "tcss_image_detail")
PER_IMAGE = {
    "DescribeImageBaselineCheckResult": 1,
    "DescribeImageVulList": 3,
    "DescribeAssetImageDetail": 1,
}
REGION = {"aliyun": "cn-shanghai", "tencent": "ap-guangzhou"}
DOCUMENTED_RATES = {"aliyun": 10.0, "tencent": 20.0}  # shared/cloud-api-facts.md


# -- processes ---------------------------------------------------------------------------------


def spawn(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Any]:
    """Start ``python args...``; return it and the JSON of its first stdout line (if asked)."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return proc, None


def first_line(proc: subprocess.Popen[str]) -> Any:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{proc.args} exited early")
    return json.loads(line)


@contextlib.contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = _status(pid)
    return fields["VmRSS"], fields["VmHWM"]


def _status(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssShmem"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def memfd_mb(pid: int) -> float:
    """MB in the process's memfds (the exposition file): memory, if not in VmRSS unless
    mapped and touched, so counted beside it. Each file once: a mapping holds a second
    descriptor of its file (Python's mmap keeps a dup), which an earlier version counted
    again."""
    sizes = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("/memfd:"):
                stat = os.stat(fd)
                sizes[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(sizes.values()) / 1e6


def memory_mb(pid: int) -> float:
    """VmRSS with the memfds in full (their mapped pages counted once), MB."""
    fields = _status(pid)
    return fields["VmRSS"] - fields.get("RssShmem", 0) + memfd_mb(pid)


# -- HTTP --------------------------------------------------------------------------------------


def get(port: int, path: str, gzip_ok: bool = False, timeout: float = 60) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
        response = conn.getresponse()
        body = response.read()
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body
    finally:
        conn.close()


def self_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exporter's self-metrics (the per-image lines are skipped before parsing)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = get(port, "/metrics", gzip_ok=True)
    # The self-metrics follow the per-image families, starting with imagesec_up.
    small = text[text.find(b"# HELP imagesec_up ") :].decode()
    out = {}
    for family in text_string_to_metric_families(small):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def pick(metrics: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for (n, have), value in metrics.items()
        if n == name and all((k, v) in have for k, v in labels.items())
    )


class Load:
    """``n`` threads hammering ``path`` for ``seconds``; latencies in ms."""

    def __init__(self, port: int, path: str, n: int, gzip_ok: bool) -> None:
        self.port, self.path, self.n, self.gzip_ok = port, path, n, gzip_ok
        self.latencies: list[float] = []
        self.errors = 0

    def _worker(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                headers = {"Accept-Encoding": "gzip"} if self.gzip_ok else {}
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
                while response.read(1 << 20):
                    pass
                conn.close()
                self.latencies.append((time.perf_counter() - started) * 1000)
            except OSError:
                self.errors += 1

    def run(self, seconds: float) -> dict[str, float]:
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self._worker, args=(deadline,)) for _ in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return summary(self.latencies) | {"errors": self.errors}


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"n": 0, "median_ms": float("nan"), "p99_ms": float("nan")}
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"n": len(ordered), "median_ms": statistics.median(ordered), "p99_ms": p99}


class Background(threading.Thread):
    """Calls ``fn`` every ``period`` seconds until stopped."""

    def __init__(self, fn: Callable[[], None], period: float) -> None:
        super().__init__(daemon=True)
        self.fn, self.period = fn, period
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            self.fn()


# -- one fleet size ----------------------------------------------------------------------------


def config_file(
    directory: str, urls: dict[str, str], rates: dict[str, float] | None, cycle: float
) -> str:
    """The exporter's config; ``rates`` None: no ``rate_limit``, the exporter's defaults."""
    import yaml

    config = {
        "accounts": [
            {
                "name": "bench",
                "provider": provider,
                "regions": [REGION[provider]],
                "endpoint": urls[provider],
            }
            | ({"rate_limit": rates[provider]} if rates else {})
            for provider in ("aliyun", "tencent")
        ],
        "collectors": {name: {"interval": f"{cycle:g}s"} for name in ACTIONS},
        "refresh": {"timeout": "3600s", "concurrency": 16},
    }
    path = os.path.join(directory, "config.yml")
    Path(path).write_text(yaml.safe_dump(config))
    return path


def wait_until(check: Callable[[], bool], timeout: float, step: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(step)


def successes(metrics: dict[Any, float]) -> dict[str, float]:
    return {
        source: pick(metrics, "imagesec_last_refresh_success_timestamp_seconds", source=source)
        for source in ACTIONS
    }


def calls(metrics: dict[Any, float]) -> dict[str, float]:
    return {
        action: pick(metrics, "imagesec_api_requests_total", action=action)
        for _, action in ACTIONS.values()
    }


def renders(metrics: dict[Any, float]) -> tuple[float, float]:
    return (
        pick(metrics, "imagesec_exposition_renders_total"),
        pick(metrics, "imagesec_exposition_render_seconds_total"),
    )


def wait_cycle(port: int, sources: list[str], timeout: float) -> dict[Any, float]:
    """Wait until each of ``sources`` has succeeded again (or ``timeout``: a source that keeps
    failing must not stall the run); return the metrics then."""
    before = successes(self_metrics(port))
    box: dict[str, Any] = {}

    def done() -> bool:
        box["m"] = self_metrics(port)
        now = successes(box["m"])
        return all(now[s] > before[s] for s in sources)

    with contextlib.suppress(TimeoutError):
        wait_until(done, timeout)
    return box["m"]  # type: ignore[no-any-return]


def rescan(sim_urls: dict[str, str], per_cloud: int) -> None:
    for cloud in ("aliyun", "tencent"):
        conn = http.client.HTTPConnection(sim_urls[cloud].removeprefix("http://"), timeout=60)
        body = json.dumps({"cloud": cloud, "count": per_cloud})
        conn.request("POST", "/_sim/rescan", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"rescan failed: {response.status}")
        conn.close()


def bench_size(images: int, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"images": images, "loadavg_start": os.getloadavg()}
    per_cloud = images // 2
    rates = rates_of(args.rate)
    cycle = max(args.cycle, images / 400)  # the inventory walks must fit in a cycle
    heavy = images > args.per_image_max  # the per-image collectors' first pass would take long
    sources = [s for s in ACTIONS if not (heavy and s in PER_IMAGE_SOURCES)]
    result["cycle_s"] = cycle
    result["collectors"] = sources
    sim, _ = spawn([str(HERE / "sim_server.py"), "--images-per-region", str(per_cloud),
                    "--rate", str(rates["aliyun"]), "--tencent-rate", str(rates["tencent"])])  # fmt: skip
    with running(sim), tempfile.TemporaryDirectory() as tmp:
        urls = first_line(sim)
        port = free_port()
        env = {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ALIYUN_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ALIYUN_ACCESS_KEY_SECRET,
            "TENCENTCLOUD_SECRET_ID": DEMO_TENCENT_SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": DEMO_TENCENT_SECRET_KEY,
        }
        exporter, _ = spawn(
            [
                "-m",
                "exporter",
                "--config.file",
                config_file(tmp, urls, None if args.rate == "documented" else rates, cycle),
                *(f"--no-collector.{s}" for s in ACTIONS if s not in sources),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--log.level",
                "warning",
            ],
            env,
        )
        with running(exporter):
            samples: list[tuple[float, float]] = []  # (monotonic time, memory MB)
            sampler = Background(
                lambda: samples.append((time.monotonic(), memory_mb(exporter.pid))), 0.5
            )
            wait_until(lambda: _listening(port), 60, 0.05)
            # The exporter listens before its refresh loop starts: an inventory walk's pass is
            # timed from here, not from the process's start (imports and config, about 0.5 s).
            started_unix = time.time()
            started = time.monotonic()
            sampler.start()
            prober = subprocess.Popen(
                [sys.executable, str(HERE / "health_probe.py"), str(port), "0.05"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            first_line(prober)

            # -- first pass: per collector, time to first success and its calls ------------
            first: dict[str, dict[str, float]] = {}

            def first_pass_done() -> bool:
                # A collector's first pass: from the exporter's start (or, for one that builds
                # on an inventory, from the inventory's first success) to its first success.
                metrics = self_metrics(port)
                for source, (_, action) in ACTIONS.items():
                    if source in first or source not in sources:
                        continue
                    # A pass that publishes progress is up before it is done: wait for a
                    # success timestamp and a complete pass, not only imagesec_up.
                    done = pick(
                        metrics, "imagesec_last_refresh_success_timestamp_seconds",
                        source=source,
                    )  # fmt: skip
                    complete = pick(
                        metrics, "imagesec_source_pass_completeness_ratio", source=source
                    )
                    if (
                        pick(metrics, "imagesec_up", source=source) == 1
                        and done > 0
                        and complete >= 1
                    ):
                        n = pick(metrics, "imagesec_api_requests_total", action=action)
                        floor = n / rates[ACTIONS[source][0]]
                        first[source] = {"done": done, "calls": n, "floor": floor}
                return len(first) == len(sources)

            wait_until(first_pass_done, args.first_pass_timeout, 0.5)
            result["first_pass_wall_s"] = time.monotonic() - started
            phases = {"first pass": time.monotonic()}
            for source, entry in first.items():
                upstream = DEPENDS.get(source) if source in DEPENDS else None
                begin = first[upstream]["done"] if upstream else started_unix
                entry["seconds"] = entry["done"] - begin
            result["first_pass"] = first

            # -- steady state: one full cycle after a warm-up cycle ------------------------
            wait_cycle(port, sources, 4 * cycle)
            rss_mark = len(samples)
            m0 = self_metrics(port)
            m1 = wait_cycle(port, sources, 4 * cycle)
            c0, c1 = calls(m0), calls(m1)
            r0, r1 = renders(m0), renders(m1)
            idle = [mb for _, mb in samples[rss_mark:]] or [samples[-1][1]]
            result["idle_rss_mb"] = statistics.median(idle)
            result["steady"] = {
                "per_image_calls": sum(c1[a] - c0[a] for a in PER_IMAGE),
                "calls": {a: c1[a] - c0[a] for a in c1},
                "renders": r1[0] - r0[0],
                "render_cpu_s": r1[1] - r0[1],
            }

            # -- 1% rescanned: two cycles (inventory sees it, then the per-image ones) -----
            changed = max(1, per_cloud // 100)
            rescan(urls, changed)
            m2 = wait_cycle(port, sources, 4 * cycle)
            m3 = wait_cycle(port, sources, 4 * cycle)
            c3, r3 = calls(m3), renders(m3)
            used = sum(c3[a] - c1[a] for a in PER_IMAGE)
            steady = result["steady"]["per_image_calls"]
            minimum = 0 if heavy else changed * sum(PER_IMAGE.values())
            result["rescan"] = {
                "changed_images": 2 * changed,
                "per_image_calls": used,
                "per_image_calls_less_steady": used - 2 * steady,
                "minimum_calls": minimum,
                "renders": r3[0] - r1[0],
                "render_cpu_s": r3[1] - r1[1],
                "render_cpu_per_render_s": (r3[1] - r1[1]) / max(1.0, r3[0] - r1[0]),
            }
            del m2

            # -- scrapes during refreshes --------------------------------------------------
            rescan(urls, changed)
            phases["cycles"] = time.monotonic()
            plain = Load(port, "/metrics", args.scrapers, False).run(args.scrape_seconds)
            phases["plain scrapes"] = time.monotonic()
            gz = Load(port, "/metrics", args.scrapers, True).run(args.scrape_seconds)
            phases["gzip scrapes"] = time.monotonic()
            result["scrape_plain"], result["scrape_gzip"] = plain, gz
            probed = json.loads(prober.communicate("")[0])
            sampler.stopped.set()
            sampler.join()
            probes = probed["latencies"]
            result["healthy"] = summary([ms for _, ms in probes]) | {"errors": probed["errors"]}
            begin = 0.0
            for phase, end in phases.items():  # each phase ends at its mark
                result["healthy"][phase] = summary([ms for t, ms in probes if begin <= t < end])
                inside = [mb for t, mb in samples if begin <= t < end]
                result.setdefault("memory_max_mb", {})[phase] = max(inside, default=float("nan"))
                begin = end
            result["memfd_mb"] = memfd_mb(exporter.pid)
            result["peak_rss_mb"] = rss_mb(exporter.pid)[1] + result["memfd_mb"]

            # -- the bytes, for the static baseline and the series count -------------------
            body_plain = get(port, "/metrics")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            body_gzip = conn.getresponse().read()
            conn.close()
            final = self_metrics(port)
        result["exposition_mb"] = len(body_plain) / 1e6
        result["gzip_mb"] = len(body_gzip) / 1e6
        result["series_per_image"] = series_per_image(body_plain, final)
        plain_path, gzip_path = os.path.join(tmp, "metrics.txt"), os.path.join(tmp, "metrics.gz")
        Path(plain_path).write_bytes(body_plain)
        Path(gzip_path).write_bytes(body_gzip)
        result["static"] = static_baseline(plain_path, gzip_path, args)
        result["naive"] = naive_baseline(urls, plain_path, first, args)
    result["loadavg_end"] = os.getloadavg()
    return result


def _listening(port: int) -> bool:
    try:
        get(port, "/-/healthy", timeout=2)
        return True
    except OSError:
        return False


def series_per_image(text: bytes, metrics: dict[Any, float]) -> dict[str, float]:
    counts = {"aliyun": 0, "tencent": 0}
    for line in text.split(b"\n"):
        if line.startswith(b"imagesec_image_"):
            if b'provider="aliyun"' in line:
                counts["aliyun"] += 1
            elif b'provider="tencent"' in line:
                counts["tencent"] += 1
    out = {}
    for provider, source in (("aliyun", "sas_images"), ("tencent", "tcss_images")):
        images = pick(metrics, "imagesec_source_images", source=source)
        out[provider] = counts[provider] / images if images else float("nan")
    return out


def static_baseline(plain: str, gz: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc, _ = spawn([str(HERE / "static_server.py"), plain, gz, str(port)])
    with running(proc):
        first_line(proc)
        return {
            "scrape_plain": Load(port, "/metrics", args.scrapers, False).run(args.scrape_seconds),
            "scrape_gzip": Load(port, "/metrics", args.scrapers, True).run(args.scrape_seconds),
            "rss_mb": rss_mb(proc.pid)[0],
        }


def naive_baseline(
    urls: dict[str, str], plain: str, first: dict[str, dict[str, float]], args: argparse.Namespace
) -> dict[str, Any]:
    proc, _ = spawn(
        [
            str(HERE / "naive_exporter.py"),
            "--aliyun",
            urls["aliyun"],
            "--tencent",
            urls["tencent"],
            "--seconds",
            str(args.naive_seconds),
        ]
    )
    with running(proc):
        walked = first_line(proc)
    rate = walked["calls"] / walked["seconds"]
    needed = sum(f["calls"] for f in first.values())
    out: dict[str, Any] = {
        "sdk_calls_per_s": rate,
        "first_pass_s_extrapolated": needed / rate,
    }
    port = free_port()
    proc, _ = spawn([str(HERE / "naive_exporter.py"), "--fill", plain, "--port", str(port)])
    with running(proc):
        filled = first_line(proc)
        out["series"] = filled["series"]
        out["rss_mb"] = rss_mb(proc.pid)[0]
        seconds = args.scrape_seconds
        out["scrape_plain"] = Load(port, "/metrics", args.scrapers, False).run(seconds)
        out["scrape_gzip"] = Load(port, "/metrics", args.scrapers, True).run(seconds)
        out["peak_rss_mb"] = rss_mb(proc.pid)[1]
    return out


# -- report ------------------------------------------------------------------------------------


def rates_of(rate: str) -> dict[str, float]:
    """Requests/s per action per cloud: ``documented`` (the vendors' quotas, which are the
    exporter's defaults) or one number for both."""
    if rate == "documented":
        return dict(DOCUMENTED_RATES)
    return {"aliyun": float(rate), "tencent": float(rate)}


def table(results: list[dict[str, Any]], rate: str) -> str:
    rows: list[tuple[str, ...]] = []

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for r in results:
            try:
                cells.append(fn(r))
            except (KeyError, ZeroDivisionError, TypeError):
                cells.append("-")
        rows.append((label, *cells))

    for source in ACTIONS:
        row(
            f"first pass {source} s (floor s, x)",
            lambda r, s=source: (
                f"{r['first_pass'][s]['seconds']:.1f} ({r['first_pass'][s]['floor']:.1f}, "
                f"{r['first_pass'][s]['seconds'] / max(r['first_pass'][s]['floor'], 1e-9):.2f}x)"
            ),
        )
    row("collectors / cycle s", lambda r: f"{len(r['collectors'])} / {r['cycle_s']:.0f}")
    row("steady: per-image calls / cycle", lambda r: f"{r['steady']['per_image_calls']:.0f}")
    row("steady: renders / render CPU s", lambda r: (
        f"{r['steady']['renders']:.0f} / {r['steady']['render_cpu_s']:.3f}"))  # fmt: skip
    row("1% rescanned: images", lambda r: f"{r['rescan']['changed_images']}")
    row("1% rescanned: per-image calls, less steady (changed x 5)", lambda r: (
        f"{r['rescan']['per_image_calls']:.0f}, {r['rescan']['per_image_calls_less_steady']:.0f}"
        f" ({r['rescan']['minimum_calls']})"))  # fmt: skip
    row("1% rescanned: render CPU s per render", lambda r: (
        f"{r['rescan']['render_cpu_per_render_s']:.3f}"))  # fmt: skip
    for kind in ("plain", "gzip"):
        row(f"scrape {kind} ms median / p99", lambda r, k=kind: (
            f"{r[f'scrape_{k}']['median_ms']:.1f} / {r[f'scrape_{k}']['p99_ms']:.1f}"))  # fmt: skip
        row(f"  static {kind} ms median / p99", lambda r, k=kind: (
            f"{r['static'][f'scrape_{k}']['median_ms']:.1f} / "
            f"{r['static'][f'scrape_{k}']['p99_ms']:.1f}"))  # fmt: skip
        row(f"  p99 vs static ({kind})", lambda r, k=kind: (
            f"{r[f'scrape_{k}']['p99_ms'] / r['static'][f'scrape_{k}']['p99_ms']:.2f}x"))  # fmt: skip
        row(f"  naive {kind} ms median / p99", lambda r, k=kind: (
            f"{r['naive'][f'scrape_{k}']['median_ms']:.0f} / "
            f"{r['naive'][f'scrape_{k}']['p99_ms']:.0f}"))  # fmt: skip
    row("/-/healthy ms p99 (n, failed)", lambda r: (
        f"{r['healthy']['p99_ms']:.1f} ({r['healthy']['n']}, {r['healthy']['errors']})"))  # fmt: skip
    for phase in ("first pass", "cycles", "plain scrapes", "gzip scrapes"):
        row(f"  /-/healthy ms p99 in {phase}", lambda r, p=phase: (
            f"{r['healthy'][p]['p99_ms']:.1f}"))  # fmt: skip
    row("memory MB idle / peak (RSS + memfd)", lambda r: (
        f"{r['idle_rss_mb']:.0f} / {r['peak_rss_mb']:.0f}"))  # fmt: skip
    row("  memory MB max: first pass / cycles / plain / gzip", lambda r: " / ".join(
        f"{r['memory_max_mb'][p]:.0f}"
        for p in ("first pass", "cycles", "plain scrapes", "gzip scrapes")))  # fmt: skip
    row("  naive RSS MB / static RSS MB", lambda r: (
        f"{r['naive']['rss_mb']:.0f} / {r['static']['rss_mb']:.0f}"))  # fmt: skip
    row("exposition MB plain / gzip", lambda r: f"{r['exposition_mb']:.1f} / {r['gzip_mb']:.2f}")
    row("series per image aliyun / tencent", lambda r: (
        f"{r['series_per_image']['aliyun']:.1f} / {r['series_per_image']['tencent']:.1f}"))  # fmt: skip
    row("naive first pass s (extrapolated)", lambda r: (
        f"{r['naive']['first_pass_s_extrapolated']:.0f} "
        f"({r['naive']['sdk_calls_per_s']:.0f} calls/s)"))  # fmt: skip
    row("load average start / end", lambda r: (
        f"{r['loadavg_start'][0]:.1f} / {r['loadavg_end'][0]:.1f}"))  # fmt: skip
    header = ("metric", *(f"{r['images']:,} images" for r in results))
    widths = [max(len(x[i]) for x in (header, *rows)) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    rates = rates_of(rate)
    return (
        f"rate limit per action: Sas {rates['aliyun']:g}/s, TCSS {rates['tencent']:g}/s\n"
        + "\n".join(lines)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="1000,10000,50000")
    parser.add_argument(
        "--rate",
        default="200",
        help="quota per action, requests/s, or 'documented' (Sas 10, TCSS 20: the defaults)",
    )
    parser.add_argument("--cycle", type=float, default=20.0, help="every collector's interval")
    parser.add_argument("--scrapers", type=int, default=8)
    parser.add_argument("--scrape-seconds", type=float, default=10.0)
    parser.add_argument("--naive-seconds", type=float, default=20.0)
    parser.add_argument("--first-pass-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--per-image-max",
        type=int,
        default=10000,
        help="above this many images, run without the per-image collectors (sas_baseline, "
        "sas_vulnerabilities, tcss_image_detail): their first pass is 5 calls per image",
    )
    parser.add_argument("--json", default=str(HERE / "results.json"))
    args = parser.parse_args()
    results = []
    for images in (int(n) for n in args.images.split(",")):
        print(f"... {images} images", file=sys.stderr)
        results.append(bench_size(images, args))
        Path(args.json).write_text(json.dumps({"rate": args.rate, "results": results}, indent=1))
    print(table(results, args.rate))


if __name__ == "__main__":
    main()
