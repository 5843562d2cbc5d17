"""trust challenges: attestation nonces in the database, device attributes, rejected link proposals

(fieldward.store.trust_models) trust_challenges: pending attestation nonces shared by every console
worker, consumed once by a conditional UPDATE; trust_device_attributes: serial numbers and MAC
addresses of device identities (from the IDevID, the CSR or a provisioning record) matched against
the inventory to propose links; trust_link_rejections: proposals an analyst turned down.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "trust_challenges",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_trust_challenges")),
    )
    op.create_index("ix_trust_challenges_expires", "trust_challenges", ["expires"], unique=False)
    op.create_index("ix_trust_challenges_device_id", "trust_challenges", ["device_id"], unique=False)

    op.create_table(
        "trust_device_attributes",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('mac', 'serial')", name=op.f("ck_trust_device_attributes_kind")),
        sa.CheckConstraint(
            "source IN ('idevid', 'csr', 'provisioning')", name=op.f("ck_trust_device_attributes_source")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_device_attributes")),
        sa.UniqueConstraint(
            "device_id",
            "kind",
            "value",
            "source",
            name=op.f("uq_trust_device_attributes_device_id_kind_value_source"),
        ),
    )
    op.create_index(
        "ix_trust_device_attributes_kind_value", "trust_device_attributes", ["kind", "value"], unique=False
    )

    op.create_table(
        "trust_link_rejections",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("rejected_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_link_rejections")),
        sa.UniqueConstraint(
            "device_id", "kind", "value", name=op.f("uq_trust_link_rejections_device_id_kind_value")
        ),
    )


def downgrade() -> None:
    op.drop_table("trust_link_rejections")
    op.drop_index("ix_trust_device_attributes_kind_value", table_name="trust_device_attributes")
    op.drop_table("trust_device_attributes")
    op.drop_index("ix_trust_challenges_device_id", table_name="trust_challenges")
    op.drop_index("ix_trust_challenges_expires", table_name="trust_challenges")
    op.drop_table("trust_challenges")
