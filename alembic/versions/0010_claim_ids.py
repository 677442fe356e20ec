"""Claims that can be repeated: a lease remembers the claim that asked for it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A claim's answer can be lost after its lease is committed: the coordinator's process
killed while it answers, a proxy timing out, Wi-Fi dropping. The worker then claims
again and never hears of the first lease, which its own heartbeats keep alive, so the
unit waits out a backup copy. A worker now sends an id with each claim and the same id
again when it repeats one that got no answer; the coordinator hands back the active
lease granted under that id instead of a second one. At most one active lease per
worker and claim id: a repeat racing the original cannot lease twice.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE leases ADD COLUMN claim_id uuid")
    op.execute(
        "CREATE UNIQUE INDEX leases_active_claim ON leases (worker_id, claim_id) "
        "WHERE status = 'active' AND claim_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX leases_active_claim")
    op.execute("ALTER TABLE leases DROP COLUMN claim_id")
