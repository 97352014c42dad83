"""Storage of a log through SQLAlchemy 2: SQLite (default), PostgreSQL (psycopg 3) and MySQL/MariaDB (PyMySQL).

``open_store(url)`` gives a :class:`SqlLogStore` (the app layer's LogStore port) on a migrated database.
"""

from consent_ledger.storage.engine import make_engine
from consent_ledger.storage.migration import current_revision, head_revision, migrate
from consent_ledger.storage.sql import MAX_READ_ENTRIES, BatchConflict, SqlLogStore, open_store

__all__ = [
    "MAX_READ_ENTRIES",
    "BatchConflict",
    "SqlLogStore",
    "current_revision",
    "head_revision",
    "make_engine",
    "migrate",
    "open_store",
]
