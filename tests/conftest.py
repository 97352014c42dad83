"""Shared fixtures. Fixture modules are imported here so that every test module can use them by name."""

from tests.db_support import database_url, store  # noqa: F401

# Suite-wide rules: `slow` tests only with -m slow; under CI, database tests must not skip.
from tests.suite_support import pytest_collection_modifyitems, pytest_configure  # noqa: F401
