"""Alembic environment: runs migrations on the connection that the service hands over."""

from alembic import context
from sqlalchemy.engine import Connection

from server.adapters.database.schema import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `topmail-tracking migrate`, which passes the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most constraints in place; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
