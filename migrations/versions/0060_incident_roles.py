"""incident roles: comms and scribe beside commander, and the names holders were given

Revision ID: 0060
Revises: 0064
Create Date: 2026-12-03 16:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0060'
down_revision = '0064'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('comms', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('scribe', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('role_names', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_column('role_names')
        batch_op.drop_column('scribe')
        batch_op.drop_column('comms')
