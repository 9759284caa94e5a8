"""ledger writer: member revisions, per-day rule uses, revoked vouchers, redemption keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:38:35.404992

* ``members.revision`` moves on with every change of a member's books, so a write that read the
  member without a lock can check that nothing changed in between.
* Per-day rule uses get a row per day (``rule_day_uses``): ``rule_uses`` kept only the last day, so
  a receipt posted late for an earlier day saw no uses and reset the next day's count.
* A voucher can be ``revoked`` (its stamps were returned before it was used).
* Redemptions carry the till's id for them, unique per outlet: a retry books once.
* PostgreSQL: ``loyalty_assert`` lets the ledger's one-statement writes abort themselves.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ASSERT_FUNCTION = """
CREATE OR REPLACE FUNCTION loyalty_assert(ok boolean, code text, message text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
    END IF;
    RETURN true;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "rule_day_uses",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("uses >= 0", name=op.f("ck_rule_day_uses_not_negative")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "member_id"],
            ["members.tenant_id", "members.id"],
            name="fk_rule_day_uses_tenant_id_member_id_members",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_rule_day_uses_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_day_uses")),
        sa.UniqueConstraint(
            "tenant_id",
            "member_id",
            "rule_id",
            "day",
            name=op.f("uq_rule_day_uses_tenant_id_member_id_rule_id_day"),
        ),
    )
    # The last day each rule was used on is all the old table knew of days.
    op.execute(
        "INSERT INTO rule_day_uses (tenant_id, member_id, rule_id, day, uses)"
        " SELECT tenant_id, member_id, rule_id, day, day_uses FROM rule_uses WHERE day_uses > 0"
    )
    with op.batch_alter_table("rule_uses", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_rule_uses_not_negative"), type_="check")
        batch_op.drop_column("day_uses")
        batch_op.drop_column("day")
        batch_op.create_check_constraint("not_negative", "uses >= 0")

    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("revision", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )

    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_id", sa.String(length=300), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_redemptions_tenant_id_outlet_id_external_id"),
            ["tenant_id", "outlet_id", "external_id"],
        )

    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_vouchers_status"), type_="check")
        batch_op.create_check_constraint("status", "status IN ('issued', 'used', 'revoked')")

    if op.get_bind().dialect.name == "postgresql":
        op.execute(ASSERT_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS loyalty_assert(boolean, text, text)")
    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_vouchers_status"), type_="check")
        batch_op.create_check_constraint("status", "status IN ('issued', 'used')")
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_redemptions_tenant_id_outlet_id_external_id"), type_="unique")
        batch_op.drop_column("external_id")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("revision")
    with op.batch_alter_table("rule_uses", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_rule_uses_not_negative"), type_="check")
        batch_op.add_column(sa.Column("day", sa.Date(), nullable=False, server_default="1970-01-01"))
        batch_op.add_column(sa.Column("day_uses", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.create_check_constraint("not_negative", "uses >= 0 AND day_uses >= 0")
    op.drop_table("rule_day_uses")
