"""Container HEALTHCHECK: exit 0 when ``GET URL`` answers 2xx within five seconds, else 1.

Standard library only, so it runs in either image without curl. The URL is the first
argument; without one it is the worker's coordinator (``GAN_WORKER_URL`` + ``/healthz``),
so a worker container is healthy exactly when it can reach its coordinator. An HTTPS
coordinator with a self-signed certificate is checked against ``GAN_WORKER_CA_BUNDLE``.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

TIMEOUT_SECONDS = 5.0


def target_url(argv: list[str]) -> str:
    """The URL to check: the argument, else the worker's coordinator's /healthz."""
    if len(argv) > 1:
        return argv[1]
    base = os.environ.get("GAN_WORKER_URL", "http://127.0.0.1:8000").strip().rstrip("/")
    return base + "/healthz"


def main(argv: list[str]) -> int:
    """Check the URL; print why it is unhealthy (docker inspect shows the output)."""
    url = target_url(argv)
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=os.environ.get("GAN_WORKER_CA_BUNDLE") or None)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:
            status = int(response.status)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad URLs
        print(f"unhealthy: {url}: {exc}")
        return 1
    if not 200 <= status < 300:
        print(f"unhealthy: {url} answered {status}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
