"""Results remember their size: the dashboard's bytes received per trained image.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

A result's ``body`` is set to NULL once a step consumed it, so its size has to be kept
on its own. Rows accepted before this revision know it only while their body is still
there; the others stay NULL and are left out of the ratio.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE results ADD COLUMN body_bytes bigint")
    op.execute("UPDATE results SET body_bytes = octet_length(body) WHERE body IS NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE results DROP COLUMN body_bytes")
