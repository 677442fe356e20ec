"""The dashboard in a real headless Chromium against a live coordinator.

Debian's ``chromium`` runs the page with its own JavaScript; ``--dump-dom`` gives the
DOM after the page polled the API, ``--screenshot`` a picture of it (written to
``test-artifacts/``), and ``--enable-logging=stderr`` every console message. The page
logs nothing when all is well, so any console line fails the test; errors the page
caught itself (a failed fetch, an image that did not load) land in ``#page-errors``.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import torch

from shared.codec import encode_result
from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN, REPO_ROOT, RunningCoordinator
from tests.coordinator_service.helpers import (
    claim,
    fake_body,
    real_result,
    sampled_through,
    upload,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO_ROOT / "test-artifacts"



class Page:
    """What headless Chromium saw: the final DOM and the console."""

    def __init__(self, dom: str, console: list[str]) -> None:
        self.dom = dom
        self.console = console

    def element(self, element_id: str) -> str:
        """The opening tag and text of the element with this id (up to its first child)."""
        match = re.search(rf'<[a-z]+[^>]*\bid="{element_id}"[^>]*>[^<]*', self.dom)
        assert match, f"#{element_id} not in the page"
        return html.unescape(match.group(0))

    def text(self, element_id: str) -> str:
        return self.element(element_id).split(">", 1)[1].strip()

    def assert_clean(self) -> None:
        assert self.console == [], self.console
        errors = re.search(r'<div id="page-errors"[^>]*>(.*?)</div>', self.dom, re.S)
        assert errors is not None and errors.group(1).strip() == "", errors
        assert 'data-ready="true"' in self.dom, "the page never finished a poll"


def browse(url: str, tmp_path: Path, *, screenshot: Path | None = None,
           size: str = "1400,1500") -> Page:  # fmt: skip
    """Load ``url`` in a fresh headless Chromium profile; 6 s of (virtual) page time."""
    assert CHROMIUM is not None, "the browser tests need Chromium: apt-get install chromium"
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=6000", f"--window-size={size}",
    ]  # fmt: skip
    command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    done = subprocess.run(command + [url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return Page(done.stdout, console)


def register(coordinator: RunningCoordinator, name: str, hardware: HardwareInfo) -> httpx.Client:
    body = {"join_code": coordinator.join_code, "name": name, "hardware": hardware.model_dump()}
    response = coordinator.client().post("/workers", json=body)
    assert response.status_code == 201, response.text
    return coordinator.client(response.json()["token"])


def wait_for_iteration(coordinator: RunningCoordinator, iteration: int) -> None:
    deadline = time.monotonic() + 60
    while coordinator.client().get("/status").json()["iteration"] < iteration:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_live_run_with_two_workers(coordinator: RunningCoordinator, tmp_path: Path) -> None:
    workers = {
        "ada-lovelace": register(coordinator, "ada-lovelace",
                                 HardwareInfo(device="cpu", cpu_cores=8, ram_gb=16.0)),
        "grace-hopper": register(coordinator, "grace-hopper",
                                 HardwareInfo(device="cuda:0", device_name="NVIDIA T4",
                                              cpu_cores=2, ram_gb=12.5, gpu_count=1,
                                              gpu_vram_gb=15.0)),
    }  # fmt: skip
    coordinator.start_run(**NARROW_RUN, units_per_step=2)
    iterations = 2  # synchronous: four versions, the D phase then the G phase, twice
    for version in range(2 * iterations):
        for client in workers.values():  # real gradients on the narrow model
            unit = claim(client)
            assert unit is not None
            weights = client.get(coordinator.url + unit.weights_url).content
            result = encode_result(real_result(unit, weights))
            assert upload(client, unit, result).status_code == 200
        wait_for_iteration(coordinator, version + 1)
    sampled_through(coordinator.client(), 2 * iterations)  # drawn just after its version

    page = browse(coordinator.url + "/", tmp_path)
    page.assert_clean()
    assert page.element("state").count('data-state="running"') == 1
    assert page.text("t-iteration") == str(iterations)
    board = re.search(r'<table id="leaderboard">.*?</table>', page.dom, re.S)
    assert board is not None
    assert "ada-lovelace" in board.group(0) and "grace-hopper" in board.group(0)
    assert "NVIDIA T4 (15 GB)" in board.group(0)
    # A loss curve: one point per iteration for G (its phase) and for D (its phase).
    for series in ("G loss", "D loss"):
        path = re.search(rf'<path [^>]*data-series="{series}"[^>]*>', page.dom)
        assert path is not None and f'data-points="{iterations}"' in path.group(0), series
    sample = page.element("sample")
    assert 'data-loaded="true"' in sample and f'data-iteration="{2 * iterations}"' in sample
    assert "hidden" not in sample
    assert page.text("mode") == "mode: synchronous (D step, then G against the new D)"
    assert page.text("t-mode") == "sync"
    assert page.text("t-mode-sub") == "D phase, then G phase · float32"
    assert page.text("t-bytes").endswith(" kB")  # ~30 kB of fp32 gradients per image

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    assert browse(coordinator.url + "/", tmp_path, screenshot=shot).console == []
    assert shot.stat().st_size > 10_000
    phone = ARTIFACTS / "dashboard-phone.png"
    assert browse(coordinator.url + "/", tmp_path, screenshot=phone, size="390,2600").console == []


def snapshot(coordinator: RunningCoordinator, tmp_path: Path, name: str) -> None:
    """A screenshot artifact of the page as it is now (for people, not assertions)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{name}.png"
    assert browse(coordinator.url + "/", tmp_path, screenshot=shot).console == []


def test_no_run_paused_and_finished(coordinator: RunningCoordinator, tmp_path: Path) -> None:
    snapshot(coordinator, tmp_path, "no-run")
    page = browse(coordinator.url + "/", tmp_path)
    page.assert_clean()
    assert 'data-state="no_run"' in page.element("state")
    assert "No training run is active." in page.dom
    assert page.text("t-iteration") == "–"
    assert 'data-points="0"' in page.element("loss-chart")

    token = coordinator.register("ada")
    coordinator.start_run(**NARROW_RUN, units_per_step=1, max_iterations=2,
                          result_kind="local_steps")  # a grid after every version  # fmt: skip
    worker = coordinator.client(token)
    unit = claim(worker)
    assert unit is not None and upload(worker, unit, fake_body(unit)).status_code == 200
    wait_for_iteration(coordinator, 1)
    sampled_through(coordinator.client(), 1)  # drawn just after its version
    assert coordinator.admin().post("/admin/runs/current/pause").status_code == 200
    page = browse(coordinator.url + "/", tmp_path)
    page.assert_clean()
    assert 'data-state="paused"' in page.element("state")
    assert "Training is paused." in page.dom
    assert page.text("t-iteration") == "1"
    assert 'data-loaded="true"' in page.element("sample")
    snapshot(coordinator, tmp_path, "paused")

    assert coordinator.admin().post("/admin/runs/current/resume").status_code == 200
    unit = claim(worker)
    assert unit is not None and upload(worker, unit, fake_body(unit)).status_code == 200
    wait_for_iteration(coordinator, 2)
    sampled_through(coordinator.client(), 2)
    page = browse(coordinator.url + "/", tmp_path)
    page.assert_clean()
    assert 'data-state="finished"' in page.element("state")
    assert "Training finished." in page.dom
    assert page.text("t-iteration") == "2"
    sample = page.element("sample")
    assert 'data-loaded="true"' in sample and 'data-iteration="2"' in sample
    assert 'max="1"' in page.element("slider")  # two grids to replay
    replay = browse(coordinator.url + "/#iteration=1", tmp_path)  # a link into the replay
    replay.assert_clean()
    sample = replay.element("sample")
    assert 'data-loaded="true"' in sample and 'data-iteration="1"' in sample
    assert replay.text("slider-label") == "iteration 1"
    assert replay.text("sample-label") == "replay"
    snapshot(coordinator, tmp_path, "finished")


def test_a_local_steps_run_shows_h_outer_steps_and_bytes(
    coordinator: RunningCoordinator, tmp_path: Path
) -> None:
    worker = coordinator.client(coordinator.register("ada"))
    coordinator.start_run(**NARROW_RUN, units_per_step=1, result_kind="local_steps",
                          batch_size=8, result_dtype="bfloat16")  # fmt: skip
    unit = claim(worker)
    assert unit is not None
    weights = worker.get(coordinator.url + unit.weights_url).content
    body = encode_result(real_result(unit, weights), torch.bfloat16)
    assert upload(worker, unit, body).status_code == 200
    wait_for_iteration(coordinator, 1)
    page = browse(coordinator.url + "/", tmp_path)
    page.assert_clean()
    assert page.text("mode") == "mode: local steps (DiLoCo)"
    assert page.text("t-mode") == "H = 2"
    assert page.text("t-mode-sub") == "local steps · 1 outer step · bfloat16"
    assert page.text("t-bytes") == f"{len(body) / 16 / 1e3:.0f} kB"  # 2 steps of 8 images
    assert page.text("t-bytes-sub") == "received per trained image"


def test_static_files_fetch_nothing_from_elsewhere() -> None:
    static = REPO_ROOT / "coordinator_service" / "static"
    for path in static.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)
