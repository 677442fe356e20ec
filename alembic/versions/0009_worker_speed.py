"""Each worker's measured speed, for dynamic local updates.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

A run with ``unit_seconds`` sizes each claim to the worker's speed. The coordinator
measures it, never asks: every accepted result updates ``images_per_second``, a moving
average of the result's images over the time since the later of its lease's start and
the worker's previous result (``last_result_at``), so a worker that claims ahead is
timed by its results' pace, not by how early it claimed.

Such a claim joins units never leased before, and deletes the ones it joins: both look
leases and results up by unit, which now have an index for it.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE workers ADD COLUMN images_per_second double precision")
    op.execute("ALTER TABLE workers ADD COLUMN last_result_at timestamptz")
    op.execute("CREATE INDEX leases_unit ON leases (unit_id)")
    op.execute("CREATE INDEX results_unit ON results (unit_id)")


def downgrade() -> None:
    op.execute("DROP INDEX results_unit")
    op.execute("DROP INDEX leases_unit")
    op.execute("ALTER TABLE workers DROP COLUMN last_result_at")
    op.execute("ALTER TABLE workers DROP COLUMN images_per_second")
