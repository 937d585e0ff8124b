"""The dispatcher's schema history (alembic revisions in ``versions/``), kept apart from the
receiver's, with its own version table (``receiver.dispatcher.schema``):
``receiver dispatcher db upgrade``."""
