"""Which fold consumed each result, and how stale a fold's results were.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

With a barrier every result is folded into the version it was computed at, so the
replay found a version's results by their ``iteration``. An asynchronous run folds a
result computed at version v into a later version t; ``folded_version`` records t, so a
restarted aggregator replays each fold from exactly the results it consumed.
``history.staleness`` is how many versions old the fold's oldest result was (0 with a
barrier): what the dashboard shows of an asynchronous run.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE results ADD COLUMN folded_version integer")
    op.execute("UPDATE results SET folded_version = iteration WHERE consumed_at IS NOT NULL")
    op.execute(
        "CREATE INDEX results_folded ON results (run_id, folded_version) "
        "WHERE folded_version IS NOT NULL"
    )
    op.execute("ALTER TABLE history ADD COLUMN staleness integer NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE history DROP COLUMN staleness")
    op.execute("DROP INDEX results_folded")
    op.execute("ALTER TABLE results DROP COLUMN folded_version")
