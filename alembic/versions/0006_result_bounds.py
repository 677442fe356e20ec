"""Bounded results: each accepted result's norms, and a run's training problem.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A result is refused when its norms stray far from those of the run's recent accepted
results of the same kind, so every accepted result keeps its norms: ``norms[1]`` is the
global L2 norm, ``norms[2:]`` one per tensor in the result layout's order. ``runs.problem``
says why the aggregator cannot advance a run (e.g. a stored state holding Inf), so
/healthz and the dashboard show it instead of a silent retry loop.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE results ADD COLUMN norms real[]")
    op.execute(
        "CREATE INDEX results_recent_norms ON results (run_id, kind, accepted_at DESC) "
        "WHERE norms IS NOT NULL"
    )
    op.execute("ALTER TABLE runs ADD COLUMN problem text")


def downgrade() -> None:
    op.execute("ALTER TABLE runs DROP COLUMN problem")
    op.execute("DROP INDEX results_recent_norms")
    op.execute("ALTER TABLE results DROP COLUMN norms")
