"""Pending units indexed by their pool, so a claim finds its version's units at once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

A claim and the step rule look for a pending unit of the version's pool:
``coalesce(pinned_iteration, -1)`` is -1 for the epoch's own units and the version for
the units a synchronous G phase repeats, which are inserted last. The pending index
ordered only by unit id made every G-phase claim walk past the rest of the epoch to
reach them: 30,200 index entries and 5 ms of PostgreSQL per claim on the load bench's
million-image epoch (bench/load_coordinator.py). With the pool as the index's second
key both walks stop at the first unlocked unit.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX work_units_pending")
    op.execute("DROP INDEX work_units_pending_shard")
    op.execute(
        "CREATE INDEX work_units_pending ON work_units "
        "(run_id, (coalesce(pinned_iteration, -1)), unit_id) WHERE status = 'pending'"
    )
    op.execute(
        "CREATE INDEX work_units_pending_shard ON work_units "
        "(run_id, (coalesce(pinned_iteration, -1)), shard, unit_id) WHERE status = 'pending'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX work_units_pending")
    op.execute("DROP INDEX work_units_pending_shard")
    op.execute(
        "CREATE INDEX work_units_pending ON work_units (run_id, unit_id) WHERE status = 'pending'"
    )
    op.execute(
        "CREATE INDEX work_units_pending_shard ON work_units (run_id, shard, unit_id) "
        "WHERE status = 'pending'"
    )
