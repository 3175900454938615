"""The simulated clouds for bench/fleet_bench.py: one Sas site and TCSS, a frozen big fleet.

Run by the benchmark as a subprocess; prints one JSON line {"aliyun": URL, "tencent": URL}
once both listen, and serves until killed. ``--rate`` is the flow-control quota per action
(the documented quotas, 10/s Sas and 20/s TCSS, would make a 50k-image first pass take hours);
the fleet runs in the simulator's cheap mode with a cycle longer than any run, so scan state
is frozen: only the control plane's rescans change it, and "nothing changed" means nothing.

    python bench/sim_server.py --images-per-region 5000 --rate 200
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from exporter.simulator import Simulator, SimulatorServer

FROZEN = 1e9  # seconds per state cycle: scan state stays as it was at the cycle's start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images-per-region", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests/s per action")
    parser.add_argument("--tencent-rate", type=float, help="TCSS's, if not --rate")
    args = parser.parse_args()
    sim = Simulator(images_per_region=args.images_per_region, state_cache=FROZEN)
    sim.aliyun.limiter.rate = args.rate
    sim.tencent.limiter.rate = args.tencent_rate or args.rate
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        SimulatorServer(sim, "aliyun", site="cn-shanghai") as sas,
        SimulatorServer(sim, "tencent") as tcss,
    ):
        # Generate both sites now, not during the first request.
        sim.fleet.states("aliyun", "cn-shanghai", sim.clock())
        sim.fleet.states("tencent", "ap-guangzhou", sim.clock())
        print(json.dumps({"aliyun": f"http://{sas.address}", "tencent": f"http://{tcss.address}"}))
        sys.stdout.flush()
        stop.wait()


if __name__ == "__main__":
    main()
