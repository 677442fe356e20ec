"""The coordinator started exactly as docker-compose.yml starts it serves a worker round trip."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from shared.codec import encode_result
from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN
from tests.coordinator_service.helpers import claim, real_result, upload
from tests.deploy.compose import ComposeCoordinator, resolved_compose, service_process


def assert_serves_as_the_app_role(c: ComposeCoordinator) -> None:
    """migrate ran as the owner the postgres image made; the coordinator, which just served
    a whole run, connects as the init script's role, and that role cannot change the schema."""
    assert urlsplit(c.migrate.env["DATABASE_URL"]).username == c.roles.owner
    assert urlsplit(c.serve.env["DATABASE_URL"]).username == c.roles.app
    assert c.migrate.env["GAN_APP_ROLE"] == c.roles.app and "GAN_APP_ROLE" not in c.serve.env
    assert f"role {c.roles.app} may use the tables" in c.migrate_output

    async def as_the_coordinator() -> None:
        conn = await asyncpg.connect(c.serve.env["DATABASE_URL"])
        try:
            me = await conn.fetchrow(
                "SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            assert me is not None and (me["rolname"], me["rolsuper"]) == (c.roles.app, False)
            for statement in ("CREATE TABLE intruder (id int)", "DROP TABLE workers",
                              "ALTER TABLE runs ADD COLUMN intruder int"):  # fmt: skip
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(as_the_coordinator())


def test_compose_coordinator_is_healthy_and_serves_a_round_trip(
    compose_coordinator: ComposeCoordinator, tmp_path: Path
) -> None:
    c = compose_coordinator
    assert c.serve.env["GAN_ENVIRONMENT"] == "production"
    assert "migrated" in c.migrate_output
    # The container's healthcheck command, run as Docker would run it.
    assert c.serve.healthcheck is not None
    check = subprocess.run(c.serve.healthcheck, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert httpx.get(c.url + "/healthz").json() == {"status": "ok"}

    api = c.url + "/api/v1"
    with httpx.Client(base_url=api, timeout=60) as anyone:
        body = {"join_code": c.join_code, "name": "compose-ada",
                "hardware": HardwareInfo().model_dump()}  # fmt: skip
        assert anyone.post("/workers", json={**body, "join_code": "wrong-code"}).status_code == 403
        registered = anyone.post("/workers", json=body)
        assert registered.status_code == 201, registered.text
        token = registered.json()["token"]
    admin = httpx.Client(base_url=api, timeout=60, headers={"Authorization": "Bearer wrong"})
    assert admin.post("/admin/runs", json={}).status_code in (401, 403)
    admin.headers["Authorization"] = f"Bearer {c.admin_token}"
    run_config = {**NARROW_RUN, "units_per_step": 1, "max_iterations": 2}
    started = admin.post("/admin/runs", json={"config": run_config})
    assert started.status_code == 201, started.text

    with httpx.Client(base_url=api, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as worker:  # fmt: skip
        unit = claim(worker)
        assert unit is not None and unit.iteration == 0
        weights = worker.get(c.url + unit.weights_url)
        assert weights.status_code == 200, weights.text
        result = real_result(unit, weights.content)
        accepted = upload(worker, unit, encode_result(result))
        assert accepted.status_code == 200 and accepted.json()["accepted"] is True, accepted.text
        deadline = time.monotonic() + 60
        while worker.get("/status").json()["run"]["iteration"] < 1:
            assert time.monotonic() < deadline, c.log()
            time.sleep(0.1)
        board = worker.get("/leaderboard").json()
        assert [(e["name"], e["total_images"]) for e in board] == [
            ("compose-ada", len(unit.image_indices))
        ]
    admin.close()

    # The demo-workers profile's service does the remaining units (2 iterations are four
    # versions: D phase, G phase, twice); the run is then finished and it exits by itself.
    demo = c.service("demo-worker")
    env = {**demo.env, "HOSTNAME": "0123456789ab", "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        demo.argv, env=env, cwd=demo.cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    status = httpx.get(api + "/status").json()
    assert (status["run"]["status"], status["run"]["iteration"]) == ("finished", 4)
    names = {e["name"] for e in httpx.get(api + "/leaderboard").json()}
    assert names == {"compose-ada", "demo-0123456789ab"}
    assert_serves_as_the_app_role(c)


def test_compose_migrate_refuses_placeholder_secrets(
    empty_database_url: str, tmp_path: Path
) -> None:
    # The migrate service's command and environment with .env.example's placeholder left in.
    migrate = service_process(
        resolved_compose(), "migrate", database_url=empty_database_url, data_dir=tmp_path, port=1
    )
    env = {**migrate.env, "GAN_ADMIN_TOKEN": "changeme"}
    refused = subprocess.run(
        migrate.argv, env=env, cwd=migrate.cwd, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0
    assert "GAN_ADMIN_TOKEN must be set to a real secret" in refused.stderr
