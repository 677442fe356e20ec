"""Settings precedence, the identity store, backoff and the heartbeat's pace."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.protocol import HeartbeatResponse
from worker_client.backoff import Backoff
from worker_client.cli import load_settings, main
from worker_client.heartbeat import MIN_INTERVAL, Heartbeat
from worker_client.identity import Identity, IdentityStore
from worker_client.settings import WorkerSettings

TEMPLATE = Path(__file__).resolve().parents[2] / "config.yaml.template"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("GAN_WORKER_"):
            monkeypatch.delenv(key)


def test_flags_beat_env_which_beats_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text("url: http://file:8000\nname: from-file\ntorch_threads: 8\n"
                      "poll_interval: 9\n")  # fmt: skip
    monkeypatch.setenv("GAN_WORKER_NAME", "from-env")
    monkeypatch.setenv("GAN_WORKER_TORCH_THREADS", "16")
    settings, new_identity = load_settings(["--config", str(config), "--torch-threads", "3"])
    assert settings.url == "http://file:8000"  # only the file says it
    assert settings.name == "from-env"  # env beats file
    assert settings.torch_threads == 3  # flag beats env
    assert settings.poll_interval == 9
    assert settings.device == "auto"  # default
    assert new_identity is False


def test_config_file_can_come_from_the_environment(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("url: https://gan.example.org/\ndevice: CUDA:1\n")
    monkeypatch.setenv("GAN_WORKER_CONFIG", str(config))
    settings = WorkerSettings()
    assert settings.url == "https://gan.example.org"
    assert settings.device == "cuda:1"


def test_once_means_one_unit_and_flags_are_only_applied_when_given():
    settings, _ = load_settings(["--once", "--no-progress", "--torch-threads", "1"])
    assert settings.max_units == 1 and settings.progress is False and settings.torch_threads == 1
    assert load_settings([])[0].max_units is None


def test_bad_values_and_typos_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="cuda:N"):
        WorkerSettings(device="gpu")
    with pytest.raises(ValidationError, match="http"):
        WorkerSettings(url="192.168.1.10:8000")
    typo = tmp_path / "typo.yaml"
    typo.write_text("batchsize: 4\n")
    with pytest.raises(ValidationError):
        WorkerSettings(config=typo)


def test_cli_reports_settings_problems_with_exit_code_2(capsys, tmp_path):
    assert main(["--poll-interval", "0"]) == 2
    assert "poll_interval" in capsys.readouterr().err
    assert main(["--batch-size", "16"]) == 2  # the run fixes the micro-batch now
    assert "the run fixes the micro-batch" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_template_is_a_valid_config():
    settings = WorkerSettings(config=TEMPLATE)
    assert settings.url.startswith("http")


def test_identity_store_keeps_one_token_per_url_and_name(tmp_path):
    store = IdentityStore(tmp_path / "state")
    assert store.load("http://a", "ada") is None
    store.save(Identity(url="http://a", name="ada", worker_id=1, token="t1"))
    store.save(Identity(url="http://b", name="ada", worker_id=7, token="t7"))
    again = IdentityStore(tmp_path / "state")  # a restarted worker
    assert again.load("http://a/", "ada") == Identity("http://a", "ada", 1, "t1")
    assert again.load("http://b", "ada").worker_id == 7
    assert again.load("http://a", "bob") is None
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    again.forget("http://a", "ada")
    assert store.load("http://a", "ada") is None and store.load("http://b", "ada") is not None
    store.path.write_text("{not json")
    assert store.load("http://b", "ada") is None  # damaged file: register again, no crash


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets():
    backoff = Backoff(1.0, 8.0, jitter=0.25, rng=random.Random(0))
    delays = [backoff.next() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.75 * base <= delay <= min(8.0, 1.25 * base)
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jitter: workers do not poll in lockstep
    backoff.reset()
    assert backoff.next() <= 1.25
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_heartbeat_pace_follows_the_seconds_the_coordinator_stated():
    clock = [1_000_000.0]  # any origin: only differences count
    beat = Heartbeat(
        lambda: None, max_interval=15.0, clock=lambda: clock[0]  # type: ignore[arg-type, return-value]
    )
    assert beat.interval() is None  # no lease, no beats
    beat.hold(300)
    assert beat.interval() == 15.0
    beat.hold(6)
    assert beat.interval() == 2.0
    clock[0] += 3
    assert beat.interval() == 1.0  # 3 s left on this machine's own clock
    clock[0] += 10
    assert beat.interval() == MIN_INTERVAL  # past the lease: beat soon, not never
    beat.drop()
    assert beat.interval() is None


def test_heartbeat_thread_waits_a_third_of_the_lease_before_beating():
    import threading
    import time

    beats: list[float] = []
    beaten = threading.Event()

    def beat():
        beats.append(time.monotonic())
        beaten.set()
        return HeartbeatResponse(worker_id=1, leases_extended=1, lease_deadline=None,
                                 lease_seconds_left=60.0)  # fmt: skip

    heartbeat = Heartbeat(beat, max_interval=0.3)
    heartbeat.start()
    try:
        held = time.monotonic()
        heartbeat.hold(60.0)
        assert beaten.wait(5)
        # No beat at the moment a lease is taken (it would race the unit's own requests).
        assert beats[0] - held >= 0.25
        heartbeat.drop()
        time.sleep(0.5)
        count = len(beats)
        time.sleep(0.7)
        assert len(beats) == count  # no lease, no beats
    finally:
        heartbeat.stop()


def test_python_dash_m_worker_client_is_gan_worker():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "worker_client", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for flag in ("--url", "--join-code", "--ca-bundle", "--once", "--device", "--state-dir"):
        assert flag in done.stdout


def test_one_identity_is_used_by_one_running_worker_at_a_time(tmp_path):
    import os
    import subprocess
    import sys

    from worker_client.identity import IdentityInUse

    store = IdentityStore(tmp_path)
    with store.in_use("http://a", "ada"):
        with store.in_use("http://a", "bob"), store.in_use("http://b", "ada"):
            pass  # other names or coordinators are other identities
        (lock,) = (tmp_path / "running").glob("*.pid")
        lock.write_text(str(os.getppid()))  # as if another live process held it
        with pytest.raises(IdentityInUse) as info, store.in_use("http://a", "ada"):
            pass
        assert info.value.pid == os.getppid()
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True)  # fmt: skip
        lock.write_text(gone.stdout.strip())  # left behind by a killed worker
        with store.in_use("http://a", "ada"):
            pass
    assert list((tmp_path / "running").glob("*.pid")) == []
