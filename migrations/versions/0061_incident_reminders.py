"""incident reminders (sent reminders and snoozes, issue 20 section 2)

Revision ID: 0061
Revises: 0063
Create Date: 2026-12-03 16:15:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0061'
down_revision = '0063'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('incident_reminders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('incident_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ),
    sa.ForeignKeyConstraint(['message_id'], ['incident_messages.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('incident_id', 'kind', 'due_at', name='uq_incident_reminders_due')
    )
    with op.batch_alter_table('incident_reminders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_incident_reminders_incident_id'), ['incident_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('incident_reminders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incident_reminders_incident_id'))
    op.drop_table('incident_reminders')
