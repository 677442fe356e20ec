"""Indexes for the dashboard's polling: results accepted recently, per run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Every open dashboard (a projector and, often, every student's phone) asks /status
every few seconds, and /status sums the images accepted in the last five minutes. The
results table keeps a row per accepted result for the whole run, so without this index
that sum reads all of them each time.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX results_run_accepted ON results (run_id, accepted_at)")


def downgrade() -> None:
    op.execute("DROP INDEX results_run_accepted")
