"""incident flapping mark (held open until stable; core/flapping.py)

Revision ID: 0063
Revises: 0051
Create Date: 2026-12-03 16:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0063'
down_revision = '0051'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('flapping', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('flapping_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_incidents_flapping_until'), ['flapping_until'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incidents_flapping_until'))
        batch_op.drop_column('flapping_until')
        batch_op.drop_column('flapping')
