"""The receiver's schema history (alembic revisions in ``versions/``), run by
``receiver.store.schema`` through ``receiver.store.migrate``: ``receiver db upgrade``."""
