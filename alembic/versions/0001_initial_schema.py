"""Initial schema: runs, their per-iteration state, work units, leases, results, workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Plain SQL on purpose: an instructor reading this file sees exactly the tables they can
query with psql, and every object created here is dropped again in ``downgrade``.
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE runs (
    run_id               bigserial PRIMARY KEY,
    status               text NOT NULL
                         CHECK (status IN ('active', 'paused', 'finished', 'stopped')),
    config               jsonb NOT NULL,
    iteration            integer NOT NULL DEFAULT 0,
    epoch                integer NOT NULL DEFAULT 0,
    iteration_started_at timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz
);
-- One live (active or paused) run at a time, enforced by the database itself.
CREATE UNIQUE INDEX runs_one_live ON runs ((true)) WHERE status IN ('active', 'paused');

CREATE TABLE run_states (
    run_id       bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    iteration    integer NOT NULL,
    weights      bytea NOT NULL,   -- safetensors W_t (parameters + BatchNorm buffers), served
    weights_etag text NOT NULL,
    checkpoint   bytea NOT NULL,   -- safetensors W_t + Adam state, for the aggregator
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, iteration)
);

CREATE TABLE workers (
    worker_id        bigserial PRIMARY KEY,
    name             text NOT NULL,
    token_hash       text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_heartbeat   timestamptz,
    revoked_at       timestamptz,
    total_images     bigint NOT NULL DEFAULT 0,
    total_work_units bigint NOT NULL DEFAULT 0,
    hostname         text NOT NULL DEFAULT '',
    platform         text NOT NULL DEFAULT '',
    python_version   text NOT NULL DEFAULT '',
    torch_version    text NOT NULL DEFAULT '',
    device           text NOT NULL DEFAULT '',
    device_name      text NOT NULL DEFAULT '',
    cpu_cores        integer NOT NULL DEFAULT 0,
    ram_gb           double precision NOT NULL DEFAULT 0,
    gpu_count        integer NOT NULL DEFAULT 0,
    gpu_vram_gb      double precision NOT NULL DEFAULT 0
);

CREATE TABLE join_codes (
    code       text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE work_units (
    unit_id        bigserial PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    epoch          integer NOT NULL,
    shard          integer NOT NULL,
    image_indices  integer[] NOT NULL,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'leased', 'done')),
    done_iteration integer,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX work_units_pending ON work_units (run_id, unit_id) WHERE status = 'pending';
CREATE INDEX work_units_pending_shard ON work_units (run_id, shard, unit_id)
    WHERE status = 'pending';
CREATE INDEX work_units_leased ON work_units (run_id) WHERE status = 'leased';
CREATE INDEX work_units_run_epoch ON work_units (run_id, epoch, status);

CREATE TABLE leases (
    lease_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    unit_id    bigint NOT NULL REFERENCES work_units ON DELETE CASCADE,
    worker_id  bigint NOT NULL REFERENCES workers ON DELETE CASCADE,
    run_id     bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    iteration  integer NOT NULL,
    is_backup  boolean NOT NULL DEFAULT false,
    status     text NOT NULL DEFAULT 'active'
               CHECK (status IN ('active', 'completed', 'expired', 'released', 'stale',
                                 'superseded', 'revoked')),
    created_at timestamptz NOT NULL DEFAULT now(),
    deadline   timestamptz NOT NULL,
    ended_at   timestamptz
);
CREATE INDEX leases_active_unit ON leases (unit_id) WHERE status = 'active';
CREATE INDEX leases_active_worker ON leases (worker_id) WHERE status = 'active';
CREATE INDEX leases_active_deadline ON leases (deadline) WHERE status = 'active';

CREATE TABLE results (
    lease_id        uuid PRIMARY KEY REFERENCES leases ON DELETE CASCADE,
    unit_id         bigint NOT NULL REFERENCES work_units ON DELETE CASCADE,
    run_id          bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    worker_id       bigint NOT NULL REFERENCES workers ON DELETE CASCADE,
    iteration       integer NOT NULL,
    kind            text NOT NULL,
    num_samples     integer NOT NULL,
    body            bytea,          -- safetensors as uploaded; NULL once consumed by a step
    g_loss          double precision NOT NULL,
    d_loss          double precision NOT NULL,
    d_real_accuracy double precision NOT NULL,
    d_fake_accuracy double precision NOT NULL,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    consumed_at     timestamptz
);
CREATE INDEX results_open ON results (run_id, iteration) WHERE consumed_at IS NULL;

-- Tensors and PNGs do not compress: storing them EXTERNAL skips pglz, which otherwise
-- spends seconds of CPU per 100 MB step trying.
ALTER TABLE run_states ALTER COLUMN weights SET STORAGE EXTERNAL;
ALTER TABLE run_states ALTER COLUMN checkpoint SET STORAGE EXTERNAL;
ALTER TABLE results ALTER COLUMN body SET STORAGE EXTERNAL;

CREATE TABLE history (
    run_id          bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    iteration       integer NOT NULL,   -- the step from this iteration to the next
    epoch           integer NOT NULL,
    g_loss          double precision NOT NULL,
    d_loss          double precision NOT NULL,
    d_real_accuracy double precision NOT NULL,
    d_fake_accuracy double precision NOT NULL,
    num_results     integer NOT NULL,
    num_workers     integer NOT NULL,
    num_images      integer NOT NULL,
    step_seconds    double precision NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, iteration)
);

CREATE TABLE samples (
    run_id     bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
    iteration  integer NOT NULL,
    png        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, iteration)
);
ALTER TABLE samples ALTER COLUMN png SET STORAGE EXTERNAL;
"""

DOWNGRADE = """
DROP TABLE samples;
DROP TABLE history;
DROP TABLE results;
DROP TABLE leases;
DROP TABLE work_units;
DROP TABLE join_codes;
DROP TABLE workers;
DROP TABLE run_states;
DROP TABLE runs;
"""


def _execute(script: str) -> None:
    # One statement per call: the asyncpg driver prepares each statement separately.
    for statement in script.split(";\n"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _execute(UPGRADE)


def downgrade() -> None:
    _execute(DOWNGRADE)
