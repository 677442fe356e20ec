"""A version's weights may be stored just after it is published.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08

The step transaction now commits a version's ``run_states`` row with its ETag but
without its 25 MB of weights, which the aggregator writes right after the commit
(beside the next fold): the write was most of the time from a version's last result to
its publication on a slower machine (docs/coordinator.md). Until they are written the
aggregator's process serves them from memory and the others wait for the row; a
coordinator killed in between writes them again from the version's results, which
stay stored until a later checkpoint.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE run_states ALTER COLUMN weights DROP NOT NULL")


def downgrade() -> None:
    # Such a row is a version the older code cannot serve or rebuild: refuse rather than
    # lose it. Starting this version's coordinator once writes every one of them.
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM run_states WHERE weights IS NULL) THEN "
        "RAISE EXCEPTION 'some published weights are not stored yet: start the "
        "coordinator once (its aggregator writes them), stop it, then downgrade'; "
        "END IF; END $$"
    )
    op.execute("ALTER TABLE run_states ALTER COLUMN weights SET NOT NULL")
