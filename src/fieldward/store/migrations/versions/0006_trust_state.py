"""trust state: attestation verdicts, failure reports, inventory links, running versions

(fieldward.store.trust_models) trust_verdicts: the newest verdict per device; trust_failure_reports and
trust_failure_devices: failure reports aggregated per (model, firmware, signature) and their distinct
devices; trust_device_links: device identity <-> inventory device (row id, MAC or serial);
trust_device_versions: running version and update status per device.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "trust_verdicts",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("firmware_version", sa.String(length=128), nullable=True),
        sa.Column("authentic", sa.Boolean(), nullable=False),
        sa.Column("tpm_quote", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "verdict IN ('healthy', 'unknown', 'compromised', 'outdated')",
            name=op.f("ck_trust_verdicts_verdict"),
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_trust_verdicts")),
    )
    op.create_index("ix_trust_verdicts_verdict", "trust_verdicts", ["verdict"], unique=False)

    op.create_table(
        "trust_failure_reports",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("firmware", sa.String(length=128), nullable=False),
        sa.Column("signature", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("component", sa.String(length=128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_failure_reports")),
        sa.UniqueConstraint(
            "model", "firmware", "signature", name=op.f("uq_trust_failure_reports_model_firmware_signature")
        ),
    )
    op.create_index("ix_trust_failure_reports_count", "trust_failure_reports", ["count"], unique=False)

    op.create_table(
        "trust_failure_devices",
        sa.Column("report_id", _BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["trust_failure_reports.id"],
            name=op.f("fk_trust_failure_devices_report_id_trust_failure_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", "device_id", name=op.f("pk_trust_failure_devices")),
    )

    op.create_table(
        "trust_device_links",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('inventory', 'mac', 'serial')", name=op.f("ck_trust_device_links_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_device_links")),
        sa.UniqueConstraint(
            "device_id", "kind", "value", name=op.f("uq_trust_device_links_device_id_kind_value")
        ),
    )
    op.create_index("ix_trust_device_links_kind_value", "trust_device_links", ["kind", "value"], unique=False)

    op.create_table(
        "trust_device_versions",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("running_version", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("newest_version", sa.String(length=128), nullable=True),
        sa.Column("releases_behind", sa.Integer(), nullable=False),
        sa.Column("days_behind", sa.Integer(), nullable=True),
        sa.Column("outdated", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_trust_device_versions")),
    )
    op.create_index("ix_trust_device_versions_outdated", "trust_device_versions", ["outdated"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_trust_device_versions_outdated", table_name="trust_device_versions")
    op.drop_table("trust_device_versions")
    op.drop_index("ix_trust_device_links_kind_value", table_name="trust_device_links")
    op.drop_table("trust_device_links")
    op.drop_table("trust_failure_devices")
    op.drop_index("ix_trust_failure_reports_count", table_name="trust_failure_reports")
    op.drop_table("trust_failure_reports")
    op.drop_index("ix_trust_verdicts_verdict", table_name="trust_verdicts")
    op.drop_table("trust_verdicts")
