"""console triage: alert rules, site risk snapshots, settings (fieldward.console.triage_models)

alert_rules: learned / muted alert rules the sensors pull; site_risk_snapshots: one site score per
day and scope (the risk trend); console_settings: forwarding and retention set by an administrator.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 12:40:05.160558
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_console_settings")),
    )
    op.create_table(
        "site_risk_snapshots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sensor_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("by_priority", sa.JSON(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_risk_snapshots")),
        sa.UniqueConstraint("sensor_id", "day", name=op.f("uq_site_risk_snapshots_sensor_id_day")),
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sensor_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("alert_type", sa.String(length=128), nullable=False),
        sa.Column("src", sa.String(length=255), nullable=False),
        sa.Column("dst", sa.String(length=255), nullable=False),
        sa.Column("behaviours", sa.JSON(), nullable=False),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('learned', 'muted')", name=op.f("ck_alert_rules_kind")),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_rules_alert_id_alerts"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["sensor_id"], ["sensors.id"], name=op.f("fk_alert_rules_sensor_id_sensors"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
        sa.UniqueConstraint(
            "sensor_id",
            "kind",
            "alert_type",
            "src",
            "dst",
            name=op.f("uq_alert_rules_sensor_id_kind_alert_type_src_dst"),
        ),
    )
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.create_index("ix_alert_rules_created", ["created"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_rules_created")

    op.drop_table("alert_rules")
    op.drop_table("site_risk_snapshots")
    op.drop_table("console_settings")
