"""Engine and session helpers shared by the API, the worker and the CLI.

SQLite (the embedded default) gets WAL journaling and a busy timeout so that the API and the
worker process can write to the same file; PostgreSQL gets a pre-pinged pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None, echo: bool = False) -> Engine:
    """Create an engine for `url`; creates the parent folder of a SQLite file. A server database
    gets `pool_size` pooled connections plus `max_overflow` (default 2 x pool_size) more at peaks."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    overflow = 2 * pool_size if max_overflow is None else max_overflow
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=pool_size, max_overflow=overflow)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
