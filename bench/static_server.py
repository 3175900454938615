"""Baseline (b) of bench/fleet_bench.py: the exporter's bytes served as a static file.

A bare threaded HTTP server holding the plain and gzip bodies in memory; each request writes
one of them. Prints {"ready": true} once listening.

    python bench/static_server.py metrics.txt metrics.gz PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PLAIN = Path(sys.argv[1]).read_bytes()
GZIP = Path(sys.argv[2]).read_bytes()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
        body = GZIP if gz else PLAIN
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if gz:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), Handler)
    server.daemon_threads = True
    print(json.dumps({"ready": True}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
