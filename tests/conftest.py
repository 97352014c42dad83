"""Shared fixtures. Fixture modules are imported here so that every test module can use them by name."""

from tests.db_support import database_url, store  # noqa: F401
