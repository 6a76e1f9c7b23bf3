"""event occurrences (routing rules min_occurrences within a window)

Revision ID: 0051
Revises: 0050
Create Date: 2026-12-03 14:48:36.948554
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0051'
down_revision = '0050'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_occurrences',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('event_occurrences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_occurrences_key'), ['key'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('event_occurrences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_occurrences_key'))

    op.drop_table('event_occurrences')
