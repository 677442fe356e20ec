"""Versions without Adam state: the results log replays them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A fold used to write W_t+1 and its whole checkpoint (W_t+1 again, and Adam's two
moments): 100 MB per version at the class model's size. Now a version stores only its
served weights, and the full checkpoint comes at most every ``snapshot_seconds`` (and
every ``checkpoint_every``-th version). Consumed results keep their bodies until a
checkpoint covers them, so a restarted aggregator replays the versions since, bit for
bit (it checks the replayed weights against the stored ones).

Downgrade drops the replay-only rows: the revision before needs Adam state in each.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE run_states ALTER COLUMN checkpoint DROP NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM run_states WHERE checkpoint IS NULL")
    op.execute("ALTER TABLE run_states ALTER COLUMN checkpoint SET NOT NULL")
