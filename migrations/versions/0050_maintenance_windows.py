"""maintenance windows and the events they suppressed

Revision ID: 0050
Revises: 0042
Create Date: 2026-12-03 14:09:02.116354
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0050'
down_revision = '0042'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('maintenance_windows',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_by', sa.String(length=200), nullable=True),
    sa.Column('match', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('schedule_key', sa.String(length=300), nullable=True),
    sa.Column('suppressed', sa.BigInteger(), nullable=False),
    sa.Column('paused', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('schedule_key')
    )
    with op.batch_alter_table('maintenance_windows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_maintenance_windows_ended_at'), ['ended_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_maintenance_windows_ends_at'), ['ends_at'], unique=False)

    op.create_table('maintenance_suppressed',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('window_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_type', sa.String(length=200), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=True),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['window_id'], ['maintenance_windows.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('maintenance_suppressed', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_maintenance_suppressed_window_id'), ['window_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('maintenance_suppressed', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_maintenance_suppressed_window_id'))

    op.drop_table('maintenance_suppressed')
    with op.batch_alter_table('maintenance_windows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_maintenance_windows_ends_at'))
        batch_op.drop_index(batch_op.f('ix_maintenance_windows_ended_at'))

    op.drop_table('maintenance_windows')
