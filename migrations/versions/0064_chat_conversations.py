"""chat conversations: a person's 1:1 conversation reference per chat platform (Teams DMs)

Revision ID: 0064
Revises: 0061
Create Date: 2026-12-03 16:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0064'
down_revision = '0061'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('chat_conversations',
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('reference', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('platform', 'user_id')
    )


def downgrade() -> None:
    op.drop_table('chat_conversations')
