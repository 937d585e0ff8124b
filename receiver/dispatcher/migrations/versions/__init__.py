"""One module per revision, oldest first; alembic skips this file."""
