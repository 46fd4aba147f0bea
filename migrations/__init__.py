"""Alembic migrations; located through this package so they ship with the wheel."""

HEAD = "0010"
"""The newest revision, which a database must be at to run (component.db); a new
migration changes it (tests/storage/test_store.py checks it against Alembic's)."""
