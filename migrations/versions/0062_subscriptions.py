"""subscriptions: people following an incident or every new incident matching a filter

Revision ID: 0062
Revises: 0060
Create Date: 2026-12-03 16:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0062'
down_revision = '0060'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscriptions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('contact', sa.String(length=200), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('incident_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('severity', sa.String(length=8), nullable=True),
    sa.Column('tenant', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('contact', 'key', name='uq_subscriptions_contact_key')
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriptions_contact'), ['contact'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscriptions_incident_id'), ['incident_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriptions_incident_id'))
        batch_op.drop_index(batch_op.f('ix_subscriptions_contact'))

    op.drop_table('subscriptions')
