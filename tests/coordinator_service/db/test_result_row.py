"""An accepted result's row, written by a binary COPY, reads back as it was sent.

``ResultsRepo.accept`` streams the row (``copy_row``) so that a 13 MB body does not stop
the event loop; every column is encoded by hand in PostgreSQL's binary format, so each
one is read back here: the body byte for byte over several 1 MB pieces, the losses
exactly (NULL where a G phase has none), the norms as ``real[]`` (NULL when there are
none). ``accepted_at`` is the
database's clock at the insert (migration 0012), not the start of the transaction,
which may have waited for the run's lock: a step holding that lock makes the
difference measurable.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np

from coordinator_service.db.leases import LeasesRepo
from coordinator_service.db.models import ResultMetrics
from coordinator_service.db.pool import connect
from coordinator_service.db.results import ResultsRepo
from coordinator_service.db.runs import RunsRepo, lock_run_exclusive
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.training.presets import resolve
from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN

STEP_HOLDS_LOCK = 0.3  # seconds


async def test_a_result_row_reads_back_as_sent(database_url: str) -> None:
    conn, stepper = await connect(database_url), await connect(database_url)
    try:
        run = await RunsRepo(conn).create(
            config=resolve(None, NARROW_RUN), weights=b"w0", weights_etag="e0", checkpoint=b"c0",
            units=[(0, [0, 1]), (0, [2, 3])],
        )  # fmt: skip
        worker = await WorkersRepo(conn).register(
            name="ada", token_hash="hash-of-ada", hardware=HardwareInfo()
        )
        leases = LeasesRepo(conn)
        first = (await leases.claim(worker_id=worker.worker_id, cached_shards=[])).unit
        second = (await leases.claim(worker_id=worker.worker_id, cached_shards=[])).unit
        assert first is not None and second is not None
        body = os.urandom(2_500_000)  # three pieces
        norms = [1.5, 0.1, 3e-8, 123456.789]
        metrics = ResultMetrics(g_loss=0.7071, d_loss=1.25e-3, d_real_accuracy=0.5,
                                d_fake_accuracy=1 / 3)  # fmt: skip
        results = ResultsRepo(conn)

        async with stepper.transaction():  # a step holds the run's lock a while
            await lock_run_exclusive(stepper, run.run_id)
            started = await conn.fetchval("SELECT clock_timestamp()")
            accepting = asyncio.create_task(results.accept(
                lease_id=first.lease_id, run_id=run.run_id, worker_id=worker.worker_id,
                kind="d_grad", num_samples=2, body=body, metrics=metrics, norms=norms,
            ))  # fmt: skip
            await asyncio.sleep(STEP_HOLDS_LOCK)
            assert not accepting.done()
        accepted = await accepting
        assert (accepted.unit_id, accepted.iteration, accepted.num_samples) == (
            first.unit_id, 0, 2,
        )
        g_phase = ResultMetrics(g_loss=2.5, d_loss=None, d_real_accuracy=None,
                                d_fake_accuracy=None)  # fmt: skip
        await results.accept(
            lease_id=second.lease_id, run_id=run.run_id, worker_id=worker.worker_id,
            kind="g_grad", num_samples=2, body=b"", metrics=g_phase,
        )  # fmt: skip

        rows = {r["lease_id"]: r for r in await conn.fetch("SELECT * FROM results")}
        row = rows[first.lease_id]
        assert (row["unit_id"], row["run_id"], row["worker_id"], row["iteration"]) == (
            first.unit_id, run.run_id, worker.worker_id, 0,
        )
        assert (row["kind"], row["num_samples"], row["body_bytes"]) == ("d_grad", 2, len(body))
        assert row["body"] == body
        assert (row["g_loss"], row["d_loss"], row["d_real_accuracy"], row["d_fake_accuracy"]) == (
            0.7071, 1.25e-3, 0.5, 1 / 3,
        )
        assert row["norms"] == np.array(norms, dtype=np.float32).tolist()
        assert row["consumed_at"] is None and row["folded_version"] is None
        waited = (row["accepted_at"] - started).total_seconds()
        assert waited >= STEP_HOLDS_LOCK, waited  # now() would be the transaction's start
        empty = rows[second.lease_id]
        assert empty["body"] == b"" and empty["body_bytes"] == 0 and empty["norms"] is None
        assert (empty["kind"], empty["g_loss"], empty["d_loss"], empty["d_fake_accuracy"]) == (
            "g_grad", 2.5, None, None,
        )
        assert empty["accepted_at"] > row["accepted_at"]
        statuses = await conn.fetch("SELECT status FROM leases ORDER BY created_at")
        assert [s["status"] for s in statuses] == ["completed", "completed"]
    finally:
        await conn.close()
        await stepper.close()
