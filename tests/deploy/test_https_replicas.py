"""Replicas behind the https profile's proxy: deploy/Caddyfile, run by a real Caddy.

Compose gives every API process the network alias "api" and Docker's DNS answers that
name with all of them; here a small DNS server answers it with two loopback addresses,
each a `gan-coordinator serve` on one PostgreSQL. A class of fake workers talks only to
Caddy over HTTPS. What must hold: requests reach both replicas, and when one is killed
the class goes on through the other with nothing accepted lost or counted twice.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shared.protocol import API_PREFIX
from tests.conftest import (
    TEST_ADMIN_TOKEN,
    TEST_JOIN_CODE,
    SpawnedCoordinator,
    free_port,
)
from tests.coordinator_service.fake_class import (
    NO_BACKUPS_RUN,
    FakeClass,
    assert_nothing_lost_or_counted_twice,
)

CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "Caddyfile"
REPLICAS = ["127.0.0.1", "127.0.0.2"]


class TinyDns:
    """Answers every A query with ``addresses`` (TTL 1 s) and every other query with
    no records: the part of Docker's DNS that Caddy's `dynamic a` asks."""

    def __init__(self, addresses: list[str]) -> None:
        self.records = [socket.inet_aton(a) for a in addresses]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"udp/127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return  # closed
            end = 12
            while query[end]:  # the question's name: length-prefixed labels, then 0
                end += query[end] + 1
            question = query[12 : end + 5]
            qtype = struct.unpack("!H", query[end + 1 : end + 3])[0]
            answers = self.records if qtype == 1 else []
            header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, len(answers), 0, 0)
            records = b"".join(
                struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + ip for ip in answers
            )
            self.sock.sendto(header + question + records, client)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def caddy(tmp_path: Path) -> Iterator[Callable[[str, int], tuple[str, ssl.SSLContext]]]:
    """Start deploy/Caddyfile for the API processes that DNS server ``resolver`` names,
    on ``port``; returns Caddy's HTTPS URL and a context trusting its internal CA."""
    binary = shutil.which("caddy")
    assert binary, "Caddy is missing: scripts/install-test-tools.sh installs it"
    processes: list[subprocess.Popen[bytes]] = []

    def start(resolver: str, port: int) -> tuple[str, ssl.SSLContext]:
        https_port = free_port()
        env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CONFIG_HOME": str(tmp_path / "config"), "HTTPS_SITE": "localhost",
               "HTTPS_TLS": "internal", "CADDY_HTTPS_PORT": str(https_port),
               "CADDY_HTTP_PORT": str(free_port()), "CADDY_ADMIN": f"localhost:{free_port()}",
               "API_NAME": "api", "API_PORT": str(port), "API_RESOLVER": resolver}  # fmt: skip
        log = (tmp_path / "caddy.log").open("wb")
        process = subprocess.Popen(
            [binary, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(process)
        root = tmp_path / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        url = f"https://localhost:{https_port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "caddy.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "caddy.log").read_text()
            try:
                if root.exists():
                    trust = ssl.create_default_context(cafile=str(root))
                    if httpx.get(url + "/healthz", verify=trust).is_success:
                        return url, trust
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def _claims(replica: SpawnedCoordinator) -> float:
    """Claims this very process answered (any outcome: the aggregator's own process
    hears of a new version first, so its waiting claims tend to win the units)."""
    text = httpx.get(replica.url + "/metrics", headers={
        "Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}).text  # fmt: skip
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("gan_claims_total{"))  # fmt: skip


def test_caddy_spreads_the_class_over_replicas_and_routes_around_a_killed_one(
    database_url: str,
    spawn_coordinator: Callable[..., SpawnedCoordinator],
    caddy: Callable[[str, int], tuple[str, ssl.SSLContext]],
) -> None:
    port = free_port()
    replicas = [spawn_coordinator(database_url, port=port, host=h) for h in REPLICAS]
    dns = TinyDns(REPLICAS)
    try:
        url, trust = caddy(dns.address, port)
        with httpx.Client(base_url=url + API_PREFIX, verify=trust) as anon:
            tokens = []
            for i in range(4):
                body = {"join_code": TEST_JOIN_CODE, "name": f"w{i}"}
                answer = anon.post("/workers", json=body)
                assert answer.status_code == 201, answer.text
                tokens.append(answer.json()["token"])
            admin = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
            started = anon.post("/admin/runs", json={"config": NO_BACKUPS_RUN}, headers=admin)
            assert started.status_code == 201, started.text

            def version() -> int:  # repeated while Caddy answers for a dead replica
                for _ in range(20):
                    answer = anon.get("/status")
                    if answer.status_code not in (502, 503, 504):
                        return int(answer.json()["run"]["iteration"])
                    time.sleep(0.2)
                raise AssertionError(f"no process answers /status: {answer.text}")

            with FakeClass([url], tokens, verify=trust) as workers:
                workers.wait_until(lambda: version() >= 6, "6 versions through Caddy")
                assert all(_claims(r) > 0 for r in replicas), "a replica got no claim"
                replicas[1].kill()
                before = version()
                workers.wait_until(lambda: version() >= before + 4, "4 more after the kill")
            assert not workers.errors, workers.errors
    finally:
        dns.close()
    assert_nothing_lost_or_counted_twice(database_url, workers.accepted)
