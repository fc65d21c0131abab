"""Schema migrations with Alembic, configured in code so no alembic.ini is needed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaOutdated(Exception):
    """The database schema is not at the revision this code needs."""

    def __init__(self, current: tuple[str, ...], expected: tuple[str, ...], *, newer: bool = False) -> None:
        current_text = ", ".join(current) or "empty (no migrations applied)"
        if newer:
            advice = "a newer version migrated it, so run that version or a later one"
        else:
            advice = "run `topmail-tracking migrate` with the same --database-url to upgrade it"
        super().__init__(
            f"database schema is at revision {current_text}, but this version needs {', '.join(expected)}; {advice}"
        )
        self.current = current
        self.expected = expected


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def expected_revisions() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(_alembic_config()).get_heads()))


def current_revisions(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as connection:
        return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def upgrade_to_latest(engine: Engine) -> tuple[str, ...]:
    """Apply every pending migration and return the revision the database is now at."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return current_revisions(engine)


def ensure_schema_current(engine: Engine) -> None:
    """Raise SchemaOutdated unless the database is exactly at the latest revision."""
    current = current_revisions(engine)
    expected = expected_revisions()
    if current != expected:
        known = {script.revision for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}
        raise SchemaOutdated(current, expected, newer=any(revision not in known for revision in current))
