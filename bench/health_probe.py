"""The liveness probe of bench/fleet_bench.py, in its own process (as the kubelet is): GET
/-/healthy every PERIOD seconds until its stdin closes, then print the probes
(monotonic time, latency ms) and the failed ones as JSON.

A prober thread inside the benchmark would share the load generator's GIL and measure that.

    python bench/health_probe.py PORT PERIOD
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


def main() -> None:
    port, period = int(sys.argv[1]), float(sys.argv[2])
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    latencies: list[tuple[float, float]] = []
    errors = 0
    print(json.dumps({"ready": True}), flush=True)
    while not closed.wait(period):
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/-/healthy")
            conn.getresponse().read()
            conn.close()
        except OSError:  # refused or timed out
            errors += 1
            continue
        latencies.append((time.monotonic(), (time.perf_counter() - started) * 1000))
    print(json.dumps({"latencies": latencies, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
