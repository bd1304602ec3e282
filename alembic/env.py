"""Alembic environment: target metadata is `models_registry.tables.Base.metadata`.

The URL is `toporank.settings` (TOPORANK_DATABASE_URL, SQLite under TOPORANK_DATA_DIR if unset),
unless a caller passes a live connection in `config.attributes["connection"]` (tests, `toporank serve`).
"""

from __future__ import annotations

from alembic import context

from models_registry.db import make_engine
from models_registry.tables import Base
from toporank.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(url=get_settings().sqlalchemy_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = make_engine(get_settings().sqlalchemy_url, pool_size=1)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
