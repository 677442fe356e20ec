"""deploy/healthcheck.py, the HEALTHCHECK of both images (standard library only)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import REPO_ROOT, free_port

SCRIPT = REPO_ROOT / "deploy" / "healthcheck.py"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30, env=env
    )


def test_healthy_and_unhealthy_answers(server: str) -> None:
    assert _check(server + "/healthz").returncode == 0
    failed = _check(server + "/broken")
    assert failed.returncode == 1 and "unhealthy" in failed.stdout
    closed = _check(f"http://127.0.0.1:{free_port()}/healthz")
    assert closed.returncode == 1 and "unhealthy" in closed.stdout


def test_worker_default_is_its_coordinator(server: str) -> None:
    # The worker image runs it without arguments: GAN_WORKER_URL's /healthz.
    assert _check(env={"GAN_WORKER_URL": server + "/"}).returncode == 0
    assert _check(env={"GAN_WORKER_URL": f"http://127.0.0.1:{free_port()}"}).returncode == 1
