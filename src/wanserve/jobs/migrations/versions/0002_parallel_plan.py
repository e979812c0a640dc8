"""jobs.parallel_plan: the parallel plan a job runs with and the requested fields it could not honour

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 08:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("parallel_plan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("parallel_plan")
