"""Shared fixtures. Fixture modules are imported here so that every test module can use them by name."""

from tests.ci_support import pytest_configure  # noqa: F401 - under CI, database tests must not skip
from tests.db_support import database_url, store  # noqa: F401
