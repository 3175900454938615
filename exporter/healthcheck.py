"""The container HEALTHCHECK: ``python -m exporter.healthcheck`` exits 0 if the probe URL says 200.

The URL is ``IMAGESEC_HEALTHCHECK_URL`` (default ``http://127.0.0.1:9879/-/healthy``). Over HTTPS
the server certificate is not verified: the probe talks to the container's own loopback, as the
kubelet's HTTPS probes do. When ``client_auth_type`` requires a client certificate, set
``IMAGESEC_HEALTHCHECK_CERT`` and ``IMAGESEC_HEALTHCHECK_KEY``. With basic auth on, the image runs
the exporter with ``--web.probes-without-auth`` (``IMAGESEC_WEB_PROBES_WITHOUT_AUTH=true``), so
the probe needs no password.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9879/-/healthy"


def main() -> int:
    url = os.environ.get("IMAGESEC_HEALTHCHECK_URL") or DEFAULT_URL
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    cert = os.environ.get("IMAGESEC_HEALTHCHECK_CERT")
    if cert:
        context.load_cert_chain(cert, os.environ.get("IMAGESEC_HEALTHCHECK_KEY") or None)
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        sys.stderr.write(f"healthcheck failed: {err}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
