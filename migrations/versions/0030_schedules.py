"""on-call schedules: overrides, handoffs announced once, and deliveries.reason

Revision ID: 0030
Revises: 0021
Create Date: 2026-12-03 14:05:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0030'
down_revision = '0021'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('schedule_overrides',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('schedule', sa.String(length=200), nullable=False),
    sa.Column('contact', sa.String(length=200), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_by', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('schedule_overrides', schema=None) as batch_op:
        batch_op.create_index('ix_schedule_overrides_window', ['schedule', 'ends_at'], unique=False)
    op.create_table('schedule_handoffs',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('schedule', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outgoing', sa.String(length=200), nullable=True),
    sa.Column('incoming', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('schedule', 'at', name='uq_schedule_handoffs_schedule_at')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('reason')
    op.drop_table('schedule_handoffs')
    with op.batch_alter_table('schedule_overrides', schema=None) as batch_op:
        batch_op.drop_index('ix_schedule_overrides_window')
    op.drop_table('schedule_overrides')
