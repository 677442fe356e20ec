"""A result's ``accepted_at`` defaults to the database's clock at its insert.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

A result row is now written by a binary COPY (``ResultsRepo.accept``: its 13 MB body
streamed without stopping the event loop), and a COPY cannot call a function for one
column; it fills a column it leaves out with the column's default. ``now()`` is the
time the accepting transaction began, before it waited for the run's lock;
``clock_timestamp()`` is the moment of the insert, which is what the INSERT stored
until now (the recent-norms window and the dashboard order results by it).
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE results ALTER COLUMN accepted_at SET DEFAULT clock_timestamp()")


def downgrade() -> None:
    op.execute("ALTER TABLE results ALTER COLUMN accepted_at SET DEFAULT now()")
