"""message payloads: a message's Notification stored once, not on every delivery row

Revision ID: 0065
Revises: 0062
Create Date: 2026-12-03 18:20:00

Existing delivery rows keep their whole payload (payload_id NULL); new rows hold only their own keys.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0065'
down_revision = '0062'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('message_payloads',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('message_id', _ID, nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['incident_messages.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('message_payloads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_payloads_message_id'), ['message_id'], unique=False)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload_id', _ID, nullable=True))
        batch_op.create_foreign_key('fk_deliveries_payload_id', 'message_payloads', ['payload_id'], ['id'])


def downgrade() -> None:
    # Rows written since hold only their own keys: give each its whole payload back before dropping the table.
    deliveries = sa.table('deliveries', sa.column('id', _ID), sa.column('payload', sa.JSON()),
                          sa.column('payload_id', _ID))
    payloads = sa.table('message_payloads', sa.column('id', _ID), sa.column('payload', sa.JSON()))
    conn = op.get_bind()
    rows = conn.execute(sa.select(deliveries.c.id, deliveries.c.payload, payloads.c.payload.label('shared'))
                        .join(payloads, payloads.c.id == deliveries.c.payload_id)).all()
    if rows:
        conn.execute(deliveries.update().where(deliveries.c.id == sa.bindparam('b_id'))
                     .values(payload=sa.bindparam('b_payload', type_=sa.JSON())),
                     [{'b_id': r.id, 'b_payload': {**(r.shared or {}), **(r.payload or {})}} for r in rows])
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('fk_deliveries_payload_id', type_='foreignkey')
        batch_op.drop_column('payload_id')
    with op.batch_alter_table('message_payloads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_payloads_message_id'))
    op.drop_table('message_payloads')
