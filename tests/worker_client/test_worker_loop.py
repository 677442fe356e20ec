"""The worker loop against an in-memory coordinator (httpx.MockTransport)."""

from __future__ import annotations

import logging

import httpx
import pytest
import torch

from shared.builtin_faces import BuiltinFaces
from shared.models import build_models, load_model_state, model_state
from shared.protocol import HardwareInfo
from shared.strategies import Synchronous
from worker_client.api_client import CoordinatorClient
from worker_client.errors import ConfigError
from worker_client.identity import Identity, IdentityStore
from worker_client.settings import WorkerSettings
from worker_client.stopping import ForceStop, StopSignal
from worker_client.worker import EXIT_AUTH, EXIT_FORCED, EXIT_OK, Worker

from .fake_coordinator import TINY, FakeCoordinator

URL = "http://coordinator:8000"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_worker(fake, tmp_path, **overrides):
    options = dict(
        url=URL,
        join_code="blue-otter",
        name="ada",
        poll_interval=0.01,
        max_poll_interval=0.02,
        progress=False,
        state_dir=tmp_path,
    )
    options.update(overrides)
    settings = WorkerSettings(**options)
    client = CoordinatorClient(URL, transport=fake.transport())
    stop = StopSignal()
    hardware = HardwareInfo(hostname="laptop", cpu_cores=2)
    return Worker(
        settings,
        client,
        IdentityStore(tmp_path),
        stop,
        device=torch.device("cpu"),
        hardware=hardware,
    )


def messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_units_are_computed_uploaded_and_the_end_of_the_run_exits_0(tmp_path, caplog):
    caplog.set_level(logging.INFO, "worker_client")
    fake = FakeCoordinator(units=[(0, [5, 1, 3]), (0, [0, 2]), (1, [4, 6, 7])])
    worker = make_worker(fake, tmp_path)
    assert worker.run() == EXIT_OK
    assert sorted(fake.results) == [1, 2, 3]
    assert fake.weight_downloads == [0, 1]  # cached while the iteration stays the same
    # Iteration 1 is a G phase: the worker holding iteration 0 fetched D's part only.
    assert fake.requests_for_weights[-1].url.params.get_list("networks") == ["discriminator"]
    assert worker.totals.units == 3 and worker.totals.images == 8
    # The result is exactly the shared step on W_t: BatchNorm stats were reset between units.
    generator, discriminator = build_models(TINY)
    load_model_state(generator, discriminator, model_state(*build_models(TINY, seed=0)))
    expected = Synchronous(7, 2, TINY.latent_dim).compute(
        generator, discriminator, BuiltinFaces(64, 0).load([0, 2]), [0, 2], version=0
    )
    got = fake.results[2]
    for name, tensor in expected.tensors.items():
        torch.testing.assert_close(got.tensors[name], tensor)
    for name, tensor in expected.buffers.items():
        torch.testing.assert_close(got.buffers[name], tensor)
    text = messages(caplog)
    for line in (
        "Initializing",
        "Worker id 1, name 'ada'",
        "Device: cpu",
        "Dataset: builtin-64, 64 images",
        "Processing work unit 3 (iteration 1)",
        "3 images in micro-batches of 2 (synchronous run)",
        "(discriminator only)",
        "G_loss",
        "D_real",
        "Uploaded",
        "Work unit 3 completed successfully!",
        "Totals: 3 units, 8 images",
        "training run is finished",
    ):
        assert line in text, line


def test_in_an_asynchronous_run_the_next_unit_is_claimed_while_one_computes(tmp_path, caplog):
    """Pipelining: the claim of each next unit and its weights download happen before
    the current unit's upload, so the compute never waits on the network."""
    caplog.set_level(logging.INFO, "worker_client")
    fake = FakeCoordinator(units=[(0, [5, 1, 3]), (1, [0, 2]), (2, [4, 6])], max_staleness=4)
    worker = make_worker(fake, tmp_path)
    assert worker.run() == EXIT_OK
    assert sorted(fake.results) == [1, 2, 3] and fake.released == []
    order = [(r.url.path.split("/")[-1], r.url.path) for r in fake.requests]
    paths = [path for _, path in order]
    for unit in (2, 3):  # claimed and downloaded before the unit before it was uploaded
        uploaded = paths.index(f"/api/v1/work-units/{unit - 1}/result")
        claims = [i for i, p in enumerate(paths) if p == "/api/v1/work-units/claim"]
        assert claims[unit - 1] < uploaded
        assert paths.index(f"/api/v1/weights/{unit - 1}") < uploaded
    assert fake.weight_downloads == [0, 1, 2]
    assert "while the last unit computed" in messages(caplog)
    assert "(async local steps run)" in messages(caplog)


def test_a_unit_claimed_ahead_past_the_staleness_bound_is_handed_back(tmp_path, caplog):
    """The class moved on while unit 1 computed: the unit claimed ahead (iteration 1) is
    10 versions behind, more than the run's 2, so it is released, never computed."""
    caplog.set_level(logging.INFO, "worker_client")
    fake = FakeCoordinator(units=[(0, [1]), (1, [2])], max_staleness=2, current_version=11)
    worker = make_worker(fake, tmp_path)
    assert worker.run() == EXIT_OK
    assert sorted(fake.results) == [1] and fake.released == [2]
    assert "Work unit 2, claimed ahead, is 10 versions behind the class" in messages(caplog)


def test_stopping_hands_back_a_unit_claimed_ahead(tmp_path):
    fake = FakeCoordinator(units=[(0, [1]), (1, [2])], max_staleness=4)
    worker = make_worker(fake, tmp_path)
    fake.on_request = lambda request: (
        worker.stop.request() if request.url.path.endswith("/1/result") else None
    )
    assert worker.run() == EXIT_OK
    assert sorted(fake.results) == [1] and fake.released == [2]


def test_the_token_is_saved_and_reused_by_a_restarted_worker(tmp_path):
    fake = FakeCoordinator(units=[(0, [1])])
    assert make_worker(fake, tmp_path).run() == EXIT_OK
    fake.units.append((0, [2]))
    assert make_worker(fake, tmp_path, join_code=None).run() == EXIT_OK
    registrations = [r for r in fake.requests if r.url.path == "/api/v1/workers"]
    assert len(registrations) == 1
    assert IdentityStore(tmp_path).load(URL, "ada") == Identity(URL, "ada", 1, "token-1")


def test_without_identity_or_join_code_the_student_is_told_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="--join-code"):
        make_worker(FakeCoordinator(), tmp_path, join_code=None).run()


def test_409_on_upload_is_logged_and_the_worker_goes_on(tmp_path, caplog):
    caplog.set_level(logging.INFO, "worker_client")
    fake = FakeCoordinator(units=[(0, [1, 2]), (0, [3])], conflict_units={1})
    worker = make_worker(fake, tmp_path)
    assert worker.run() == EXIT_OK
    assert sorted(fake.results) == [2]
    assert worker.totals.units == 1 and worker.totals.images == 1 and worker.totals.dropped == 1
    assert "Work unit 1 is not needed any more (stale iteration)" in messages(caplog)


def test_revoked_worker_gets_advice_and_exit_code_3(tmp_path, caplog):
    fake = FakeCoordinator()
    IdentityStore(tmp_path).save(Identity(URL, "ada", 9, "old-token"))
    fake.tokens["old-token"] = 9
    fake.revoked.add("old-token")
    assert make_worker(fake, tmp_path).run() == EXIT_AUTH
    assert "instructor removed it" in messages(caplog) and "--name NEW_NAME" in messages(caplog)


def test_flagged_worker_stops_with_a_message_for_the_instructor(tmp_path, caplog):
    fake = FakeCoordinator()
    IdentityStore(tmp_path).save(Identity(URL, "eve", 9, "her-token"))
    fake.tokens["her-token"] = 9
    fake.flagged.add("her-token")
    assert make_worker(fake, tmp_path, name="eve").run() == EXIT_AUTH
    assert "got different results" in messages(caplog) and "clear the flag" in messages(caplog)


def test_unknown_token_rejoins_with_the_join_code(tmp_path, caplog):
    fake = FakeCoordinator(units=[(0, [1])])
    IdentityStore(tmp_path).save(Identity(URL, "ada", 9, "forgotten"))
    assert make_worker(fake, tmp_path).run() == EXIT_OK
    assert "does not know this worker any more" in messages(caplog)
    assert IdentityStore(tmp_path).load(URL, "ada").token == "token-1"
    assert sorted(fake.results) == [1]


def test_unknown_token_without_join_code_explains_and_exits_3(tmp_path, caplog):
    fake = FakeCoordinator()
    IdentityStore(tmp_path).save(Identity(URL, "ada", 9, "forgotten"))
    assert make_worker(fake, tmp_path, join_code=None).run() == EXIT_AUTH
    assert "--join-code CODE to join again" in messages(caplog)
    assert IdentityStore(tmp_path).load(URL, "ada") is None


def test_an_outage_is_reported_retried_and_recovered_from(tmp_path, caplog):
    caplog.set_level(logging.INFO, "worker_client")
    fake = FakeCoordinator(units=[(0, [1])], outage_claims=3, idle_claims=2)
    assert make_worker(fake, tmp_path).run() == EXIT_OK
    text = messages(caplog)
    assert text.count("Cannot reach the coordinator at http://coordinator:8000") == 1
    assert "Reconnected to the coordinator" in text
    assert text.count("Waiting for work units...") == 1
    assert sorted(fake.results) == [1]


def test_stop_request_during_a_unit_finishes_and_uploads_it(tmp_path, caplog):
    fake = FakeCoordinator(units=[(0, [1, 2]), (0, [3])])
    worker = make_worker(fake, tmp_path)

    def stop_while_computing(request):
        if request.url.path.startswith("/api/v1/weights/"):
            worker.stop.request()  # as the first Ctrl+C would, mid-unit

    fake.on_request = stop_while_computing
    assert worker.run() == EXIT_OK
    assert sorted(fake.results) == [1]  # the unit in hand was uploaded, no new one claimed
    assert fake.released == []


def test_second_stop_releases_the_lease_and_quits_at_once(tmp_path):
    fake = FakeCoordinator(units=[(0, [1, 2]), (0, [3])])
    worker = make_worker(fake, tmp_path)

    def force_while_computing(request):
        if request.url.path.startswith("/api/v1/weights/"):
            raise ForceStop()  # what the second Ctrl+C raises in the main thread

    fake.on_request = force_while_computing
    assert worker.run() == EXIT_FORCED
    assert fake.released == [1] and fake.results == {}


def test_heartbeats_keep_a_short_lease_alive_during_a_slow_unit(tmp_path, monkeypatch):
    fake = FakeCoordinator(units=[(0, [1])], lease_seconds=1.5)
    worker = make_worker(fake, tmp_path)
    real_load = BuiltinFaces.load

    def slow_load(self, indices):
        import time

        time.sleep(1.5)
        return real_load(self, indices)

    monkeypatch.setattr(BuiltinFaces, "load", slow_load)
    assert worker.run() == EXIT_OK
    assert fake.heartbeats >= 2 and sorted(fake.results) == [1]


def test_a_mode_this_version_does_not_know_is_a_clear_error(tmp_path, caplog):
    caplog.set_level(logging.INFO, "worker_client")
    fake = FakeCoordinator(units=[(0, [1])])
    original = fake._claim

    def future_claim():
        response = original()
        old, new = b'"result_kind":"synchronous"', b'"result_kind":"a_future_mode"'
        body = response.content.replace(old, new)
        return type(response)(response.status_code, content=body)

    fake._claim = future_claim  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="update gan-worker"):
        make_worker(fake, tmp_path).run()


def test_before_the_run_starts_the_worker_waits_quietly(tmp_path, caplog):
    caplog.set_level(logging.INFO, "worker_client")
    fake = FakeCoordinator(units=[(0, [1])])
    original, calls = fake._claim, []

    def no_run_yet():
        calls.append(1)
        if len(calls) <= 3:
            return httpx.Response(404, json={"detail": "No run yet", "code": "no_run"})
        return original()

    fake._claim = no_run_yet  # type: ignore[method-assign]
    assert make_worker(fake, tmp_path).run() == EXIT_OK
    text = messages(caplog)
    assert text.count("No training run has started yet") == 1 and "answered" not in text
    assert sorted(fake.results) == [1]


def test_ctrl_c_while_the_coordinator_is_unreachable_at_start_exits_0(tmp_path):
    fake = FakeCoordinator()
    worker = make_worker(fake, tmp_path)

    def down(request):
        worker.stop.request()  # Ctrl+C while the worker retries its registration
        raise httpx.ConnectError("[Errno 111] Connection refused")

    fake.on_request = down
    assert worker.run() == EXIT_OK


def test_a_second_worker_with_the_same_identity_is_told_to_pick_another_name(tmp_path):
    import os

    store = IdentityStore(tmp_path)
    with store.in_use(URL, "ada"):
        (lock,) = (tmp_path / "running").glob("*.pid")
        lock.write_text(str(os.getppid()))
        with pytest.raises(ConfigError, match="its own --name"):
            make_worker(FakeCoordinator(), tmp_path).run()
