"""Spot checks: some accepted results are recomputed by a second worker and compared.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

``spot_checks`` holds one row per checked result: open until a check lease (a lease
with ``check_of`` set, which outlives steps) brings the second computation, then
agreed or disagreed with the relative distance measured. A worker whose results
disagreed with two different partners is flagged (``workers.flagged_at``); the
instructor clears the flag (``flag_cleared_at`` starts its count again) or revokes.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE spot_checks (
            check_id bigserial PRIMARY KEY,
            run_id bigint NOT NULL REFERENCES runs ON DELETE CASCADE,
            result_lease_id uuid NOT NULL UNIQUE REFERENCES results (lease_id) ON DELETE CASCADE,
            unit_id bigint NOT NULL REFERENCES work_units ON DELETE CASCADE,
            iteration integer NOT NULL,
            worker_id bigint NOT NULL REFERENCES workers ON DELETE CASCADE,
            status text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'leased', 'agreed', 'disagreed', 'lapsed')),
            checker_lease_id uuid UNIQUE REFERENCES leases ON DELETE SET NULL,
            checker_worker_id bigint REFERENCES workers ON DELETE SET NULL,
            distance double precision,
            created_at timestamptz NOT NULL DEFAULT now(),
            decided_at timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX spot_checks_open ON spot_checks (run_id, check_id) WHERE status = 'open'"
    )
    op.execute("CREATE INDEX spot_checks_worker ON spot_checks (worker_id)")
    op.execute("CREATE INDEX spot_checks_checker ON spot_checks (checker_worker_id)")
    op.execute("ALTER TABLE leases ADD COLUMN check_of uuid")
    op.execute("CREATE INDEX leases_check_of ON leases (check_of) WHERE check_of IS NOT NULL")
    op.execute("ALTER TABLE workers ADD COLUMN flagged_at timestamptz")
    op.execute("ALTER TABLE workers ADD COLUMN flag_reason text")
    op.execute("ALTER TABLE workers ADD COLUMN flag_cleared_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE workers DROP COLUMN flag_cleared_at")
    op.execute("ALTER TABLE workers DROP COLUMN flag_reason")
    op.execute("ALTER TABLE workers DROP COLUMN flagged_at")
    op.execute("DROP INDEX leases_check_of")
    op.execute("ALTER TABLE leases DROP COLUMN check_of")
    op.execute("DROP TABLE spot_checks")
