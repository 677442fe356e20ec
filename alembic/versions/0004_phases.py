"""Synchronous phases: units that repeat the previous version's, metrics a phase lacks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A synchronous iteration is two versions, a D phase then a G phase over the same units
(the same images' noise). The G phase's units are copies of the D phase's consumed
ones, claimable only at that version: ``pinned_iteration``. A D phase computes no G
loss of its own and a G phase no D loss, so the per-result and per-fold metric columns
may be NULL.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_METRICS = ("g_loss", "d_loss", "d_real_accuracy", "d_fake_accuracy")


def upgrade() -> None:
    op.execute("ALTER TABLE work_units ADD COLUMN pinned_iteration integer")
    op.execute(
        "CREATE INDEX work_units_pinned ON work_units (run_id, pinned_iteration) "
        "WHERE pinned_iteration IS NOT NULL"
    )
    for table in ("results", "history"):
        for column in _METRICS:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM work_units WHERE pinned_iteration IS NOT NULL")
    op.execute("DROP INDEX work_units_pinned")
    op.execute("ALTER TABLE work_units DROP COLUMN pinned_iteration")
    for table in ("results", "history"):
        for column in _METRICS:
            op.execute(f"UPDATE {table} SET {column} = 'NaN' WHERE {column} IS NULL")
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL")
