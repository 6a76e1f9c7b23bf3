"""console bell: when each user last read it

Revision ID: 0042
Revises: 0041
Create Date: 2026-12-03 14:35:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0042'
down_revision = '0041'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bell_reads',
    sa.Column('user', sa.String(length=200), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user')
    )


def downgrade() -> None:
    op.drop_table('bell_reads')
