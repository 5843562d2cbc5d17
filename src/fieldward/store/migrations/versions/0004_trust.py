"""trust: enrollment groups, device identities, enrollment tokens, issued certificates

(fieldward.store.trust_models) trust_groups: enrollment groups and their defaults; trust_devices: device
identities and the quarantine flag; trust_enrollment_tokens: hashed one-time bootstrap tokens;
trust_certificates: every certificate the FieldWard CA issued and its revocation (CRL, OCSP).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 13:06:34.554586
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trust_certificates",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("profile", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "profile IN ('device', 'sensor', 'console')", name=op.f("ck_trust_certificates_profile")
        ),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_trust_certificates")),
    )
    with op.batch_alter_table("trust_certificates", schema=None) as batch_op:
        batch_op.create_index("ix_trust_certificates_device_id", ["device_id"], unique=False)
        batch_op.create_index("ix_trust_certificates_not_after", ["not_after"], unique=False)
        batch_op.create_index("ix_trust_certificates_revoked_at", ["revoked_at"], unique=False)

    op.create_table(
        "trust_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("policy", sa.String(length=128), nullable=True),
        sa.Column("update_channel", sa.String(length=64), nullable=False),
        sa.Column("device_type", sa.String(length=64), nullable=True),
        sa.Column("validity_hours", sa.Integer(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_trust_groups_name")),
    )
    op.create_table(
        "trust_devices",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("device_type", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("firmware", sa.String(length=128), nullable=True),
        sa.Column("bootstrap", sa.String(length=16), nullable=False),
        sa.Column("quarantined", sa.Boolean(), nullable=False),
        sa.Column("quarantine_reason", sa.Text(), nullable=True),
        sa.Column("enrolled", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_issued", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["trust_groups.id"],
            name=op.f("fk_trust_devices_group_id_trust_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_devices")),
        sa.UniqueConstraint("device_id", name=op.f("uq_trust_devices_device_id")),
    )
    op.create_table(
        "trust_enrollment_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by", sa.String(length=128), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["trust_groups.id"],
            name=op.f("fk_trust_enrollment_tokens_group_id_trust_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_enrollment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_trust_enrollment_tokens_token_hash")),
    )
    with op.batch_alter_table("trust_enrollment_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_trust_enrollment_tokens_expires", ["expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trust_enrollment_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_trust_enrollment_tokens_expires")

    op.drop_table("trust_enrollment_tokens")
    op.drop_table("trust_devices")
    op.drop_table("trust_groups")
    with op.batch_alter_table("trust_certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_trust_certificates_revoked_at")
        batch_op.drop_index("ix_trust_certificates_not_after")
        batch_op.drop_index("ix_trust_certificates_device_id")

    op.drop_table("trust_certificates")
