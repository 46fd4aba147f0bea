"""Alembic migrations; located through this package so they ship with the wheel."""
