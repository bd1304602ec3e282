"""Initial registry schema: every table of models_registry.tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 12:22:31.490909
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('tenants',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('name', name=op.f('uq_tenants_name'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_api_keys_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('format', sa.String(length=32), nullable=False),
    sa.Column('catalog', sa.String(length=200), nullable=True),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('stages', sa.JSON(), nullable=False),
    sa.Column('checkpoint_path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_detail', sa.Text(), nullable=True),
    sa.Column('load_report', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('validated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_models_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_sha256'), ['sha256'], unique=False)
        batch_op.create_index('ix_models_status', ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_models_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('pilot_sets',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('layout', sa.String(length=16), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('num_foreground', sa.Integer(), nullable=False),
    sa.Column('channels', sa.JSON(), nullable=False),
    sa.Column('storage_path', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_pilot_sets_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pilot_sets'))
    )
    with op.batch_alter_table('pilot_sets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pilot_sets_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('model_scores',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('pilot_set_id', sa.String(length=40), nullable=False),
    sa.Column('model_id', sa.String(length=40), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('grtd', sa.Float(), nullable=False),
    sa.Column('lbtc', sa.Float(), nullable=False),
    sa.Column('baselines', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('checkpoint_sha256', sa.String(length=64), nullable=False),
    sa.Column('code_version', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_scores_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pilot_set_id'], ['pilot_sets.id'], name=op.f('fk_model_scores_pilot_set_id_pilot_sets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_scores')),
    sa.UniqueConstraint('pilot_set_id', 'model_id', 'config_hash', name='uq_model_scores_key')
    )
    with op.batch_alter_table('model_scores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_scores_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_scores_pilot_set_id'), ['pilot_set_id'], unique=False)

    op.create_table('pilot_cases',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('pilot_set_id', sa.String(length=40), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=False),
    sa.Column('spacing', sa.JSON(), nullable=False),
    sa.Column('voxels_per_class', sa.JSON(), nullable=False),
    sa.Column('n_channels', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['pilot_set_id'], ['pilot_sets.id'], name=op.f('fk_pilot_cases_pilot_set_id_pilot_sets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pilot_cases'))
    )
    with op.batch_alter_table('pilot_cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pilot_cases_pilot_set_id'), ['pilot_set_id'], unique=False)

    op.create_table('ranking_jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('pilot_set_id', sa.String(length=40), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('fusion', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['pilot_set_id'], ['pilot_sets.id'], name=op.f('fk_ranking_jobs_pilot_set_id_pilot_sets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_ranking_jobs_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ranking_jobs')),
    sa.UniqueConstraint('tenant_id', 'idempotency_key', name='uq_ranking_jobs_idempotency')
    )
    with op.batch_alter_table('ranking_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ranking_jobs_pilot_set_id'), ['pilot_set_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ranking_jobs_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('evaluations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('ranking_id', sa.String(length=40), nullable=False),
    sa.Column('truth', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ranking_id'], ['ranking_jobs.id'], name=op.f('fk_evaluations_ranking_id_ranking_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations'))
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_ranking_id'), ['ranking_id'], unique=False)

    op.create_table('ranking_items',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('ranking_id', sa.String(length=40), nullable=False),
    sa.Column('model_id', sa.String(length=40), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=True),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('score_id', sa.String(length=40), nullable=True),
    sa.Column('reused', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_detail', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_ranking_items_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['ranking_id'], ['ranking_jobs.id'], name=op.f('fk_ranking_items_ranking_id_ranking_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['score_id'], ['model_scores.id'], name=op.f('fk_ranking_items_score_id_model_scores'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ranking_items')),
    sa.UniqueConstraint('ranking_id', 'model_id', name='uq_ranking_items_ranking_model')
    )
    with op.batch_alter_table('ranking_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ranking_items_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ranking_items_ranking_id'), ['ranking_id'], unique=False)
        batch_op.create_index('ix_ranking_items_status', ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ranking_items', schema=None) as batch_op:
        batch_op.drop_index('ix_ranking_items_status')
        batch_op.drop_index(batch_op.f('ix_ranking_items_ranking_id'))
        batch_op.drop_index(batch_op.f('ix_ranking_items_model_id'))

    op.drop_table('ranking_items')
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_ranking_id'))

    op.drop_table('evaluations')
    with op.batch_alter_table('ranking_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ranking_jobs_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_ranking_jobs_pilot_set_id'))

    op.drop_table('ranking_jobs')
    with op.batch_alter_table('pilot_cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pilot_cases_pilot_set_id'))

    op.drop_table('pilot_cases')
    with op.batch_alter_table('model_scores', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_scores_pilot_set_id'))
        batch_op.drop_index(batch_op.f('ix_model_scores_model_id'))

    op.drop_table('model_scores')
    with op.batch_alter_table('pilot_sets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pilot_sets_tenant_id'))

    op.drop_table('pilot_sets')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_tenant_id'))
        batch_op.drop_index('ix_models_status')
        batch_op.drop_index(batch_op.f('ix_models_sha256'))

    op.drop_table('models')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenant_id'))

    op.drop_table('api_keys')
    op.drop_table('tenants')
