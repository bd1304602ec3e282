"""The registry: SQLAlchemy tables, engine/session helpers and the zoo catalog.

Torch-free; imported by the API, the worker, the CLI and the alembic migrations.
"""
